"""`cartwright workers run`: the SAQ workers, one process per queue (times ``--workers``), the same worker in each.

It replaces litestar-saq's command of that name. That one ran our ``GracefulWorker`` (app/server/saq_worker.py)
only in its first process: every further process (the email and background queues, every ``--workers`` copy)
rebuilt its worker from the plain config, as a plain SAQ worker. Those blocked in ``BLMOVE`` for ever against the
Redis client's 1 s socket timeout, so every idle second ended in a client-side timeout and a reconnect, and a job
the server handed to a connection the client had just given up on lay in the active list until a sweep that ran
once a minute (no heartbeat either). An email enqueued at such a moment came a minute or more late (seen in CI).
Here every process builds the app as the web does and runs the ``GracefulWorker`` its plugin made.
"""

from __future__ import annotations

import multiprocessing
from typing import TYPE_CHECKING

import click
from litestar.cli._utils import LitestarGroup
from litestar_saq import SAQPlugin
from litestar_saq.cli import run_saq_worker

if TYPE_CHECKING:
    from litestar import Litestar

# How long the first process waits for the others beyond their grace period before it kills them.
JOIN_MARGIN_SECONDS = 5.0


@click.group(cls=LitestarGroup, name="workers", no_args_is_help=True, help="Background workers.")
def workers_group() -> None:
    """Background workers."""


def run_queue(queue_name: str) -> None:
    """A further process: build the app and run its worker for ``queue_name`` (any start method: fork or spawn)."""
    from app.asgi import create_app

    app = create_app()
    run_saq_worker(app.plugins.get(SAQPlugin).get_workers()[queue_name], app.logging_config)


# LitestarGroup.command is untyped; it hands the command the app.
@workers_group.command(name="run", help="Run the workers: one process per queue, times --workers.")  # type: ignore[untyped-decorator]
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="Processes per queue.")
@click.option("--queues", multiple=True, help="Only these queues (repeat the option); all of them by default.")
def run_workers(app: Litestar, workers: int, queues: tuple[str, ...]) -> None:
    available = app.plugins.get(SAQPlugin).get_workers()
    names = list(dict.fromkeys(queues)) or list(available)
    if unknown := [name for name in names if name not in available]:
        known = ", ".join(available)
        raise click.BadParameter(f"no queue {', '.join(unknown)}; the queues are {known}", param_hint="--queues")
    grace = app.state["runtime"].settings.worker_shutdown_grace_seconds
    first, *others = [name for _ in range(workers) for name in names]
    children = [
        multiprocessing.Process(target=run_queue, args=(name,), name=f"cartwright-worker:{name}") for name in others
    ]
    for child in children:
        child.start()
    click.echo(f"Workers: {', '.join(names)} ({workers} process{'es' if workers > 1 else ''} each)", err=True)
    try:
        # The first queue's worker runs here. On SIGTERM it stops taking jobs and passes the signal on to the
        # others (GracefulWorker.stop); each finishes its running jobs within the grace period.
        run_saq_worker(available[first], app.logging_config)
    finally:
        for child in children:
            if child.is_alive():
                child.terminate()
        for child in children:
            child.join(grace + JOIN_MARGIN_SECONDS)
            if child.is_alive():
                child.kill()
                child.join()
