"""The dashboard's figures: indexed SQL aggregates over one date range and the one before it, in the shop's
currency (CAD), trimmed to what the viewer's analytics access allows, cached in Redis.

Definitions (also in docs/analytics.md):

* **Gross revenue**: totals (tax included, what customers paid) of CAD orders paid in the range (``paid_at``).
  **Refunds**: CAD refunds created in the range (succeeded or pending, as Stripe counts them).
  **Disputes**: CAD disputes (chargebacks) opened in the range and their amount (**Disputed**); **Lost to
  disputes**: the amounts of disputes lost in the range (closed then), money gone back to the cardholder.
  **Net revenue** = gross - refunds - lost to disputes. **Orders**: orders paid in the range.
  **Average order value** = gross / orders.
  **Stripe fees**: the processing fees on those orders' charges (from their balance transactions; Stripe keeps
  them on refunds). **Net after fees** = net revenue - Stripe fees.
* **New customers**: customer accounts created in the range.
* **Payment success rate**: of the PaymentIntents (one per order, a ``payments`` row) first seen in the range and
  that reached an outcome (succeeded, failed, requires_action, canceled), the share that succeeded. A decline
  followed by a successful retry counts once, as a success; intents still processing are left out.
* **Refund rate**: refunds / gross revenue of the range.
* **MRR** (see movements.py) at the end of the range, **ARR** = 12 x MRR, **paying subscribers** (MRR > 0);
  new / expansion / contraction / churned / reactivation MRR: sums of the range's movements;
  **churn rate**: customers churned in the range / paying subscribers at its start;
  **trial conversion**: trials that ended in the range (and before now) that have a paid, non-zero invoice.
* **Credits used**: credits spent on bookings in the range, less those given back by cancellations.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import case, exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.analytics import cache
from app.domain.analytics.feed import movement_item, order_item, refund_item
from app.domain.analytics.ranges import DateRange
from app.domain.analytics.sql import as_date, day_bucket
from app.lib.permissions import Access
from app.lib.templating import get_environment

SHOP_CURRENCY = "CAD"
PAYMENT_OUTCOMES = ("succeeded", "failed", "requires_action", "canceled")
FEED_SIZE = 20

# key, label, format (money | count | percent), higher is better, a money figure (hidden from LIMITED access)
KPIS: dict[str, list[tuple[str, str, str, bool, bool]]] = {
    "Sales": [
        ("gross", "Gross revenue", "money", True, True),
        ("net", "Net revenue", "money", True, True),
        ("fees", "Stripe fees", "money", False, True),
        ("net_after_fees", "Net after fees", "money", True, True),
        ("orders", "Orders", "count", True, False),
        ("aov", "Average order value", "money", True, True),
        ("new_customers", "New customers", "count", True, False),
        ("success_rate", "Payment success rate", "percent", True, False),
        ("refund_rate", "Refund rate", "percent", False, False),
        ("disputes", "Disputes", "count", False, False),
        ("disputed_amount", "Disputed", "money", False, True),
        ("dispute_losses", "Lost to disputes", "money", False, True),
    ],
    "Subscriptions": [
        ("mrr", "MRR", "money", True, True),
        ("arr", "ARR", "money", True, True),
        ("subscribers", "Paying subscribers", "count", True, False),
        ("new_mrr", "New MRR", "money", True, True),
        ("expansion_mrr", "Expansion MRR", "money", True, True),
        ("contraction_mrr", "Contraction MRR", "money", False, True),
        ("churned_mrr", "Churned MRR", "money", False, True),
        ("churn_rate", "Churn rate", "percent", False, False),
        ("trial_conversion", "Trial conversion", "percent", True, False),
    ],
    "Members": [("credits_used", "Credits used", "count", True, False)],
}
MONEY_KEYS = frozenset(
    {key for group in KPIS.values() for key, *_rest, money in group if money}
    | {"refunds", "reactivation_mrr", "revenue_chart", "mrr_chart"}
)


def _ratio(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class AnalyticsService:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db
        self.dialect = db.get_bind().dialect.name

    # --- figures for one range ------------------------------------------------------------------------------

    async def figures(self, r: DateRange) -> dict[str, Any]:
        """Every figure of the range, money included (callers trim for limited access)."""
        a, b = r.start_at, r.end_at
        o = m.Order
        paid = (o.paid_at >= a, o.paid_at < b)
        orders, gross = (
            await self.db.execute(
                select(func.count(), func.coalesce(func.sum(o.total), 0)).where(*paid, o.currency == SHOP_CURRENCY)
            )
        ).one()
        other_currency = await self.db.scalar(select(func.count()).where(*paid, o.currency != SHOP_CURRENCY))
        fees = await self.db.scalar(
            select(func.coalesce(func.sum(m.Payment.fee), 0))
            .join(o, o.id == m.Payment.order_id)
            .where(*paid, o.currency == SHOP_CURRENCY)
        )
        refunds = await self.db.scalar(
            select(func.coalesce(func.sum(m.Refund.amount), 0)).where(
                m.Refund.created_at >= a,
                m.Refund.created_at < b,
                m.Refund.currency == SHOP_CURRENCY,
                m.Refund.status.in_(m.Refund.COUNTED_STATUSES),
            )
        )
        d = m.Dispute
        disputes, disputed = (
            await self.db.execute(
                select(func.count(), func.coalesce(func.sum(d.amount), 0)).where(
                    d.opened_at >= a, d.opened_at < b, d.currency == SHOP_CURRENCY, d.status != ""
                )
            )
        ).one()
        lost = await self.db.scalar(
            select(func.coalesce(func.sum(d.amount), 0)).where(
                d.status == "lost", d.closed_at >= a, d.closed_at < b, d.currency == SHOP_CURRENCY
            )
        )
        new_customers = await self.db.scalar(
            select(func.count()).where(m.User.created_at >= a, m.User.created_at < b, m.User.role == "customer")
        )
        outcomes: dict[str, int] = {
            str(status): int(count)
            for status, count in (
                await self.db.execute(
                    select(m.Payment.status, func.count())
                    .where(m.Payment.created_at >= a, m.Payment.created_at < b, m.Payment.status.in_(PAYMENT_OUTCOMES))
                    .group_by(m.Payment.status)
                )
            )
        }
        credits = await self.db.scalar(
            select(func.coalesce(func.sum(m.CreditEntry.amount), 0)).where(
                m.CreditEntry.kind.in_([m.CreditEntryKind.USAGE.value, m.CreditEntryKind.REFUND.value]),
                m.CreditEntry.created_at >= a,
                m.CreditEntry.created_at < b,
            )
        )
        gross, refunds, orders, lost = int(gross), int(refunds or 0), int(orders), int(lost or 0)
        attempted = sum(int(v) for v in outcomes.values())
        figures: dict[str, Any] = {
            "gross": gross,
            "refunds": refunds,
            "net": gross - refunds - lost,
            "fees": int(fees or 0),
            "net_after_fees": gross - refunds - lost - int(fees or 0),
            "orders": orders,
            "aov": gross // orders if orders else None,
            "new_customers": int(new_customers or 0),
            "payments_attempted": attempted,
            "payments_succeeded": int(outcomes.get("succeeded", 0)),
            "success_rate": _ratio(int(outcomes.get("succeeded", 0)), attempted),
            "refund_rate": _ratio(refunds, gross),
            "disputes": int(disputes),
            "disputed_amount": int(disputed),
            "dispute_losses": lost,
            "credits_used": -int(credits or 0),
            "other_currency_orders": int(other_currency or 0),
        }
        figures.update(await self._subscription_figures(r))
        return figures

    async def _mrr_at(self, at: datetime) -> tuple[int, int]:
        """(MRR, paying subscribers) at an instant, from the movements."""
        mv = m.MrrMovement
        heads = case(
            (mv.kind.in_([m.MovementKind.NEW.value, m.MovementKind.REACTIVATION.value]), 1),
            (mv.kind == m.MovementKind.CHURN.value, -1),
            else_=0,
        )
        mrr, subscribers = (
            await self.db.execute(
                select(func.coalesce(func.sum(mv.mrr_delta), 0), func.coalesce(func.sum(heads), 0)).where(
                    mv.occurred_at < at, mv.currency == SHOP_CURRENCY
                )
            )
        ).one()
        return int(mrr), int(subscribers)

    async def _subscription_figures(self, r: DateRange) -> dict[str, Any]:
        a, b = r.start_at, r.end_at
        mv = m.MrrMovement
        mrr, subscribers = await self._mrr_at(b)
        _, subscribers_at_start = await self._mrr_at(a)
        sums: dict[str, tuple[int, int]] = {
            kind: (int(delta), int(count))
            for kind, delta, count in await self.db.execute(
                select(mv.kind, func.sum(mv.mrr_delta), func.count())
                .where(mv.occurred_at >= a, mv.occurred_at < b, mv.currency == SHOP_CURRENCY)
                .group_by(mv.kind)
            )
        }
        now = datetime.now(UTC)
        s = m.Subscription
        converted = exists().where(
            m.Invoice.subscription_id == s.id, m.Invoice.status == "paid", m.Invoice.amount_paid > 0
        )
        trials, conversions = (
            await self.db.execute(
                select(func.count(), func.coalesce(func.sum(case((converted, 1), else_=0)), 0)).where(
                    s.trial_end >= a, s.trial_end < min(b, now)
                )
            )
        ).one()
        churned_customers = sums.get(m.MovementKind.CHURN.value, (0, 0))[1]
        return {
            "mrr": mrr,
            "arr": mrr * 12,
            "subscribers": subscribers,
            "subscribers_at_start": subscribers_at_start,
            "new_mrr": sums.get("new", (0, 0))[0],
            "reactivation_mrr": sums.get("reactivation", (0, 0))[0],
            "expansion_mrr": sums.get("expansion", (0, 0))[0],
            "contraction_mrr": -sums.get("contraction", (0, 0))[0],
            "churned_mrr": -sums.get("churn", (0, 0))[0],
            "churned_customers": churned_customers,
            "churn_rate": _ratio(churned_customers, subscribers_at_start),
            "trials_ended": int(trials),
            "trials_converted": int(conversions),
            "trial_conversion": _ratio(int(conversions), int(trials)),
        }

    # --- charts -----------------------------------------------------------------------------------------------

    async def revenue_per_day(self, r: DateRange) -> list[dict[str, Any]]:
        o = m.Order
        bucket = day_bucket(o.paid_at, self.dialect)
        rows = await self.db.execute(
            select(bucket, func.count(), func.sum(o.total))
            .where(o.paid_at >= r.start_at, o.paid_at < r.end_at, o.currency == SHOP_CURRENCY)
            .group_by(bucket)
        )
        by_day = {as_date(day).isoformat(): (int(count), int(total or 0)) for day, count, total in rows}
        return [
            {
                "day": d.isoformat(),
                "orders": by_day.get(d.isoformat(), (0, 0))[0],
                "gross": by_day.get(d.isoformat(), (0, 0))[1],
            }
            for d in r.each_day()
        ]

    async def mrr_movements_per_day(self, r: DateRange) -> list[dict[str, Any]]:
        mv = m.MrrMovement
        bucket = day_bucket(mv.occurred_at, self.dialect)
        rows = await self.db.execute(
            select(bucket, mv.kind, func.sum(mv.mrr_delta))
            .where(mv.occurred_at >= r.start_at, mv.occurred_at < r.end_at, mv.currency == SHOP_CURRENCY)
            .group_by(bucket, mv.kind)
        )
        by_day: dict[str, dict[str, int]] = defaultdict(dict)
        for day, kind, delta in rows:
            by_day[as_date(day).isoformat()][str(kind)] = int(delta or 0)
        kinds = [k.value for k in m.MovementKind]
        return [{"day": d.isoformat(), **{k: by_day[d.isoformat()].get(k, 0) for k in kinds}} for d in r.each_day()]

    async def top_products(self, r: DateRange, limit: int = 8) -> list[dict[str, Any]]:
        line, o = m.OrderLine, m.Order
        revenue = func.sum(line.subtotal - line.discount)  # before tax, after a promo code's share
        rows = await self.db.execute(
            select(func.max(line.product_name), func.sum(line.quantity), revenue)
            .join(o, o.id == line.order_id)
            .where(o.paid_at >= r.start_at, o.paid_at < r.end_at, o.currency == SHOP_CURRENCY)
            .group_by(line.product_slug)
            .order_by(revenue.desc(), func.max(line.product_name))
            .limit(limit)
        )
        return [{"name": name, "units": int(units), "revenue": int(total)} for name, units, total in rows]

    # --- activity feed -------------------------------------------------------------------------------------

    async def recent_activity(self, limit: int = FEED_SIZE) -> list[dict[str, Any]]:
        """Newest first: orders paid, refunds, MRR movements (the same items the live feed pushes)."""
        items: list[dict[str, Any]] = []
        for order in await self.db.scalars(
            select(m.Order).where(m.Order.paid_at.is_not(None)).order_by(m.Order.paid_at.desc()).limit(limit)
        ):
            items.append(order_item(order))
        refunds = await self.db.execute(
            select(m.Refund, m.Order.number)
            .join(m.Order, m.Order.id == m.Refund.order_id)
            .where(m.Refund.status.in_(m.Refund.COUNTED_STATUSES))
            .order_by(m.Refund.created_at.desc())
            .limit(limit)
        )
        items.extend(refund_item(refund, number) for refund, number in refunds)
        moves = await self.db.execute(
            select(m.MrrMovement, m.User.email)
            .join(m.User, m.User.id == m.MrrMovement.user_id)
            .order_by(m.MrrMovement.occurred_at.desc())
            .limit(limit)
        )
        items.extend(
            movement_item(move.kind, move.mrr_delta, move.currency, email, move.occurred_at) for move, email in moves
        )
        items.sort(key=lambda item: item["at"], reverse=True)
        return items[:limit]

    # --- the dashboard --------------------------------------------------------------------------------------

    async def dashboard(self, r: DateRange, access: Access) -> dict[str, Any]:
        """Everything the dashboard shows for ``r``, computed from scratch. LIMITED access gets no money."""
        full = access >= Access.FULL
        current, previous = await self.figures(r), await self.figures(r.previous())
        groups = []
        for title, kpis in KPIS.items():
            cards = []
            for key, label, fmt, higher_is_better, money in kpis:
                if money and not full:
                    continue
                cards.append(kpi_card(key, label, fmt, higher_is_better, current.get(key), previous.get(key)))
            groups.append({"title": title, "kpis": cards})
        result: dict[str, Any] = {
            "range": {"start": r.start.isoformat(), "last": r.last_day.isoformat(), "label": r.label, "days": r.days},
            "previous": {"start": r.previous().start.isoformat(), "last": r.previous().last_day.isoformat()},
            "currency": SHOP_CURRENCY,
            "money": full,
            "figures": current,
            "previous_figures": previous,
            "groups": groups,
            "orders_chart": [],
            "revenue_chart": [],
            "mrr_chart": [],
            "top_products": await self.top_products(r),
            "feed": await self.recent_activity(),
        }
        per_day = await self.revenue_per_day(r)
        if full:
            result["revenue_chart"] = per_day
            result["mrr_chart"] = await self.mrr_movements_per_day(r)
        else:
            result["orders_chart"] = [{"day": d["day"], "orders": d["orders"]} for d in per_day]
        return trim(result, access)


def trim(result: dict[str, Any], access: Access) -> dict[str, Any]:
    """Drop every money figure for access below FULL (the template checks again; this is the one that counts)."""
    if access >= Access.FULL:
        return result
    for name in ("figures", "previous_figures"):
        result[name] = {k: v for k, v in result[name].items() if k not in MONEY_KEYS}
    result["top_products"] = [{"name": p["name"], "units": p["units"]} for p in result["top_products"]]
    result["top_products"].sort(key=lambda p: (-p["units"], p["name"]))
    result["feed"] = [{k: v for k, v in item.items() if k != "amount"} for item in result["feed"]]
    return result


def kpi_card(key: str, label: str, fmt: str, higher_is_better: bool, value: Any, previous: Any) -> dict[str, Any]:
    delta = value - previous if isinstance(value, int | float) and isinstance(previous, int | float) else None
    direction = "flat" if not delta else ("up" if delta > 0 else "down")
    return {
        "key": key,
        "label": label,
        "format": fmt,
        "value": value,
        "previous": previous,
        "delta": delta,
        "delta_pct": (delta / previous) if delta is not None and previous and fmt != "percent" else None,
        "direction": direction,
        "good": direction == "flat" or (direction == "up") == higher_is_better,
    }


async def dashboard_data(db: AsyncSession, redis: Redis, r: DateRange, access: Access) -> dict[str, Any]:
    """The dashboard for ``r`` from the cache (per range and access level), computed on a miss.

    The charts are cached as rendered HTML too: drawing a few hundred SVG bars is most of a warm page's work.
    """
    level = "full" if access >= Access.FULL else "limited"

    async def compute() -> dict[str, Any]:
        result = await AnalyticsService(db).dashboard(r, access)
        result["charts_html"] = get_environment().get_template("admin/_charts.html.j2").render(data=result)
        return result

    data: dict[str, Any] = await cache.cached(redis, ("dashboard", level, r.key), compute)
    return data
