"""Backups: `cartwright backup create|restore|verify` and `cartwright database upgrade --dry-run`, on both databases.

The commands run as an operator runs them (click, the configured DATABASE_URL and STORAGE_DIR); a restore goes
into a second, empty database (PostgreSQL) or file (SQLite), except the drill after which the Stripe catch-up
brings back the payments made after the backup, which restores over the shop's own database as an operator would.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from click.testing import CliRunner, Result
from saq import Queue, Worker
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.pool import NullPool

from app.cli.backup import backup_group
from app.db import models as m
from app.domain.cart.services import price_lines
from app.domain.checkout.services import BillingDetails, CheckoutService
from app.domain.payments.catch_up import STATE_KEY
from app.domain.system.backups import Manifest, database_tables
from app.lib.runtime import Runtime
from app.lib.settings import Settings, get_settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.integration.purchase_support import confirm, digital_product, settle
from tests.integration.test_catch_up import run_catch_up_job
from tests.integration.test_webhook_chaos import STOCK, Purchase, Shop, assert_each_paid_order_fulfilled_once, buy
from tests.support import create_postgres_database, s3_server

pytestmark = pytest.mark.usefixtures("app_server")


def invoke(args: list[str], **env: str) -> Result:
    """`cartwright backup …` with the test's settings, some of them (DATABASE_URL, STORAGE_DIR) overridden."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(backup_group, args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


async def backup_cli(args: list[str], **env: str) -> Result:
    # The commands run their own event loop (asyncio.run), as in a terminal: give them a thread.
    return await asyncio.to_thread(invoke, args, **env)


@pytest.fixture
def empty_database_url(settings: Settings, tmp_path: Path) -> str:
    """A second database next to the test's, with nothing in it: where a restore may go."""
    if settings.is_sqlite:
        return f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return create_postgres_database(f"cartwright_restore_{worker}")


@pytest.fixture
async def shop(factory: Factory, settings: Settings) -> Shop:
    guide = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500)
    deck = await digital_product(factory, settings.storage_dir, name="Pitch Deck", price=2500, stock=STOCK)
    mug = await factory.product(name="Mug", price=1800, stock=STOCK)
    return Shop(guide, deck, mug)


@pytest.fixture
async def emulator(stripe_emulator: EmulatorServer, _clean_state: None) -> AsyncIterator[EmulatorServer]:
    yield stripe_emulator
    await asyncio.to_thread(stripe_emulator.reset)


def only_backup(root: Path) -> Path:
    made = [p for p in root.iterdir() if not p.name.startswith(".")]
    assert len(made) == 1, made
    return made[0]


async def table_counts(database_url: str, tables: list[str]) -> dict[str, int]:
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            return {t: int(await conn.scalar(text(f'SELECT count(*) FROM "{t}"')) or 0) for t in tables}
    finally:
        await engine.dispose()


def flip_bytes(path: Path) -> bytes:
    """Damage a file in its middle (as a bad disk or a truncated copy would); return the original bytes."""
    original = path.read_bytes()
    middle = len(original) // 2
    damaged = bytearray(original)
    for i in range(middle, min(middle + 64, len(damaged))):
        damaged[i] ^= 0xFF
    path.write_bytes(bytes(damaged))
    return original


async def test_a_backup_restores_into_an_empty_database_with_its_paid_orders_and_files(
    emulator: EmulatorServer,
    runtime: Runtime,
    shop: Shop,
    queue: Queue,
    worker: Worker[Any],
    settings: Settings,
    empty_database_url: str,
    tmp_path: Path,
) -> None:
    purchases = await buy(runtime, shop, 3, declined_first={1})
    await settle(emulator, queue, runtime)
    await assert_each_paid_order_fulfilled_once(runtime, shop, purchases)

    created = await backup_cli(["create", "--to", str(tmp_path / "backups")])
    assert created.exit_code == 0, created.output
    backup = only_backup(tmp_path / "backups")
    manifest = Manifest.read(backup)
    assert manifest.database == ("sqlite" if settings.is_sqlite else "postgresql")
    assert manifest.alembic_revision
    downloads = [p.order_id for p in purchases for _, _, download in p.lines if download]
    assert manifest.row_counts["orders"] == 3 and manifest.row_counts["entitlements"] == len(downloads) == 4
    keys = [str(shop.guide.digital_file), str(shop.deck.digital_file)]
    stored = {p.relative_to(settings.storage_dir).as_posix() for p in settings.storage_dir.rglob("*") if p.is_file()}
    assert {f.path for f in manifest.files} == stored and set(keys) <= stored

    restored_files = tmp_path / "restored-uploads"
    restored = await backup_cli(
        ["restore", str(backup)], DATABASE_URL=empty_database_url, STORAGE_DIR=str(restored_files)
    )
    assert restored.exit_code == 0, restored.output
    assert "Restored the backup of" in restored.output

    assert await table_counts(empty_database_url, list(manifest.row_counts)) == manifest.row_counts
    engine = create_async_engine(empty_database_url, poolclass=NullPool)
    try:
        async with AsyncSession(engine) as db:
            orders = {o.id: o for o in await db.scalars(select(m.Order))}
            assert {p.order_id for p in purchases} == set(orders)
            assert {o.status for o in orders.values()} == {"paid"}
            assert all(o.fulfilled_at is not None for o in orders.values())
            entitled = await db.scalars(select(m.Entitlement.order_id))
            assert sorted(map(str, entitled)) == sorted(map(str, downloads))
    finally:
        await engine.dispose()
    for key in keys:
        assert (restored_files / key).read_bytes() == (settings.storage_dir / key).read_bytes()

    # Twice is refused: the database is no longer empty.
    again = await backup_cli(["restore", str(backup)], DATABASE_URL=empty_database_url)
    assert again.exit_code == 1
    assert "The database is not empty" in again.output


async def test_verify_passes_a_good_backup_and_names_a_damaged_dump_or_file(
    runtime: Runtime, factory: Factory, settings: Settings, empty_database_url: str, tmp_path: Path
) -> None:
    guide = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500)
    await factory.user(email="kept@example.com")
    assert (await backup_cli(["create", "--to", str(tmp_path)])).exit_code == 0
    backup = only_backup(tmp_path)
    manifest = Manifest.read(backup)

    good = await backup_cli(["verify", str(backup)])
    assert good.exit_code == 0, good.output
    assert "OK: the backup restores and matches its manifest." in good.output
    assert "row counts" in good.output and "sizes and SHA-256" in good.output

    dump = backup / manifest.database_file.path
    original = flip_bytes(dump)
    damaged = await backup_cli(["verify", str(backup)])
    assert damaged.exit_code == 1, damaged.output
    assert f"database {dump.name}: checksum mismatch (the dump is damaged)" in damaged.output
    assert "FAILED" in damaged.output
    refused = await backup_cli(["restore", str(backup)], DATABASE_URL=empty_database_url)
    assert refused.exit_code == 1 and "is missing or damaged (checksum mismatch)" in refused.output
    assert await database_tables(empty_database_url) == []
    dump.write_bytes(original)

    flip_bytes(backup / "files" / str(guide.digital_file))
    damaged_file = await backup_cli(["verify", str(backup)])
    assert damaged_file.exit_code == 1, damaged_file.output
    assert f"file {guide.digital_file}: checksum mismatch (the file is damaged)" in damaged_file.output
    assert "database" not in damaged_file.output.split("PROBLEM")[-1]

    (backup / "manifest.json").write_text("{not json")
    unreadable = await backup_cli(["verify", str(backup)])
    assert unreadable.exit_code == 1 and "manifest.json is damaged" in unreadable.output
    assert "Traceback" not in unreadable.output


async def test_a_backup_kept_in_a_bucket_verifies_and_restores_and_a_cut_short_upload_is_refused(
    runtime: Runtime, factory: Factory, settings: Settings, empty_database_url: str, tmp_path: Path
) -> None:
    # #14 item 7: "to a directory or an S3 bucket" (moto's S3 server, offline, as for STORAGE_URL).
    guide = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500)
    await factory.user(email="kept@example.com")
    with s3_server() as s3:
        env = {k: v for k, v in s3.env("unused").items() if k != "STORAGE_URL"}
        created = await backup_cli(["create", "--to", f"s3://{s3.bucket}/nightly"], **env)
        assert created.exit_code == 0, created.output
        address = created.output.split("Backup written to ", 1)[1].split()[0]
        assert address.startswith(f"s3://{s3.bucket}/nightly/cartwright-backup-")
        name = address.rsplit("/", 1)[1]
        keys = s3.keys(f"nightly/{name}/")
        assert f"nightly/{name}/manifest.json" in keys
        assert f"nightly/{name}/files/{guide.digital_file}" in keys

        good = await backup_cli(["verify", address], **env)
        assert good.exit_code == 0, good.output
        assert "OK: the backup restores and matches its manifest." in good.output

        restored_files = tmp_path / "restored-uploads"
        restored = await backup_cli(
            ["restore", address], DATABASE_URL=empty_database_url, STORAGE_DIR=str(restored_files), **env
        )
        assert restored.exit_code == 0, restored.output
        users = await table_counts(empty_database_url, ["users"])
        assert users["users"] >= 1
        key = str(guide.digital_file)
        assert (restored_files / key).read_bytes() == (settings.storage_dir / key).read_bytes()

        # An upload cut short before its manifest (the last object written) is not a backup.
        s3.client().delete_object(Bucket=s3.bucket, Key=f"nightly/{name}/manifest.json")
        cut = await backup_cli(["verify", address], **env)
        assert cut.exit_code == 1 and "has no manifest.json" in cut.output and "Traceback" not in cut.output


async def test_a_backup_taken_while_the_shop_writes_is_consistent(runtime: Runtime, tmp_path: Path) -> None:
    """The dump and the manifest's counts come from one snapshot, however many rows arrive meanwhile."""
    backing_up = asyncio.Event()
    done = asyncio.Event()

    async def shop_writes() -> int:
        n = 0
        while not done.is_set():
            async with runtime.db() as db:
                db.add(m.User(email=f"writer{n}@example.com", name="Writer", password_hash="x", role="customer"))
                await db.commit()
            n += 1
            if n == 5:
                backing_up.set()  # the backup starts with the writes already under way
        return n

    writer = asyncio.create_task(shop_writes())
    await backing_up.wait()
    try:
        created = await backup_cli(["create", "--to", str(tmp_path)])
    finally:
        done.set()
    written = await writer
    assert created.exit_code == 0, created.output
    backup = only_backup(tmp_path)
    assert 5 <= Manifest.read(backup).row_counts["users"] < written  # rows arrived after the snapshot too

    verified = await backup_cli(["verify", str(backup)])
    assert verified.exit_code == 0, verified.output


async def test_restore_refuses_a_database_that_is_not_empty(runtime: Runtime, factory: Factory, tmp_path: Path) -> None:
    await factory.user(email="before@example.com")
    assert (await backup_cli(["create", "--to", str(tmp_path)])).exit_code == 0
    await factory.user(email="after@example.com")

    refused = await backup_cli(["restore", str(only_backup(tmp_path))])
    assert refused.exit_code == 1
    assert "The database is not empty" in refused.output and "--force" in refused.output
    async with runtime.db() as db:
        assert set(await db.scalars(select(m.User.email))) == {"before@example.com", "after@example.com"}


def run_cartwright(*args: str, database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    cartwright = Path(sys.executable).parent / "cartwright"
    return subprocess.run([str(cartwright), *args], env=env, capture_output=True, text=True, timeout=120, check=False)


async def test_upgrade_dry_run_prints_the_sql_and_changes_nothing(migrated: Settings, empty_database_url: str) -> None:
    dry = await asyncio.to_thread(run_cartwright, "database", "upgrade", "--dry-run", database_url=empty_database_url)
    assert dry.returncode == 0, dry.stderr
    assert "-- Dry run from (empty database) to " in dry.stdout
    assert "CREATE TABLE orders" in dry.stdout and "CREATE TABLE alembic_version" in dry.stdout
    assert "INSERT INTO alembic_version" in dry.stdout
    assert await database_tables(empty_database_url) == []

    # The migrated test database has nothing pending; the command without the flag still migrates.
    current = await asyncio.to_thread(
        run_cartwright, "database", "upgrade", "--dry-run", database_url=migrated.database_url
    )
    assert current.returncode == 0 and "-- No pending migrations: the database is at " in current.stdout
    real = await asyncio.to_thread(
        run_cartwright, "database", "upgrade", "--no-prompt", database_url=empty_database_url
    )
    assert real.returncode == 0, real.stderr
    assert "orders" in await database_tables(empty_database_url)


async def pending_order(runtime: Runtime, shop: Shop) -> tuple[UUID, str]:
    """An order placed and its PaymentIntent created, not yet paid (the customer is on the pay page)."""
    billing = BillingDetails(email="late@example.com", name="Late Payer", country="CA", region="ON", postal_code="M5V")
    async with runtime.db() as db:
        service = CheckoutService(db, runtime.stripe)
        order, _ = await service.place_order(
            cart=price_lines([(shop.guide, 1)]), billing=billing, user=None, checkout_token="late-0001"
        )
        intent = await service.payment_intent(order)
    return order.id, str(intent["id"])


async def test_orders_paid_after_the_backup_come_back_with_the_catch_up_after_a_restore(
    emulator: EmulatorServer,
    runtime: Runtime,
    shop: Shop,
    queue: Queue,
    worker: Worker[Any],
    tmp_path: Path,
) -> None:
    """Reliability: restoring a backup loses what happened since; Stripe's Events API brings the payments back."""
    early = await buy(runtime, shop, 1, declined_first=set())
    late_order, late_intent = await pending_order(runtime, shop)
    await settle(emulator, queue, runtime)
    assert (await backup_cli(["create", "--to", str(tmp_path)])).exit_code == 0

    # After the backup: the customer pays, the webhook fulfils, the cron's catch-up runs and finds nothing new.
    assert (await confirm(runtime, late_intent)).status == "succeeded"
    await settle(emulator, queue, runtime)
    assert (await run_catch_up_job(queue, "catch-up-before-restore"))["complete"]
    # An hour on, Redis's catch-up watermark is an hour past the payments the restore is about to lose (the
    # emulator's events cannot be aged, so the saved watermark is moved an hour on instead).
    state = json.loads(await runtime.redis.get(STATE_KEY) or "{}")
    state["watermark"] = int(time.time()) + 3600
    await runtime.redis.set(STATE_KEY, json.dumps(state))

    # The database is lost; the operator restores the backup over it (web and workers stopped: the pool is dropped).
    restored = await backup_cli(["restore", "--force", str(only_backup(tmp_path))])
    assert restored.exit_code == 0, restored.output
    await runtime.alchemy.get_engine().dispose()
    async with runtime.db() as db:
        late = await db.get(m.Order, late_order)
        assert late is not None and late.status == "pending"  # the backup predates the payment
        assert (
            await db.scalar(select(func.count()).select_from(m.StripeEvent).where(m.StripeEvent.source == "catch-up"))
            == 0
        )

    result = await run_catch_up_job(queue, "catch-up-after-restore")
    assert result["complete"] and result["stored"] > 0, result
    await settle(emulator, queue, runtime)
    late_purchase = Purchase(late_order, late_intent, "late@example.com", ((shop.guide.id, 1, True),))
    # Paid, fulfilled once (one paid event, one entitlement, one receipt row), stock right: as if never lost.
    await assert_each_paid_order_fulfilled_once(runtime, shop, [*early, late_purchase])
