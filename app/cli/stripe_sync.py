"""`cartwright stripe sync`: the full re-sync, run in this process with a progress line on stderr (for cron)."""

from __future__ import annotations

import asyncio
import sys

import click


@click.group(name="stripe", help="Stripe data.")
def stripe_group() -> None:
    """Stripe data."""


@stripe_group.command(name="sync", help="Page through all Stripe data, mirror it and repair local state.")
@click.option("--since", default=None, help="Only objects created on or after this date (YYYY-MM-DD).")
@click.option(
    "--only",
    default=None,
    help="Comma-separated resources: customers,products,prices,subscriptions,invoices,payment_intents,charges,refunds.",
)
@click.option("--no-resume", is_flag=True, help="Start from the first page even if the last run was interrupted.")
def sync_command(since: str | None, only: str | None, no_resume: bool) -> None:
    from app.db import models as m
    from app.domain.sync.services import LABELS, SyncEngine, parse_options, start_sync
    from app.lib import queues
    from app.lib.exceptions import ConflictError, FormError
    from app.lib.runtime import Runtime
    from app.lib.settings import get_settings
    from app.lib.stripe_gateway import build_stripe_client

    try:
        options = parse_options(since, only)
    except FormError as exc:
        for field, message in exc.errors.items():
            click.echo(f"--{field}: {message}", err=True)
        raise SystemExit(2) from None

    def show(run: m.SyncRun) -> None:
        name = run.current_resource
        progress = run.progress.get(name) or {}
        done = sum(1 for r in options.resources if (run.progress.get(r) or {}).get("done"))
        width = 20
        filled = int(width * done / max(len(options.resources), 1))
        bar = "#" * filled + "-" * (width - filled)
        line = (
            f"\r[{bar}] {done}/{len(options.resources)} {LABELS.get(name, name)}: "
            f"{progress.get('objects', 0)} objects, page {progress.get('pages', 0)}"
        )
        sys.stderr.write(line.ljust(79))
        sys.stderr.flush()

    async def run() -> int:
        runtime = Runtime(get_settings())
        try:
            async with runtime.db() as db:
                try:
                    sync_run = await start_sync(
                        db, runtime.redis, trigger=m.SyncTrigger.CLI, options=options, resume=not no_resume
                    )
                except ConflictError as exc:
                    click.echo(str(exc), err=True)
                    return 1
            if sync_run.resumed_from_id:
                click.echo(f"Resuming the interrupted run {sync_run.resumed_from_id} from its last page.", err=True)
            engine = SyncEngine(
                db_factory=runtime.db,
                stripe=build_stripe_client(
                    runtime.settings.stripe, max_concurrency=runtime.settings.stripe_sync_concurrency
                ),
                redis=runtime.redis,
                settings=runtime.settings,
                # Receipts and notices go through the worker's queue like everywhere else.
                queue=queues.build_queues(runtime.redis)[queues.BACKGROUND],
                run_id=sync_run.id,
                on_page=show,
            )
            result = await engine.run()
            sys.stderr.write("\n")
            click.echo(f"Sync {result.status}: {result.summary}")
            for line in result.divergences[:50]:
                click.echo(f"  fixed: {line}")
            if len(result.divergences) > 50:
                click.echo(f"  … and {len(result.divergences) - 50} more (see /admin/sync).")
            for error in result.errors:
                click.echo(f"  error: {error}", err=True)
            return 0 if result.status == m.SyncStatus.SUCCEEDED else 1
        finally:
            await runtime.close()

    raise SystemExit(asyncio.run(run()))
