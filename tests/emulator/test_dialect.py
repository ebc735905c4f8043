"""REST dialect: params, errors, auth, idempotency, pagination, expand, metadata, search."""

from __future__ import annotations

import httpx
import pytest
import stripe

from app.stripe_emulator.dialect import parse_form
from app.stripe_emulator.server import EmulatorServer
from tests.emulator.conftest import make_client


def test_parse_form_nested_arrays_and_appends() -> None:
    parsed = parse_form("a[b][0][c]=x&a[b][1][c]=y&expand[]=p&expand[]=q&flag=true&empty=")
    assert parsed == {"a": {"b": [{"c": "x"}, {"c": "y"}]}, "expand": ["p", "q"], "flag": "true", "empty": ""}


def test_unknown_parameter_rejected(sc: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        sc.v1.customers.create(params={"email": "a@example.com", "foo": "bar"})  # type: ignore[typeddict-unknown-key]
    assert info.value.code == "parameter_unknown"
    assert info.value.param == "foo"
    assert info.value.user_message == "Received unknown parameter: foo"
    assert info.value.http_status == 400


def test_unknown_nested_parameter_rejected(sc: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        sc.v1.prices.create(
            params={
                "currency": "usd",
                "unit_amount": 100,
                "product_data": {"name": "x"},
                "recurring": {"interval": "month", "bogus": 1},
            }
        )  # type: ignore[typeddict-unknown-key]
    assert info.value.param == "bogus" or "bogus" in str(info.value.param)


def test_missing_and_bad_keys_are_401(emulator: EmulatorServer) -> None:
    with pytest.raises(stripe.AuthenticationError) as info:
        make_client(emulator.url, key="sk_live_nope").v1.customers.list()
    assert info.value.http_status == 401
    response = httpx.get(f"{emulator.url}/v1/customers")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["Request-Id"].startswith("req_")


def test_publishable_key_limited_to_stripe_js_endpoints(emulator: EmulatorServer) -> None:
    with pytest.raises(stripe.AuthenticationError, match=r"cannot be made with a publishable API key"):
        make_client(emulator.url, key="pk_test_x").v1.customers.list()


def test_resource_missing_404(sc: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        sc.v1.customers.retrieve("cus_doesnotexist")
    assert info.value.http_status == 404
    assert info.value.code == "resource_missing"
    assert info.value.user_message == "No such customer: 'cus_doesnotexist'"


def test_ids_have_stripe_prefixes(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create()
    prod = sc.v1.products.create(params={"name": "Book"})
    price = sc.v1.prices.create(params={"product": prod.id, "unit_amount": 500, "currency": "usd"})
    pi = sc.v1.payment_intents.create(params={"amount": 500, "currency": "usd"})
    assert cus.id.startswith("cus_") and len(cus.id) == 18
    assert prod.id.startswith("prod_")
    assert price.id.startswith("price_")
    assert pi.id.startswith("pi_") and len(pi.id) == 27
    assert pi.client_secret is not None and pi.client_secret.startswith(f"{pi.id}_secret_")


def test_idempotent_replay_and_conflict(sc: stripe.StripeClient) -> None:
    first = sc.v1.customers.create(params={"email": "idem@example.com"}, options={"idempotency_key": "k-1"})
    again = sc.v1.customers.create(params={"email": "idem@example.com"}, options={"idempotency_key": "k-1"})
    assert again.id == first.id
    assert again.last_response is not None
    assert again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert len(sc.v1.customers.list().data) == 1
    with pytest.raises(stripe.IdempotencyError) as info:
        sc.v1.customers.create(params={"email": "other@example.com"}, options={"idempotency_key": "k-1"})
    assert info.value.http_status == 400
    # A request rejected by validation is not saved under its key; the corrected retry runs.
    with pytest.raises(stripe.InvalidRequestError, match=r"Received unknown parameter: bogus"):
        sc.v1.customers.create(params={"bogus": "1"}, options={"idempotency_key": "k-2"})  # type: ignore[typeddict-unknown-key]
    assert sc.v1.customers.create(options={"idempotency_key": "k-2"}).id != first.id


def test_idempotent_replay_of_a_decline(sc: stripe.StripeClient) -> None:
    params: stripe.params.PaymentIntentCreateParams = {
        "amount": 1000,
        "currency": "usd",
        "payment_method": "pm_card_chargeDeclined",
        "confirm": True,
    }
    with pytest.raises(stripe.CardError) as first:
        sc.v1.payment_intents.create(params=params, options={"idempotency_key": "dec-1"})
    with pytest.raises(stripe.CardError) as second:
        sc.v1.payment_intents.create(params=params, options={"idempotency_key": "dec-1"})
    assert first.value.error is not None and second.value.error is not None
    assert first.value.error.payment_intent is not None and second.value.error.payment_intent is not None
    assert first.value.error.payment_intent["id"] == second.value.error.payment_intent["id"]
    assert len(sc.v1.payment_intents.list().data) == 1


def test_pagination(sc: stripe.StripeClient) -> None:
    ids = [sc.v1.customers.create(params={"email": f"p{i}@example.com"}).id for i in range(25)]
    newest_first = list(reversed(ids))
    page = sc.v1.customers.list(params={"limit": 10})
    assert page.object == "list" and page.url == "/v1/customers"
    assert page.has_more is True
    assert [c.id for c in page.data] == newest_first[:10]
    page2 = sc.v1.customers.list(params={"limit": 10, "starting_after": page.data[-1].id})
    assert [c.id for c in page2.data] == newest_first[10:20]
    back = sc.v1.customers.list(params={"limit": 5, "ending_before": page2.data[0].id})
    assert [c.id for c in back.data] == newest_first[5:10]
    assert [c.id for c in sc.v1.customers.list(params={"limit": 7}).auto_paging_iter()] == newest_first
    assert len(sc.v1.customers.list().data) == 10
    with pytest.raises(stripe.InvalidRequestError, match=r"Invalid limit: must be between 1 and 100"):
        sc.v1.customers.list(params={"limit": 101})


def test_expand_including_list_paths(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"email": "x@example.com"})
    pi = sc.v1.payment_intents.create(
        params={
            "amount": 1500,
            "currency": "usd",
            "customer": cus.id,
            "payment_method": "pm_card_visa",
            "confirm": True,
            "expand": ["latest_charge", "customer"],
        }
    )
    assert isinstance(pi.latest_charge, stripe.Charge)
    assert isinstance(pi.customer, stripe.Customer) and pi.customer.email == "x@example.com"
    listed = sc.v1.payment_intents.list(params={"expand": ["data.latest_charge.payment_method"]})
    charge = listed.data[0].latest_charge
    assert isinstance(charge, stripe.Charge)
    assert isinstance(charge.payment_method, stripe.PaymentMethod)
    with pytest.raises(stripe.InvalidRequestError, match=r"This property cannot be expanded \(nope\)"):
        sc.v1.payment_intents.retrieve(pi.id, params={"expand": ["nope"]})


def test_metadata_set_and_unset(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"metadata": {"a": "1", "b": "2"}})
    cus = sc.v1.customers.update(cus.id, params={"metadata": {"a": "", "c": "3"}})
    assert cus.metadata.to_dict() == {"b": "2", "c": "3"}
    cus = sc.v1.customers.update(cus.id, params={"metadata": ""})  # type: ignore[typeddict-item]
    assert cus.metadata.to_dict() == {}


def test_empty_string_unsets_field(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"name": "Ada", "description": "vip"})
    cus = sc.v1.customers.update(cus.id, params={"description": ""})
    assert cus.description is None and cus.name == "Ada"


def test_customer_search(sc: stripe.StripeClient) -> None:
    sc.v1.customers.create(params={"email": "ada@example.com", "metadata": {"user_id": "7"}})
    sc.v1.customers.create(params={"email": "bob@example.com", "metadata": {"user_id": "8"}})
    by_email = sc.v1.customers.search(params={"query": "email:'ada@example.com'"})
    assert [c.email for c in by_email.data] == ["ada@example.com"]
    by_meta = sc.v1.customers.search(params={"query": "metadata['user_id']:'8'"})
    assert [c.email for c in by_meta.data] == ["bob@example.com"]
    both = sc.v1.customers.search(params={"query": "metadata['user_id']:'8' OR email:'ada@example.com'"})
    assert len(both.data) == 2


def test_customer_crud(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"email": "c@example.com", "name": "C"})
    assert sc.v1.customers.retrieve(cus.id).name == "C"
    deleted = sc.v1.customers.delete(cus.id)
    assert deleted.deleted is True
    with pytest.raises(stripe.InvalidRequestError, match=r"No such customer: 'cus_"):
        sc.v1.customers.retrieve(cus.id)


def test_prices_filters_and_lookup_keys(sc: stripe.StripeClient) -> None:
    prod = sc.v1.products.create(params={"name": "Plan"})
    one = sc.v1.prices.create(params={"product": prod.id, "unit_amount": 900, "currency": "usd", "lookup_key": "book"})
    monthly = sc.v1.prices.create(
        params={
            "product": prod.id,
            "unit_amount": 500,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "lookup_key": "monthly",
        }
    )
    sc.v1.prices.update(one.id, params={"active": False})
    assert monthly.type == "recurring" and monthly.recurring is not None and monthly.recurring.interval == "month"
    assert one.type == "one_time"
    assert [p.id for p in sc.v1.prices.list(params={"type": "recurring"}).data] == [monthly.id]
    assert [p.id for p in sc.v1.prices.list(params={"active": True, "product": prod.id}).data] == [monthly.id]
    assert [p.id for p in sc.v1.prices.list(params={"lookup_keys": ["book"]}).data] == [one.id]
    with pytest.raises(stripe.InvalidRequestError, match=r"already uses that lookup key"):
        sc.v1.prices.create(params={"product": prod.id, "unit_amount": 1, "currency": "usd", "lookup_key": "book"})


async def test_async_client_round_trip(asc: stripe.StripeClient) -> None:
    cus = await asc.v1.customers.create_async(params={"email": "async@example.com"})
    fetched = await asc.v1.customers.retrieve_async(cus.id)
    assert fetched.email == "async@example.com"
    with pytest.raises(stripe.InvalidRequestError) as info:
        await asc.v1.customers.create_async(params={"bogus": "1"})  # type: ignore[typeddict-unknown-key]
    assert info.value.code == "parameter_unknown"
