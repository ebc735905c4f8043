"""Membership sales tax: the orders' dated tax table (app/domain/tax/services.py) as Stripe Tax Rates.

Stripe computes a subscription invoice's tax from the Tax Rates attached to the subscription, so each component
of each province (GST, HST, PST, QST, RST) is one exclusive Tax Rate. ``TaxRateSync.ensure`` creates the ones
today's table needs and archives the ones it no longer does (a rate that changed is a new table row, so a new
Tax Rate; Stripe's percentages are immutable). Each carries our key in its metadata, so a lost link is found
again instead of duplicated, and every create has a deterministic idempotency key, so two runs at once create
one. The links are kept in ``stripe_tax_rates`` (upserted on the key).

The estimate shown before Stripe is asked (pricing page, subscribe step) uses the same table and the same
rounding as Stripe (per line and per rate, half-up), so it matches the invoice to the cent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import stripe
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from stripe.params import TaxRateCreateParams, TaxRateListParams

from app.db import models as m
from app.db.upsert import upsert
from app.domain.tax.services import PROVINCES, TaxRate, TaxResult, compute_tax, rates_for
from app.lib.stripe_gateway import as_dict, idempotency_key

log = structlog.get_logger()

COUNTRY = "CA"
METADATA_KEY = "cartwright_tax_key"
_TAX_TYPES = {"GST": "gst", "HST": "hst", "PST": "pst", "QST": "qst", "RST": "rst"}


def today() -> date:
    return datetime.now(UTC).date()


def valid_province(value: str | None) -> str | None:
    """The province code if ``value`` is one of ours (case-insensitive), else None."""
    code = (value or "").strip().upper()
    return code if code in PROVINCES else None


def tax_key(rate: TaxRate, province: str) -> str:
    """One table row applied in one province: "QST:CA-QC:0.09975:2013-01-01"."""
    return f"{rate.code}:{rate.country}-{province}:{rate.rate}:{rate.effective_from.isoformat()}"


def membership_tax(amount: int, province: str | None, on: date | None = None) -> TaxResult | None:
    """The tax Stripe will add to a membership invoice of ``amount`` billed to ``province`` (None: unknown)."""
    if valid_province(province) is None:
        return None
    return compute_tax([amount], country=COUNTRY, region=str(province), on=on or today())


@dataclass
class TaxSyncResult:
    created: int = 0
    archived: int = 0
    linked: int = 0  # found at Stripe by our metadata key (a lost link), not created


@dataclass(frozen=True, slots=True)
class _Wanted:
    key: str
    rate: TaxRate
    province: str


class TaxRateSync:
    """Makes Stripe's Tax Rates match the tax table. Idempotent and safe to run concurrently."""

    def __init__(self, db: AsyncSession, stripe_client: stripe.StripeClient) -> None:
        self.db = db
        self.stripe = stripe_client

    async def ensure(self, on: date | None = None) -> TaxSyncResult:
        """Create the Tax Rates that apply on ``on`` (today), re-link lost ones, archive the ones no longer in the
        table. Commits."""
        on = on or today()
        result = TaxSyncResult()
        wanted = {
            w.key: w
            for province in PROVINCES
            for rate in rates_for(COUNTRY, province, on)
            for w in [_Wanted(tax_key(rate, province), rate, province)]
        }
        remote = await self._ours_at_stripe()
        for key, want in wanted.items():
            found = remote.get(key)
            if found is not None and found["active"]:
                tax_rate_id = str(found["id"])
                stored = await self.db.scalar(
                    select(m.StripeTaxRate.stripe_tax_rate_id).where(m.StripeTaxRate.key == key)
                )
                if stored != tax_rate_id:
                    result.linked += 1
            else:
                # Never seen, or archived behind our back (an archived Tax Rate can't be attached to new
                # subscriptions, so a fresh one replaces it).
                replaces = str(found["id"]) if found is not None else ""
                params: TaxRateCreateParams = {
                    "display_name": want.rate.code,
                    "percentage": float(want.rate.rate * 100),
                    "inclusive": False,
                    "country": COUNTRY,
                    "state": want.province,
                    "jurisdiction": PROVINCES[want.province],
                    "tax_type": _TAX_TYPES[want.rate.code],
                    "description": f"{want.rate.label} ({PROVINCES[want.province]})",
                    "metadata": {METADATA_KEY: key},
                }
                created = await self.stripe.v1.tax_rates.create_async(
                    params, {"idempotency_key": idempotency_key("tax-rate", key, replaces)}
                )
                tax_rate_id = created.id
                result.created += 1
                log.info("tax_rates.created", key=key, tax_rate_id=tax_rate_id)
            await self._link(want, tax_rate_id, active=True)
        for key, found in remote.items():
            if key in wanted or not found["active"]:
                continue
            await self.stripe.v1.tax_rates.update_async(
                str(found["id"]),
                {"active": False},
                {"idempotency_key": idempotency_key("tax-rate-archive", found["id"])},
            )
            result.archived += 1
            log.info("tax_rates.archived", key=key, tax_rate_id=found["id"])
        # Rows of keys no longer wanted stay (the invoice mirror reads their labels) but are marked inactive.
        for row in await self.db.scalars(select(m.StripeTaxRate).where(m.StripeTaxRate.active.is_(True))):
            if row.key not in wanted:
                row.active = False
        await self.db.commit()
        return result

    async def _ours_at_stripe(self) -> dict[str, dict[str, Any]]:
        """Every Tax Rate at Stripe that carries our key, by key; an active one wins over archived duplicates."""
        found: dict[str, dict[str, Any]] = {}
        params: TaxRateListParams = {"limit": 100}
        while True:
            page = await self.stripe.v1.tax_rates.list_async(params)
            for obj in page.data:
                rate = as_dict(obj)
                key = (rate.get("metadata") or {}).get(METADATA_KEY)
                if key and (key not in found or (rate.get("active") and not found[key]["active"])):
                    found[key] = {"id": rate["id"], "active": bool(rate.get("active"))}
            if not page.has_more or not page.data:
                return found
            params["starting_after"] = page.data[-1].id

    async def _link(self, want: _Wanted, tax_rate_id: str, *, active: bool) -> None:
        values = {
            "key": want.key,
            "code": want.rate.code,
            "country": COUNTRY,
            "province": want.province,
            "rate": str(want.rate.rate),
            "stripe_tax_rate_id": tax_rate_id,
            "active": active,
        }
        await upsert(self.db, m.StripeTaxRate, "key", values, ["stripe_tax_rate_id", "active", "rate", "code"])


async def tax_rate_ids(db: AsyncSession, province: str, on: date | None = None) -> list[str]:
    """The Stripe Tax Rate ids for a membership billed to ``province`` (federal first), from the stored links.

    Empty if the province is unknown. Raises ``LookupError`` when a link is missing (run ``TaxRateSync.ensure``).
    """
    if valid_province(province) is None:
        return []
    keys = [tax_key(rate, province) for rate in rates_for(COUNTRY, province, on or today())]
    rows = {
        row.key: row.stripe_tax_rate_id
        for row in await db.scalars(select(m.StripeTaxRate).where(m.StripeTaxRate.key.in_(keys)))
    }
    missing = [key for key in keys if key not in rows]
    if missing:
        raise LookupError(f"no Stripe Tax Rate for {', '.join(missing)}")
    return [rows[key] for key in keys]


def _label(code: str, rate: Decimal) -> str:
    return f"{code} {(rate * 100).normalize():f}%"


async def invoice_taxes(
    db: AsyncSession, stripe_client: stripe.StripeClient, invoice: dict[str, Any]
) -> tuple[int, list[dict[str, Any]]]:
    """The tax on a Stripe invoice (or preview): its total and one ``{code, label, rate, amount}`` per Tax Rate, in
    the order Stripe lists them. Reads ``total_taxes`` (API 2025-03-31 on) or the older ``total_tax_amounts``;
    names come from our links, else from the Tax Rate itself (one someone attached in the Dashboard)."""
    amounts: dict[str, int] = {}
    for entry in invoice.get("total_taxes") or []:
        rate_id = ((entry.get("tax_rate_details") or {}).get("tax_rate")) or ""
        rate_id = rate_id if isinstance(rate_id, str) else str(rate_id.get("id") or "")
        amounts[rate_id] = amounts.get(rate_id, 0) + int(entry.get("amount") or 0)
    if not amounts:
        for entry in invoice.get("total_tax_amounts") or []:
            raw = entry.get("tax_rate") or ""
            rate_id = raw if isinstance(raw, str) else str(raw.get("id") or "")
            amounts[rate_id] = amounts.get(rate_id, 0) + int(entry.get("amount") or 0)
    if not amounts:
        return 0, []
    ours = {
        row.stripe_tax_rate_id: (row.code, Decimal(row.rate))
        for row in await db.scalars(
            select(m.StripeTaxRate).where(m.StripeTaxRate.stripe_tax_rate_id.in_(list(amounts)))
        )
    }
    breakdown: list[dict[str, Any]] = []
    for rate_id, amount in amounts.items():
        if rate_id in ours:
            code, rate = ours[rate_id]
        else:
            try:
                other = await stripe_client.v1.tax_rates.retrieve_async(rate_id)
                code, rate = str(other.display_name), Decimal(str(other.percentage)) / 100
            except stripe.StripeError:
                code, rate = "Tax", Decimal(0)
        breakdown.append(
            {"code": code, "label": _label(code, rate) if rate else code, "rate": str(rate), "amount": amount}
        )
    return sum(amounts.values()), breakdown
