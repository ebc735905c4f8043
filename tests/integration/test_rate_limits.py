"""Rate limits (issue #12): the sliding window against real Redis, and each policy of the table over HTTP.

Each HTTP test shrinks the rows it exercises (the limiter's table, as RATE_LIMITS would set it) so the
(limit + 1)-th request is cheap to reach, then checks the refusal: 429, Retry-After, a friendly page or partial,
and nothing written by the refused request. The card-testing test keeps the shipped limit (5 per IP).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from html import unescape
from uuid import UUID

import httpx
import pytest
from litestar import Litestar
from sqlalchemy import func, select
from structlog.testing import capture_logs

from app.db import models as m
from app.domain.promotions.services import CANT_APPLY
from app.lib.ratelimit import MESSAGE, POLICIES, RateLimiter, configured_policies
from app.lib.runtime import Runtime
from app.lib.settings import Settings, parse_rate_limits
from tests.conftest import Factory, SetLimits
from tests.helpers import csrf_token, post_form, sign_in, text_of
from tests.integration.purchase_support import BILLING, add_to_cart, checkout_form, open_pay_page, place_order

pytestmark = pytest.mark.usefixtures("app_server")

IP = "203.0.113.7"  # the `client` fixture's address


def visible(html: str) -> str:
    return unescape(text_of(html))


@pytest.fixture
def client_from(app: Litestar) -> Callable[[str], httpx.AsyncClient]:
    """Another browser, from another address (the ASGI peer, as a direct connection would give)."""

    def make(ip: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app, client=(ip, 50000)), base_url="http://testserver.local"
        )

    return make


def assert_refused_page(response: httpx.Response) -> None:
    """A plain request: the full friendly page, 429 and Retry-After in whole seconds."""
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert "<html" in response.text
    assert MESSAGE in visible(response.text)
    assert "Please slow down a little" in visible(response.text)


def assert_refused_toast(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert "<html" not in response.text
    assert response.headers["hx-retarget"] == "#toasts"
    assert MESSAGE in visible(response.text)


async def count(runtime: Runtime, model: type[m.Base]) -> int:
    async with runtime.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model)) or 0)


# --- the window itself ------------------------------------------------------------------------------------------


async def test_sliding_window_against_real_redis(runtime: Runtime, settings: Settings) -> None:
    """Time is passed in, never slept: 3 per 60 s, refused requests are not counted, the window slides."""
    limiter = RateLimiter(runtime.redis, dataclasses.replace(settings, rate_limits=(("login_ip", 3, 60),)))
    t0 = 1_800_000_000.0
    for offset in (0, 10, 20):
        assert (await limiter.hit({"login_ip": IP}, now=t0 + offset)).allowed
    refused = await limiter.hit({"login_ip": IP}, now=t0 + 30)
    assert (refused.allowed, refused.retry_after, refused.policy) == (False, 30, "login_ip")
    # Hammering while refused changes nothing: the oldest request still leaves the window at t0 + 60.
    for offset in (31, 45, 59.5):
        assert not (await limiter.hit({"login_ip": IP}, now=t0 + offset)).allowed
    assert (await limiter.hit({"login_ip": IP}, now=t0 + 59.5)).retry_after == 1
    # A sliding window, not a fixed one: at t0 + 60 exactly one slot is free (the request made at t0 left).
    assert (await limiter.hit({"login_ip": IP}, now=t0 + 60)).allowed
    again = await limiter.hit({"login_ip": IP}, now=t0 + 61)
    assert (again.allowed, again.retry_after) == (False, 9)  # the request at t0 + 10 leaves at t0 + 70
    # Another address has a window of its own; keys hold no address in clear.
    assert (await limiter.hit({"login_ip": "198.51.100.1"}, now=t0 + 61)).allowed
    keys = [k.decode() for k in await runtime.redis.keys("cartwright:rl:*")]
    assert keys and all(IP not in k and "198.51.100.1" not in k for k in keys)


async def test_several_rows_are_checked_together_and_a_refusal_counts_in_none(
    runtime: Runtime, settings: Settings
) -> None:
    limiter = RateLimiter(
        runtime.redis,
        dataclasses.replace(settings, rate_limits=(("forgot_password_ip", 5, 600), ("forgot_password_email", 1, 600))),
    )
    t0 = 1_800_000_000.0
    both = {"forgot_password_ip": IP, "forgot_password_email": "a@example.com"}
    assert (await limiter.hit(both, now=t0)).allowed
    refused = await limiter.hit(both, now=t0 + 1)
    assert (refused.allowed, refused.policy, refused.retry_after) == (False, "forgot_password_email", 599)
    # The refused request was not counted against the IP row: four more for other addresses still pass.
    for n in range(4):
        assert (await limiter.hit({**both, "forgot_password_email": f"b{n}@example.com"}, now=t0 + 2)).allowed
    assert not (await limiter.hit({**both, "forgot_password_email": "c@example.com"}, now=t0 + 3)).allowed


async def test_switched_off_and_misconfigured(runtime: Runtime, settings: Settings) -> None:
    off = RateLimiter(runtime.redis, dataclasses.replace(settings, rate_limits_enabled=False))
    for _ in range(POLICIES["payment_intent_ip"].limit + 3):
        assert (await off.hit({"payment_intent_ip": IP})).allowed
    assert await runtime.redis.keys("cartwright:rl:*") == []
    assert parse_rate_limits(" login_ip=20/600, promo_apply_session=5/60 ") == (
        ("login_ip", 20, 600),
        ("promo_apply_session", 5, 60),
    )
    for bad in ("login_ip=20", "login_ip=0/60", "=5/60", "login_ip=x/60"):
        with pytest.raises(ValueError, match="RATE_LIMITS"):
            parse_rate_limits(bad)
    with pytest.raises(ValueError, match="unknown policy 'logn_ip'"):
        configured_policies(dataclasses.replace(settings, rate_limits=(("logn_ip", 5, 60),)))


# --- accounts ---------------------------------------------------------------------------------------------------


async def test_sign_in_per_ip(client: httpx.AsyncClient, factory: Factory, rate_limits: SetLimits) -> None:
    rate_limits(login_ip=(2, 600))
    user = await factory.user()
    await sign_in(client, user.email)
    await post_form(client, "/logout", {})
    wrong = await post_form(client, "/login", {"email": user.email, "password": "nope nope nope"})
    assert wrong.status_code == 422
    with capture_logs() as logs:
        refused = await post_form(client, "/login", {"email": user.email, "password": "correct horse battery"})
    assert_refused_page(refused)
    assert (await client.get("/account")).status_code == 303  # not signed in by the refused request
    htmx = await post_form(client, "/login", {"email": user.email, "password": "x"}, htmx=True)
    assert_refused_toast(htmx)
    hit = next(e for e in logs if e["event"] == "rate_limit.hit")
    assert (hit["policy"], hit["ip"], hit["path"], hit["account"]) == ("login_ip", IP, "/login", None)


async def test_register_per_ip(client: httpx.AsyncClient, runtime: Runtime, rate_limits: SetLimits) -> None:
    rate_limits(register_ip=(2, 3600))
    for n in range(2):
        client.cookies.clear()
        ok = await post_form(
            client, "/register", {"email": f"new{n}@example.com", "password": "correct horse battery", "name": "N"}
        )
        assert ok.status_code == 200, ok.text
    client.cookies.clear()
    refused = await post_form(
        client, "/register", {"email": "new3@example.com", "password": "correct horse battery", "name": "N"}
    )
    assert_refused_page(refused)
    assert await count(runtime, m.User) == 2


async def test_register_per_email_across_ips(
    client_from: Callable[[str], httpx.AsyncClient], factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    """No inbox bombing through sign-ups: each attempt on a taken address emails its owner, so the address has a
    limit of its own, whichever addresses the attempts come from."""
    rate_limits(register_email=(2, 3600), register_ip=(10, 3600))
    await factory.user(email="owner@example.com")
    form = {"email": "Owner@Example.com", "password": "correct horse battery", "name": "N"}
    for n in range(2):
        assert (await post_form(client_from(f"198.51.100.{n}"), "/register", form)).status_code == 200
    assert_refused_page(await post_form(client_from("198.51.100.9"), "/register", form))
    async with runtime.db() as db:
        sent = await db.scalar(
            select(func.count()).select_from(m.EmailMessage).where(m.EmailMessage.kind == "account_exists")
        )
    assert sent == 2


async def test_forgot_password_per_email_across_ips(
    client_from: Callable[[str], httpx.AsyncClient], factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    """No inbox bombing: the address's own limit holds whichever addresses the requests come from."""
    rate_limits(forgot_password_email=(2, 3600), forgot_password_ip=(10, 3600))
    user = await factory.user(email="victim@example.com")
    for n in range(2):
        async with client_from(f"198.51.100.{n + 1}") as browser:
            sent = await post_form(browser, "/forgot-password", {"email": "Victim@Example.com"}, htmx=True)
            assert sent.status_code == 200, sent.text
    async with client_from("198.51.100.9") as browser:
        refused = await post_form(browser, "/forgot-password", {"email": user.email})
        assert_refused_page(refused)
        # Another address from the same IP is still served.
        other = await post_form(browser, "/forgot-password", {"email": "someone@example.com"})
        assert other.status_code == 200
    assert await count(runtime, m.PasswordResetToken) == 2


async def test_respelling_an_address_does_not_open_a_new_bucket(
    client_from: Callable[[str], httpx.AsyncClient], factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    """The security review: the limit is keyed on the address as accounts are looked up (normalised), so
    full-width letters or other spellings of one address share its bucket."""
    rate_limits(forgot_password_email=(2, 3600), forgot_password_ip=(10, 3600))
    await factory.user(email="victim@example.com")
    spellings = ["victim@example.com", "victim@\uff45xample.com", "VICTIM@\uff45\uff58ample.com"]
    answers = []
    for n, spelling in enumerate(spellings):
        async with client_from(f"198.51.100.{n + 20}") as browser:
            answers.append(await post_form(browser, "/forgot-password", {"email": spelling}))
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert_refused_page(answers[2])
    assert await count(runtime, m.PasswordResetToken) == 2


async def test_forgot_password_per_ip(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    rate_limits(forgot_password_ip=(2, 3600))
    await factory.user(email="x3@example.com")
    for n in range(2):
        assert (await post_form(client, "/forgot-password", {"email": f"x{n}@example.com"})).status_code == 200
    assert_refused_toast(await post_form(client, "/forgot-password", {"email": "x3@example.com"}, htmx=True))
    assert await count(runtime, m.PasswordResetToken) == 0  # x3 exists, but the refused request sent nothing


async def test_password_change_per_account(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    rate_limits(password_change_account=(1, 900))
    user = await factory.user()
    await sign_in(client, user.email)
    await csrf_token(client, "/account/password")
    wrong = await post_form(
        client,
        "/account/password",
        {"current_password": "not it at all", "new_password": "n" * 12, "new_password_confirm": "n" * 12},
    )
    assert wrong.status_code == 422
    refused = await post_form(
        client,
        "/account/password",
        {
            "current_password": "correct horse battery",
            "new_password": "brand new password",
            "new_password_confirm": "brand new password",
        },
    )
    assert_refused_page(refused)
    async with runtime.db() as db:
        fresh = await db.get(m.User, user.id)
        assert fresh is not None and fresh.password_hash == user.password_hash


# --- promo codes (hole 9) ---------------------------------------------------------------------------------------


async def _apply(client: httpx.AsyncClient, code: str, *, htmx: bool = True) -> httpx.Response:
    return await post_form(client, "/cart/promo", {"code": code}, htmx=htmx)


async def test_promo_errors_do_not_tell_unknown_from_dead_codes(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    """Hole 9: "not a code" and "expired / used up / deactivated" gave different answers, so codes could be probed."""
    guide = await factory.product(price=2000)
    now = datetime.now(UTC)
    async with runtime.db() as db:
        db.add_all(
            [
                m.PromoCode(code="OLDCODE", percent_off_bps=1000, archived_at=now),
                m.PromoCode(code="PASTCODE", percent_off_bps=1000, expires_at=now - timedelta(days=1)),
                m.PromoCode(code="GONECODE", percent_off_bps=1000, max_redemptions=1, times_redeemed=1),
            ]
        )
        await db.commit()
    await add_to_cart(client, guide)
    await client.get("/cart")
    answers = {}
    for code in ("NOSUCHCODE", "OLDCODE", "PASTCODE", "GONECODE"):
        response = await _apply(client, code)
        assert response.status_code == 422
        # The same bytes for every one, once the code the shopper typed (echoed in the field) is taken out.
        answers[code] = re.sub(r'name="csrf_token" value="[^"]*"', "", response.text).replace(code, "CODE")
    assert len(set(answers.values())) == 1, "a dead code is told apart from one that never existed"
    assert CANT_APPLY in visible(answers["NOSUCHCODE"])


async def test_promo_apply_per_session_then_per_ip(
    client: httpx.AsyncClient,
    client_from: Callable[[str], httpx.AsyncClient],
    app: Litestar,
    factory: Factory,
    runtime: Runtime,
    rate_limits: SetLimits,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    rate_limits(promo_apply_session=(2, 600), promo_apply_ip=(3, 600))
    guide = await factory.product(price=2000)
    async with runtime.db() as db:
        db.add(m.PromoCode(code="REAL10", percent_off_bps=1000))
        await db.commit()
    await add_to_cart(client, guide)
    await client.get("/cart")
    for guess in ("AAA1", "AAA2"):
        assert (await _apply(client, guess)).status_code == 422
    # The third try in this session is refused, in place, even for the real code: nothing is stored.
    refused = await _apply(client, "REAL10")
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert "<html" not in refused.text and 'id="cart"' in refused.text
    assert MESSAGE in visible(refused.text)
    assert "applied" not in visible((await client.get("/cart")).text)
    # Without HTMX: the 429 page.
    assert_refused_page(await _apply(client, "REAL10", htmx=False))
    # A fresh session from the same address gets one more (the IP row: 3), then it is refused too.
    other = new_browser()
    await add_to_cart(other, guide)
    await other.get("/cart")
    assert (await _apply(other, "REAL10")).status_code == 200
    assert (await _apply(other, "REAL10")).status_code == 429
    # Another address is not affected.
    async with client_from("198.51.100.20") as third:
        await add_to_cart(third, guide)
        await third.get("/cart")
        assert (await _apply(third, "REAL10")).status_code == 200


# --- orders, payments (card testing) ----------------------------------------------------------------------------


async def test_place_order_per_ip(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    rate_limits(place_order_ip=(1, 600))
    guide = await factory.product(price=2000)
    await add_to_cart(client, guide)
    await place_order(client)
    token = await checkout_form(client)
    refused = await post_form(client, "/checkout", {**BILLING, "checkout_token": token})
    assert_refused_page(refused)
    assert await count(runtime, m.Order) == 1


async def test_the_sixth_payment_intent_from_one_ip_in_ten_minutes_is_refused(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    """Card testing: the shipped limit, 5 PaymentIntent creations per IP per 10 minutes; the 6th reaches no Stripe."""
    assert (POLICIES["payment_intent_ip"].limit, POLICIES["payment_intent_ip"].window) == (5, 600)
    guide = await factory.product(price=2000)
    await add_to_cart(client, guide)
    orders: list[UUID] = [await place_order(client, email=f"tester{n}@example.com") for n in range(6)]
    intents = [await open_pay_page(client, order_id) for order_id in orders[:5]]
    assert len(set(intents)) == 5
    # Reloading a pay page whose PaymentIntent exists creates nothing and is still served.
    assert await open_pay_page(client, orders[0]) == intents[0]
    refused = await client.get(f"/orders/{orders[5]}/pay")
    assert_refused_page(refused)
    async with runtime.db() as db:
        sixth = await db.get(m.Order, orders[5])
        assert sixth is not None and sixth.payment_intent_id is None
    assert await count(runtime, m.Payment) == 5
    listed = await runtime.stripe.v1.payment_intents.list_async({"limit": 100})
    assert {pi.id for pi in listed.data} >= set(intents)
    assert not any(pi.to_dict()["metadata"].get("order_id") == str(orders[5]) for pi in listed.data)


async def test_pay_page_per_order(client: httpx.AsyncClient, factory: Factory, rate_limits: SetLimits) -> None:
    rate_limits(pay_order=(2, 600))
    guide = await factory.product(price=2000)
    await add_to_cart(client, guide)
    order_id = await place_order(client)
    await open_pay_page(client, order_id)
    await open_pay_page(client, order_id)
    assert_refused_page(await client.get(f"/orders/{order_id}/pay"))


# --- downloads, the general ceiling -----------------------------------------------------------------------------


async def test_download_resend_per_ip(client: httpx.AsyncClient, runtime: Runtime, rate_limits: SetLimits) -> None:
    rate_limits(download_resend_ip=(1, 3600))
    await csrf_token(client, "/downloads/resend")
    assert (await post_form(client, "/downloads/resend", {"email": "a@example.com"})).status_code == 200
    assert_refused_page(await post_form(client, "/downloads/resend", {"email": "b@example.com"}))
    assert await count(runtime, m.EmailMessage) == 0


async def test_unsafe_requests_per_ip_spare_reads_webhooks_and_health(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    rate_limits(unsafe_ip=(3, 60))
    guide = await factory.product(price=2000)
    await sign_in(client, (await factory.user()).email)  # a signed-in cart lives in the database
    await add_to_cart(client, guide)
    await add_to_cart(client, guide)
    with capture_logs() as logs:
        refused = await post_form(client, f"/cart/items/{guide.id}", {"quantity": "5"})
        token_path = await post_form(client, "/reset-password/secret-token-value", {"password": "x"})
    assert_refused_page(refused)
    assert token_path.status_code == 429
    async with runtime.db() as db:
        assert await db.scalar(select(m.CartItem.quantity)) == 2  # the refused change was not made
    # Reads, Stripe's webhook and the health checks are outside the ceiling.
    assert (await client.get("/cart")).status_code == 200
    assert (await client.post("/webhooks/stripe", content=b"{}")).status_code != 429
    assert (await client.get("/healthz")).status_code == 200
    # Logged with the route, never the token in the path.
    assert [e["path"] for e in logs if e["event"] == "rate_limit.hit"] == [
        "/cart/items/{product_id}",
        "/reset-password/{token}",
    ]
    assert "secret-token-value" not in repr(logs)


async def test_membership_codes_and_new_memberships(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    """The subscribe step's ``?code=`` shares the promo rows; each new membership (a first-invoice PaymentIntent)
    counts in ``payment_intent_ip`` and a refused one reaches no Stripe call and writes no subscription."""
    from tests.integration.test_subscriptions import make_plan

    rate_limits(promo_apply_session=(1, 600), payment_intent_ip=(1, 600))
    await make_plan(runtime)
    await sign_in(client, (await factory.user()).email)
    assert "can't be applied" in visible((await client.get("/subscribe/resident?interval=month&code=nope")).text)
    refused = await client.get("/subscribe/resident?interval=month&code=nope2", headers={"HX-Request": "true"})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert 'id="subscribe-offer"' in refused.text and MESSAGE in visible(refused.text)
    page = await client.get("/subscribe/resident?interval=month")
    attempt = re.search(r'name="attempt" value="([^"]+)"', page.text)
    assert attempt
    form = {"interval": "month", "attempt": attempt.group(1), "via": "elements", "province": "AB"}
    assert (await post_form(client, "/subscribe/resident", form)).status_code == 303
    await post_form(client, "/account/subscription/cancel-now", {})
    assert_refused_page(await post_form(client, "/subscribe/resident", {**form, "attempt": "another"}))
    assert await count(runtime, m.Subscription) == 1


async def test_csp_reports_per_ip_and_outside_the_general_ceiling(
    client: httpx.AsyncClient, runtime: Runtime, rate_limits: SetLimits
) -> None:
    rate_limits(csp_report_ip=(2, 60), unsafe_ip=(1, 60))
    report = json.dumps({"csp-report": {"violated-directive": "img-src", "effective-directive": "img-src"}})
    headers = {"Content-Type": "application/csp-report"}
    # A page with many blocked images reports each: that must not use up the visitor's ceiling on form posts.
    answers = [(await client.post("/csp-report", content=report, headers=headers)).status_code for _ in range(3)]
    assert answers == [204, 204, 429]
    counted = await runtime.redis.hgetall("cartwright:csp:violations")
    assert {k.decode(): int(v) for k, v in counted.items()} == {"img-src": 2}  # the refused one was not counted
    guide = await Factory(runtime).product(price=2000)
    await csrf_token(client, "/cart")
    assert (await post_form(client, f"/cart/items/{guide.id}", {"quantity": "1"})).status_code != 429
