"""Bulk history for scale tests: ``POST /_emulator/seed_history`` fills the state with N customers, each with a
subscription, its paid invoices, one-off PaymentIntents with their charges, and some refunds, in one go.

Faithful by construction: one of each object is made through the real API handlers (so it has exactly the
shape the API returns), then cloned with fresh ids, cross-references rewritten and ``created`` spread over the
past. Nothing is delivered: no webhooks, no events for the clones (a history predates the webhook endpoint).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from typing import Any

from app.stripe_emulator.errors import StripeError
from app.stripe_emulator.ids import new_id

_HEADERS = {"authorization": "Bearer sk_test_history", "content-type": "application/x-www-form-urlencoded"}


@dataclass(frozen=True)
class HistorySpec:
    customers: int = 100
    invoices_per_customer: int = 2
    payment_intents_per_customer: int = 1
    refund_every: int = 5  # every Nth one-off charge gets a partial refund (0: none)
    email_prefix: str = "history"
    start: int = 0  # `created` of the first customer (default: customers spread over the last year)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HistorySpec:
        allowed = set(cls.__dataclass_fields__)
        unknown = set(data) - allowed
        if unknown:
            raise StripeError(f"Received unknown parameter: {sorted(unknown)[0]}", code="parameter_unknown")
        values: dict[str, Any] = {k: (str(v) if k == "email_prefix" else int(v)) for k, v in data.items()}
        spec = cls(**values)
        if spec.customers < 0 or spec.invoices_per_customer < 1 or spec.payment_intents_per_customer < 0:
            raise StripeError("customers >= 0, invoices_per_customer >= 1, payment_intents_per_customer >= 0.")
        return spec


def _call(rt: Any, method: str, path: str, body: str = "") -> dict[str, Any]:
    # The runtime's own dispatcher, minus delivery: the template objects' events are never sent.
    status, payload, _ = rt._dispatch(method, path, "", body.encode(), _HEADERS, "", "req_history", [])
    if status >= 400:
        raise StripeError(f"seed_history could not build its template ({path}): {payload['error']['message']}")
    result: dict[str, Any] = payload
    return result


def _templates(rt: Any, prefix: str) -> dict[str, dict[str, Any]]:
    customer = _call(rt, "POST", "/v1/customers", f"email={prefix}-template@example.test&name=Template")
    card = _call(rt, "POST", "/v1/payment_methods/pm_card_visa/attach", f"customer={customer['id']}")["id"]
    product = _call(rt, "POST", "/v1/products", "name=History plan")
    price = _call(
        rt, "POST", "/v1/prices", f"product={product['id']}&unit_amount=1500&currency=cad&recurring[interval]=month"
    )
    sub = _call(
        rt,
        "POST",
        "/v1/subscriptions",
        f"customer={customer['id']}&items[0][price]={price['id']}&default_payment_method={card}",
    )
    invoice = rt.state.get("invoice", sub["latest_invoice"])
    intent = _call(
        rt,
        "POST",
        "/v1/payment_intents",
        f"amount=2000&currency=cad&customer={customer['id']}&payment_method={card}&confirm=true"
        "&payment_method_types[0]=card",
    )
    charge = copy.deepcopy(rt.state.get("charge", intent["latest_charge"]))  # as it was before its refund
    refund = _call(rt, "POST", "/v1/refunds", f"payment_intent={intent['id']}&amount=500")
    return {
        "customer": rt.state.get("customer", customer["id"]),
        "subscription": rt.state.get("subscription", sub["id"]),
        "invoice": invoice,
        "payment_intent": rt.state.get("payment_intent", intent["id"]),
        "charge": charge,
        "refund": rt.state.get("refund", refund["id"]),
    }


class _Cloner:
    """Clones template objects as JSON text with every template id replaced by the clone's."""

    def __init__(self, template: dict[str, Any]) -> None:
        self.text = json.dumps(template)

    def make(self, mapping: dict[str, str], fields: dict[str, Any]) -> dict[str, Any]:
        text = self.text
        for old, new in mapping.items():
            text = text.replace(old, new)
        obj: dict[str, Any] = json.loads(text)
        obj.update(fields)
        return obj


def seed_history(rt: Any, spec: HistorySpec) -> dict[str, int]:
    """Add the history to ``rt.state`` (caller holds the state lock). Returns how many objects of each type."""
    t = _templates(rt, spec.email_prefix)
    ids = {kind: obj["id"] for kind, obj in t.items()}
    item_id = t["subscription"]["items"]["data"][0]["id"]
    line_ids = [line["id"] for line in t["invoice"]["lines"]["data"]]
    clone = {kind: _Cloner(obj) for kind, obj in t.items()}
    counts = dict.fromkeys(("customer", "subscription", "invoice", "payment_intent", "charge", "refund"), 0)
    now = int(time.time())
    start = spec.start or now - 365 * 24 * 3600
    step = max(1, (now - 3600 - start) // max(spec.customers, 1))
    email = t["customer"]["email"]
    put = rt.state.put
    charge_no = 0
    for n in range(spec.customers):
        created = start + n * step
        cus_id = new_id("cus")
        sub_id = new_id("sub")
        base = {ids["customer"]: cus_id, email: f"{spec.email_prefix}{n}@example.test"}
        put(clone["customer"].make(base, {"created": created, "name": f"History customer {n}"}))
        invoice_ids = [new_id("in") for _ in range(spec.invoices_per_customer)]
        sub_map = {**base, ids["subscription"]: sub_id, item_id: new_id("si"), ids["invoice"]: invoice_ids[-1]}
        put(clone["subscription"].make(sub_map, {"created": created}))
        for k, invoice_id in enumerate(invoice_ids):
            inv_map = {**sub_map, ids["invoice"]: invoice_id, **{lid: new_id("il") for lid in line_ids}}
            put(clone["invoice"].make(inv_map, {"created": created + k, "number": f"H{n:06d}-{k + 1:04d}"}))
            counts["invoice"] += 1
        for k in range(spec.payment_intents_per_customer):
            charge_no += 1
            pi_id, ch_id = new_id("pi"), new_id("ch")
            pay_map = {**base, ids["payment_intent"]: pi_id, ids["charge"]: ch_id}
            refunded = bool(spec.refund_every) and charge_no % spec.refund_every == 0
            put(clone["payment_intent"].make(pay_map, {"created": created + k + 1}))
            charge = put(clone["charge"].make(pay_map, {"created": created + k + 1}))
            counts["payment_intent"] += 1
            counts["charge"] += 1
            if refunded:
                refund = put(
                    clone["refund"].make({**pay_map, ids["refund"]: new_id("re")}, {"created": created + k + 2})
                )
                charge["amount_refunded"] = refund["amount"]
                if isinstance(charge.get("refunds"), dict):
                    charge["refunds"]["data"] = [copy.deepcopy(refund)]
                counts["refund"] += 1
        counts["customer"] += 1
        counts["subscription"] += 1
    return counts
