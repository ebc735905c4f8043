"""`cartwright plans sync`: create or repair the plans' Products and Prices in Stripe (or the emulator)."""

from __future__ import annotations

import asyncio

import click


@click.group(name="plans", help="Membership plans.")
def plans_group() -> None:
    """Membership plans."""


@plans_group.command(
    name="sync",
    help="Create missing Stripe Products/Prices for the plans and archive old Prices; keep the membership Tax Rates "
    "in line with the sales-tax table.",
)
@click.option("--slug", default=None, help="Only this plan.")
def sync_command(slug: str | None) -> None:
    from sqlalchemy import select

    from app.db import models as m
    from app.domain.plans.stripe_sync import PlanStripeSync
    from app.domain.plans.tax_rates import TaxRateSync
    from app.domain.subscriptions.services import SubscriptionService
    from app.lib.runtime import Runtime
    from app.lib.settings import get_settings

    async def run() -> None:
        runtime = Runtime(get_settings())
        try:
            async with runtime.db() as db:
                stmt = select(m.Plan).order_by(m.Plan.position, m.Plan.name)
                if slug is not None:
                    stmt = stmt.where(m.Plan.slug == slug)
                plans = list((await db.scalars(stmt)).unique())
                if slug is not None and not plans:
                    click.echo(f"No plan with slug {slug!r}.", err=True)
                    raise SystemExit(1)
                taxes = await TaxRateSync(db, runtime.stripe).ensure()
                click.echo(f"Tax rates: {taxes.created} created, {taxes.archived} archived, {taxes.linked} re-linked")
                if taxes.archived:  # a rate changed: the members' subscriptions take the new one from next invoice
                    retaxed = await SubscriptionService(db, runtime.stripe).apply_current_tax_rates()
                    click.echo(f"Subscriptions moved to the new tax rates: {retaxed}")
                sync = PlanStripeSync(db, runtime.stripe)
                for plan in plans:
                    result = await sync.ensure(plan)
                    click.echo(
                        f"{plan.name}: product {plan.stripe_product_id}, {result.prices_created} prices created, "
                        f"{result.prices_archived} archived"
                        + (f", {result.relinked} re-created (unknown to Stripe)" if result.relinked else "")
                    )
        finally:
            await runtime.close()

    asyncio.run(run())
