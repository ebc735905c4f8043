"""Our commands on the ``cartwright`` CLI: users, seed, dev (what `make run` starts)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import click
from sqlalchemy import func, select

from app.db import models as m
from app.lib.runtime import Runtime
from app.lib.settings import BASE_DIR, get_settings
from app.server.logging import configure_logging


@click.group(name="users", help="Manage user accounts.")
def users_group() -> None:
    """User management."""


@users_group.command(name="create-admin", help="Create an admin (or support) account.")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--role", type=click.Choice(["admin", "support"]), default="admin", show_default=True)
@click.option(
    "--password",
    envvar="CARTWRIGHT_ADMIN_PASSWORD",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help="Prompted for when not given (or CARTWRIGHT_ADMIN_PASSWORD).",
)
def create_admin(email: str, name: str, role: str, password: str) -> None:
    from app.domain.accounts.services import AccountService
    from app.domain.notifications.services import EmailService
    from app.lib.exceptions import FormError
    from app.lib.permissions import Role

    async def run() -> None:
        runtime = Runtime(get_settings())
        try:
            async with runtime.db() as db:
                service = AccountService(db, runtime.settings, EmailService(db, queue=None))
                user = await service.create_user(
                    email=email, password=password, name=name, role=Role(role), verified=True
                )
                await db.commit()
                click.echo(f"Created {role} {user.email}")
        except FormError as exc:
            for field, problem in exc.errors.items():
                click.echo(f"{field}: {problem}", err=True)
            raise SystemExit(1) from exc
        finally:
            await runtime.close()

    asyncio.run(run())


@click.command(name="seed", help="Load the demo catalog and demo users (safe to run again).")
def seed_command() -> None:
    from app.cli.seed import seed_demo
    from app.domain.catalog.cache import invalidate_catalog

    async def run() -> None:
        runtime = Runtime(get_settings())
        try:
            async with runtime.db() as db:
                result = await seed_demo(db, runtime.settings, runtime.storage)
            if result.products or result.categories:  # a running shop shows them at once
                await invalidate_catalog(runtime.redis)
            click.echo(f"Seeded {result.categories} categories, {result.products} products, {result.users} users.")
        finally:
            await runtime.close()

    asyncio.run(run())


def migrate(runtime: Runtime) -> None:
    from advanced_alchemy.alembic.commands import AlembicCommands

    AlembicCommands(sqlalchemy_config=runtime.alchemy).upgrade(revision="head")


@dataclass
class _Child:
    """A process `cartwright dev` started: its name for messages, and its own process group."""

    name: str
    proc: subprocess.Popen[bytes]

    @classmethod
    def start(cls, name: str, args: list[str], env: dict[str, str]) -> _Child:
        # Its own session, so stopping it reaches the processes it forks too (granian's workers outlived a
        # SIGTERM to granian alone and kept the port), and Ctrl-C reaches only us: we stop children in order.
        proc = subprocess.Popen(args, env=env, cwd=BASE_DIR, start_new_session=True)  # noqa: S603
        return cls(name, proc)

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)


def _stop_all(children: list[_Child], timeout: float = 10) -> None:
    for child in reversed(children):
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        child.signal_group(signal.SIGKILL)  # whatever of its group is left (a worker process it forked)
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.proc.wait(timeout=5)


def _first_exited(children: list[_Child]) -> _Child | None:
    return next((c for c in children if c.proc.poll() is not None), None)


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, timeout: float, children: list[_Child]) -> _Child | None:
    """None once ``url`` answers 200; else the child that exited (or the last one, on time-out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if exited := _first_exited(children):
            return exited
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own local URL
                if response.status == 200:
                    return None
        except OSError:
            time.sleep(0.2)  # polling a child process we just started; not test synchronisation
    return children[-1]


def _emulator_api_base(api_base: str, env: dict[str, str]) -> str:
    """The emulator's URL: the configured one, or, when none is configured and 12111 is taken, a free port.

    So two checkouts can run `make run` side by side; the children learn the URL from STRIPE_API_BASE.
    """
    parts = urlsplit(api_base)
    host, port = parts.hostname or "127.0.0.1", parts.port or 12111
    if env.get("STRIPE_API_BASE") or env.get("STRIPE_SECRET_KEY") or _port_free(host, port):
        return api_base
    return f"{parts.scheme}://{host}:{_free_port(host)}"


@click.command(name="dev", help="Migrate, seed, then run web + worker (and the Stripe emulator) until Ctrl-C.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def dev_command(host: str, port: int) -> None:
    from app.cli.seed import seed_demo
    from app.cli.seed_data import DEMO_USERS

    settings = get_settings()
    runtime = Runtime(settings)
    env = dict(os.environ)
    env["REDIS_URL"] = runtime.redis_url  # children join the embedded Redis this process started
    # Links in emails must work from a browser: a wildcard bind address is not somewhere to go.
    link_host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host  # noqa: S104
    env.setdefault("BASE_URL", f"http://{link_host}:{port}")
    env["SECRET_KEY"] = settings.secret_key
    if not env.get("LOG_FORMAT"):  # web, worker, emulator and this command print one readable format here
        env["LOG_FORMAT"] = "console"
        configure_logging(settings.log_level, "console")
    # Web and worker write their metrics here and /metrics sums them; a fresh start begins from zero.
    metrics_dir = Path(env.get("PROMETHEUS_MULTIPROC_DIR") or settings.var_dir / "metrics")
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)

    click.echo("Applying migrations…")
    migrate(runtime)

    async def seed_first_run() -> bool:
        # Only into an empty database: never plant demo accounts (public passwords) into a shop with data.
        async with runtime.db() as db:
            empty = not await db.scalar(select(func.count()).select_from(m.User))
            if empty:
                await seed_demo(db, settings, runtime.storage)
        await runtime.close()
        return empty

    if asyncio.run(seed_first_run()):
        click.echo("Loaded the demo catalog and demo accounts (first run).")

    if not _port_free(host, port):
        click.echo(f"Port {port} on {host} is already in use: stop what runs there, or `make run PORT=…`.", err=True)
        raise SystemExit(1)
    api_base = _emulator_api_base(settings.stripe.api_base, env)
    if api_base != settings.stripe.api_base:
        env["STRIPE_API_BASE"] = api_base
        click.echo(f"Port {urlsplit(settings.stripe.api_base).port} is taken: the Stripe emulator runs at {api_base}.")

    bin_dir = Path(sys.executable).parent
    children: list[_Child] = []
    emulator_cmd = _emulator_command(
        api_base,
        settings.var_dir,
        env,
        webhook_url=f"{env['BASE_URL']}/webhooks/stripe",
        webhook_secret=settings.stripe.webhook_secrets[0],
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if emulator_cmd:
            children.append(_Child.start(f"The Stripe emulator ({api_base})", emulator_cmd, env))
        granian = [str(bin_dir / "granian"), "--interface", "asgi", "--factory", "--host", host, "--port", str(port)]
        web = [*granian, "--log-level", "warning", "app.asgi:create_app"]
        children.append(_Child.start(f"The web server (port {port})", web, env))
        children.append(_Child.start("The worker", [str(bin_dir / "cartwright"), "workers", "run"], env))
        if failed := _wait_until_up(f"http://{host}:{port}/healthz", 60, children):
            state = "did not start in time" if failed.proc.poll() is None else f"exited ({failed.proc.returncode})"
            click.echo(f"{failed.name} {state}; see its messages above. Stopping the rest.", err=True)
            raise SystemExit(1)
        url = env["BASE_URL"]
        click.echo("")
        click.echo(f"  Cartwright is running at {url}")
        click.echo("  Demo logins:")
        for user in DEMO_USERS:
            click.echo(f"    {user['role']:<9} {user['email']:<26} {user['password']}")
        if not settings.smtp_url:
            click.echo(f"  Emails land in {url}/admin/emails (sign in as admin).")
        click.echo("  Ctrl-C stops everything.")
        click.echo("")
        while (exited := _first_exited(children)) is None:
            time.sleep(1)  # supervising children; exit when any of them dies
        click.echo(f"{exited.name} exited ({exited.proc.returncode}); stopping the rest.", err=True)
        raise SystemExit(1)
    finally:
        _stop_all(children)


def _emulator_command(
    api_base: str, var_dir: Path, env: dict[str, str], *, webhook_url: str, webhook_secret: str
) -> list[str] | None:
    """Start the offline Stripe emulator when no real Stripe is configured; it signs webhooks to our endpoint."""
    parts = urlsplit(api_base)
    if env.get("STRIPE_SECRET_KEY") or parts.hostname not in {"127.0.0.1", "localhost"}:
        return None
    if not (BASE_DIR / "app" / "stripe_emulator" / "__main__.py").exists():
        return None
    return [
        sys.executable,
        "-m",
        "app.stripe_emulator",
        "--host",
        parts.hostname or "127.0.0.1",
        "--port",
        str(parts.port or 12111),
        "--state-file",
        str(var_dir / "stripe-emulator.json"),
        "--webhook-url",
        webhook_url,
        "--webhook-secret",
        webhook_secret,
    ]
