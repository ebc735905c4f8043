"""Our commands on the ``cartwright`` CLI: users, seed, dev (what `make run` starts)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import click
from sqlalchemy import func, select

from app.db import models as m
from app.lib.runtime import Runtime
from app.lib.settings import BASE_DIR, get_settings


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
                user = await service.create_user(email=email, password=password, name=name, role=Role(role))
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
                result = await seed_demo(db, runtime.settings)
            if result.products or result.categories:  # a running shop shows them at once
                await invalidate_catalog(runtime.redis)
            click.echo(f"Seeded {result.categories} categories, {result.products} products, {result.users} users.")
        finally:
            await runtime.close()

    asyncio.run(run())


def migrate(runtime: Runtime) -> None:
    from advanced_alchemy.alembic.commands import AlembicCommands

    AlembicCommands(sqlalchemy_config=runtime.alchemy).upgrade(revision="head")


def _wait_until_up(url: str, timeout: float, procs: list[subprocess.Popen[bytes]]) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            return False
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - our own local URL
                if response.status == 200:
                    return True
        except OSError:
            time.sleep(0.2)  # polling a child process we just started; not test synchronisation
    return False


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

    click.echo("Applying migrations…")
    migrate(runtime)

    async def seed_first_run() -> bool:
        # Only into an empty database: never plant demo accounts (public passwords) into a shop with data.
        async with runtime.db() as db:
            empty = not await db.scalar(select(func.count()).select_from(m.User))
            if empty:
                await seed_demo(db, settings)
        await runtime.close()
        return empty

    if asyncio.run(seed_first_run()):
        click.echo("Loaded the demo catalog and demo accounts (first run).")

    bin_dir = Path(sys.executable).parent
    procs: list[subprocess.Popen[bytes]] = []
    emulator_cmd = _emulator_command(
        settings.stripe.api_base,
        settings.var_dir,
        env,
        webhook_url=f"{env['BASE_URL']}/webhooks/stripe",
        webhook_secret=settings.stripe.webhook_secrets[0],
    )
    if emulator_cmd:
        procs.append(subprocess.Popen(emulator_cmd, env=env, cwd=BASE_DIR))  # noqa: S603
    procs.append(
        subprocess.Popen(  # noqa: S603
            [
                str(bin_dir / "granian"),
                "--interface",
                "asgi",
                "--factory",
                "--host",
                host,
                "--port",
                str(port),
                "--log-level",
                "warning",
                "app.asgi:create_app",
            ],
            env=env,
            cwd=BASE_DIR,
        )
    )
    procs.append(subprocess.Popen([str(bin_dir / "cartwright"), "workers", "run"], env=env, cwd=BASE_DIR))  # noqa: S603

    def stop(*_: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        if not _wait_until_up(f"http://{host}:{port}/healthz", 60, procs):
            click.echo("The web server did not start; see the messages above.", err=True)
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
        while all(p.poll() is None for p in procs):
            time.sleep(1)  # supervising children; exit when any of them dies
        raise SystemExit(1)
    finally:
        stop()


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
