"""`cartwright backup create|restore|verify`, and `--dry-run` on `cartwright database upgrade`."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from app.domain.system.backups import (
    BackupError,
    backup_store,
    create_backup,
    download_backup,
    restore_backup,
    upload_backup,
    verify_backup,
)
from app.lib.runtime import Runtime
from app.lib.settings import Settings, get_settings


@click.group(name="backup", help="Back up and restore the database and the uploaded files.")
def backup_group() -> None:
    """Backups."""


def _fail(exc: BackupError) -> None:
    click.echo(f"Error: {exc.message}", err=True)
    raise SystemExit(1) from exc


@contextmanager
def _local_copy(backup: str, settings: Settings) -> Iterator[Path]:
    """The backup as a local directory: itself, or downloaded from ``s3://bucket/prefix/<name>`` for the block."""
    if not backup.startswith("s3://"):
        path = Path(backup)
        if not path.is_dir():
            raise BackupError(f"{backup} is not a directory (nor an s3:// address).")
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="cartwright-restore-") as scratch:
        store = backup_store(backup, settings)
        yield asyncio.run(download_backup(store, Path(scratch) / backup.rstrip("/").rsplit("/", 1)[-1]))


@backup_group.command(name="create", help="Back up the database and STORAGE_DIR into a new timestamped directory.")
@click.option(
    "--to",
    "destination",
    default=None,
    help="Directory to create the backup in (default: CARTWRIGHT_VAR_DIR/backups), or s3://bucket/prefix.",
)
def create_command(destination: str | None) -> None:
    settings = get_settings()
    try:
        if destination and destination.startswith("s3://"):
            store = backup_store(destination, settings)
            with tempfile.TemporaryDirectory(prefix="cartwright-backup-") as scratch:
                made, manifest = asyncio.run(
                    create_backup(settings.database_url, _local_files(settings), Path(scratch))
                )
                where = asyncio.run(upload_backup(made, store))
        else:
            target = Path(destination) if destination else settings.var_dir / "backups"
            made, manifest = asyncio.run(create_backup(settings.database_url, _local_files(settings), target))
            where = str(made)
    except BackupError as exc:
        _fail(exc)
        return
    rows = sum(manifest.row_counts.values())
    size = sum(f.size for f in manifest.files)
    click.echo(f"Backup written to {where}")
    click.echo(
        f"  {manifest.database} at revision {manifest.alembic_revision or '(none)'}: "
        f"{len(manifest.row_counts)} tables, {rows} rows; {len(manifest.files)} files, {size} bytes."
    )


def _local_files(settings: Settings) -> Path | None:
    """The storage directory to back up and restore, or None (with a note) when the files live in a bucket."""
    if settings.storage_is_local:
        return settings.storage_dir
    click.echo(
        f"Files are in {settings.storage_url}: not copied. Keep them with the bucket's versioning or replication."
    )
    return None


@backup_group.command(name="restore", help="Restore a backup into an EMPTY database and copy its files back.")
@click.argument("backup")
@click.option("--force", is_flag=True, help="Delete everything in the database first (stop the web and workers).")
def restore_command(backup: str, force: bool) -> None:
    """BACKUP: a backup's directory, or its s3://bucket/prefix/<name> address."""
    settings = get_settings()

    async def run(local: Path) -> Any:
        runtime = Runtime(settings)
        try:
            files = _local_files(settings)
            return await restore_backup(local, settings.database_url, files, runtime.redis, force=force)
        finally:
            await runtime.close()

    try:
        with _local_copy(backup, settings) as local:
            manifest = asyncio.run(run(local))
    except BackupError as exc:
        _fail(exc)
        return
    rows, files = sum(manifest.row_counts.values()), len(manifest.files)
    click.echo(f"Restored the backup of {manifest.created_at}: {rows} rows, {files} files.")
    click.echo(f"  Its migration revision: {manifest.alembic_revision or '(none)'}.")
    click.echo("Next: `cartwright database upgrade` if the code is newer than the backup; start the worker: its")
    click.echo("  catch-up (every 5 minutes) stores the Stripe events since the backup; `cartwright stripe sync`")
    click.echo("  re-syncs Stripe's products, prices and customers.")


@backup_group.command(name="verify", help="Restore a backup into a scratch database and check it; exit 1 if bad.")
@click.argument("backup")
def verify_command(backup: str) -> None:
    """BACKUP: a backup's directory, or its s3://bucket/prefix/<name> address."""
    settings = get_settings()
    try:
        with _local_copy(backup, settings) as local:
            report = asyncio.run(verify_backup(local, settings.database_url))
    except BackupError as exc:
        _fail(exc)
        return
    if report.manifest:
        name = backup.rstrip("/").rsplit("/", 1)[-1]
        click.echo(
            f"Backup {name}: {report.manifest.database}, created {report.manifest.created_at}, "
            f"revision {report.manifest.alembic_revision or '(none)'}"
        )
    for line in report.checked:
        click.echo(f"  checked: {line}")
    for problem in report.problems:
        click.echo(f"  PROBLEM: {problem}", err=True)
    if not report.ok:
        click.echo(f"FAILED: {len(report.problems)} problem(s).", err=True)
        raise SystemExit(1)
    click.echo("OK: the backup restores and matches its manifest.")
