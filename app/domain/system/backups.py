"""Backups: the database (PostgreSQL's ``pg_dump -Fc`` or SQLite's online backup API) and the uploaded files.

A backup is one directory, ``cartwright-backup-<UTC time>``, holding the database (``database.dump`` or
``database.sqlite3``), ``files/`` (a copy of STORAGE_DIR: product files and covers) and ``manifest.json``: when,
which database kind and Alembic revision, the row count of every table, and the size and SHA-256 of every file
(the database's too). It is written under a ``.partial`` name and renamed at the end, so a backup cut short never
looks complete.

The row counts come from the very snapshot that is dumped (PostgreSQL: ``pg_dump --snapshot`` of a repeatable-read
transaction that also counts; SQLite: counted in the copy), so ``verify`` can compare them while the shop writes.

A backup may also live in an S3-compatible bucket (``--to s3://bucket/prefix``, the same endpoint and credentials as
``STORAGE_URL``'s): it is made in a temporary directory, then uploaded under ``<prefix>/<backup name>/`` with
``manifest.json`` last, so an upload cut short has no manifest and is refused like a directory without one.
``restore`` and ``verify`` take ``s3://bucket/prefix/<backup name>`` and download it first (sizes and SHA-256
checked against the manifest, as for a directory).

Restore goes into an *empty* database only (``force`` empties it first): restoring over a live shop's data is
how a wrong backup loses the newest orders. Afterwards the Stripe catch-up state is reset, so the next catch-up
scans from the newest event the restored database holds and brings back what Stripe knows since the backup.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool

from app.domain.catalog.cache import invalidate_catalog
from app.domain.payments.catch_up import STATE_KEY as CATCH_UP_STATE_KEY
from app.lib.exceptions import ApplicationError
from app.lib.settings import Settings
from app.lib.storage import ObjectMissingError, S3Storage, StorageUnavailableError

MANIFEST = "manifest.json"
FILES_DIR = "files"
PG_DUMP_FILE = "database.dump"
SQLITE_FILE = "database.sqlite3"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class BackupError(ApplicationError):
    """A backup cannot be made, read or restored; the message says why and what to do."""


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, with forward slashes
    size: int
    sha256: str


@dataclass
class Manifest:
    created_at: str
    database: str  # "postgresql" or "sqlite"
    database_file: FileEntry
    alembic_revision: str | None
    row_counts: dict[str, int]
    files: list[FileEntry]
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, backup: Path) -> Manifest:
        path = backup / MANIFEST
        try:
            raw = json.loads(path.read_text())
            return cls(
                created_at=str(raw["created_at"]),
                database=str(raw["database"]),
                database_file=FileEntry(**raw["database_file"]),
                alembic_revision=raw.get("alembic_revision"),
                row_counts={str(k): int(v) for k, v in raw["row_counts"].items()},
                files=[FileEntry(**f) for f in raw["files"]],
                format=int(raw.get("format", FORMAT_VERSION)),
            )
        except FileNotFoundError as exc:
            raise BackupError(f"{backup} is not a backup: it has no {MANIFEST}.") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise BackupError(f"{path} is damaged or not a Cartwright manifest ({exc}).") from exc


@dataclass
class VerifyReport:
    backup: Path
    manifest: Manifest | None = None
    problems: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --- helpers ---------------------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _entry(root: Path, path: Path) -> FileEntry:
    return FileEntry(path.relative_to(root).as_posix(), path.stat().st_size, sha256_of(path))


def _kind(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


def _sqlite_path(database_url: str) -> Path:
    database = make_url(database_url).database
    if not database or database == ":memory:":
        raise BackupError("An in-memory SQLite database cannot be backed up or restored.")
    return Path(database)


def find_pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore`` from PATH, else the newest of Debian's /usr/lib/postgresql/<version>/bin.

    A newer pg_dump reads older servers (not the reverse), so the newest installed version is the safe pick.
    """
    if found := shutil.which(name):
        return found

    def version(path: str) -> tuple[int, ...]:
        match = re.search(r"/postgresql/([\d.]+)/bin/", path)
        return tuple(int(p) for p in match.group(1).split(".")) if match else ()

    candidates = sorted((str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}")), key=version, reverse=True)
    if candidates:
        return candidates[0]
    raise BackupError(
        f"{name} was not found on PATH nor under /usr/lib/postgresql/*/bin: install PostgreSQL's client tools "
        "(Debian/Ubuntu: apt-get install postgresql-client) in the version of the server or newer."
    )


def _libpq_env(url: URL) -> dict[str, str]:
    """The connection for pg_dump/pg_restore as libpq variables: the password stays out of the process list."""
    env = dict(os.environ)
    values = {
        "PGHOST": url.host,
        "PGPORT": str(url.port) if url.port else None,
        "PGUSER": url.username,
        "PGPASSWORD": url.password if isinstance(url.password, str) else None,
        "PGDATABASE": url.database,
    }
    ssl = url.query.get("ssl") or url.query.get("sslmode")
    if isinstance(ssl, str):
        values["PGSSLMODE"] = {"true": "require", "false": "disable"}.get(ssl, ssl)
    env.update({k: v for k, v in values.items() if v})
    return env


async def _run(args: list[str], env: dict[str, str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await proc.communicate()
    if proc.returncode != 0:
        tool = Path(args[0]).name
        message = stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise BackupError(f"{tool} failed: {message}")


@contextlib.asynccontextmanager
async def _connect(database_url: str, **options: Any) -> AsyncIterator[AsyncConnection]:
    engine = create_async_engine(database_url, poolclass=NullPool, **options)
    try:
        async with engine.connect() as conn:
            yield conn
    finally:
        await engine.dispose()


async def _pg_tables(conn: AsyncConnection) -> list[str]:
    rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1"))
    return [str(r[0]) for r in rows]


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def _counts(conn: AsyncConnection, tables: list[str]) -> dict[str, int]:
    return {t: int(await conn.scalar(text(f"SELECT count(*) FROM {_quote(t)}")) or 0) for t in tables}  # noqa: S608


async def _revision(conn: AsyncConnection, tables: list[str]) -> str | None:
    if "alembic_version" not in tables:
        return None
    return ",".join(sorted(str(v) for v in await conn.scalars(text("SELECT version_num FROM alembic_version"))))


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1")
    return [str(r[0]) for r in rows]


def _sqlite_counts(conn: sqlite3.Connection, tables: list[str]) -> dict[str, int]:
    return {t: int(conn.execute(f"SELECT count(*) FROM {_quote(t)}").fetchone()[0]) for t in tables}  # noqa: S608


def _sqlite_revision(conn: sqlite3.Connection, tables: list[str]) -> str | None:
    if "alembic_version" not in tables:
        return None
    return ",".join(sorted(str(r[0]) for r in conn.execute("SELECT version_num FROM alembic_version")))


def _sqlite_copy(source: Path, target: Path) -> None:
    """SQLite's online backup API: a consistent copy even while other connections (the shop) write."""
    src = sqlite3.connect(source)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


# --- create ----------------------------------------------------------------------------------------------------


async def create_backup(database_url: str, storage_dir: Path | None, destination: Path) -> tuple[Path, Manifest]:
    """Back up the database and the file storage's directory into a new directory under ``destination``; return it
    and its manifest. ``storage_dir`` None: files live in a bucket (its versioning or replication backs them up)."""
    now = datetime.now(UTC)
    final, work = await asyncio.to_thread(_prepare, destination, f"cartwright-backup-{now:%Y%m%dT%H%M%SZ}")
    try:
        if _kind(database_url) == "sqlite":
            database_file = work / SQLITE_FILE
            revision, counts = await asyncio.to_thread(_sqlite_backup, _sqlite_path(database_url), database_file)
        else:
            database_file = work / PG_DUMP_FILE
            revision, counts = await _pg_backup(database_url, database_file)
        files = await asyncio.to_thread(_copy_files, storage_dir, work / FILES_DIR)
        manifest = Manifest(
            created_at=now.isoformat(),
            database=_kind(database_url),
            database_file=_entry(work, database_file),
            alembic_revision=revision,
            row_counts=counts,
            files=files,
        )
        (work / MANIFEST).write_text(manifest.to_json())
        work.rename(final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final, manifest


def _prepare(destination: Path, name: str) -> tuple[Path, Path]:
    """The backup's final path and the ``.partial`` directory it is written in first."""
    destination.mkdir(parents=True, exist_ok=True)
    final = destination / name
    if final.exists():
        final = destination / f"{name}-{secrets.token_hex(2)}"
    work = destination / f".{final.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    return final, work


def _sqlite_backup(source: Path, target: Path) -> tuple[str | None, dict[str, int]]:
    if not source.exists():
        raise BackupError(f"The SQLite database {source} does not exist.")
    _sqlite_copy(source, target)
    conn = sqlite3.connect(target)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
        tables = _sqlite_tables(conn)
        return _sqlite_revision(conn, tables), _sqlite_counts(conn, tables)
    finally:
        conn.close()


async def _pg_backup(database_url: str, target: Path) -> tuple[str | None, dict[str, int]]:
    pg_dump = find_pg_tool("pg_dump")
    async with _connect(database_url, isolation_level="REPEATABLE READ") as conn:
        # One snapshot for the dump and the counts: the manifest describes exactly what was dumped.
        snapshot = str(await conn.scalar(text("SELECT pg_export_snapshot()")))
        args = [pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={target}"]
        await _run(args, _libpq_env(make_url(database_url)))
        tables = await _pg_tables(conn)
        counts = await _counts(conn, tables)
        revision = await _revision(conn, tables)
        await conn.rollback()
    return revision, counts


def _copy_files(storage_dir: Path | None, target: Path) -> list[FileEntry]:
    target.mkdir()
    if storage_dir is None or not storage_dir.is_dir():
        return []
    entries = []
    for path in sorted(p for p in storage_dir.rglob("*") if p.is_file() and not p.is_symlink()):
        copy = target / path.relative_to(storage_dir)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
        entries.append(_entry(target, copy))
    return entries


# --- a bucket as the place backups are kept ---------------------------------------------------------------------


def backup_store(url: str, settings: Settings) -> S3Storage:
    """``s3://bucket/prefix``: the bucket (at ``STORAGE_S3_ENDPOINT_URL``, in ``STORAGE_S3_REGION``, with the AWS_*
    credentials) and the prefix backups go under, or a backup is read from."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    if not bucket:
        raise BackupError(f"{url} names no bucket: write s3://bucket/prefix.")
    try:
        return S3Storage(
            bucket,
            prefix.strip("/"),
            endpoint_url=settings.storage_s3_endpoint_url,
            region=settings.storage_s3_region,
        )
    except RuntimeError as exc:  # obstore missing
        raise BackupError(str(exc)) from exc


def _files_of(backup: Path) -> list[Path]:
    return sorted(p for p in backup.rglob("*") if p.is_file() and p.name != MANIFEST)


async def upload_backup(backup: Path, store: S3Storage) -> str:
    """Copy a finished backup directory into the bucket, the manifest last; return its ``s3://`` address."""
    name = backup.name
    try:
        for path in await asyncio.to_thread(_files_of, backup):
            await store.put_path(f"{name}/{path.relative_to(backup).as_posix()}", path)
        await store.put_path(f"{name}/{MANIFEST}", backup / MANIFEST)
    except StorageUnavailableError as exc:
        raise BackupError(f"The upload to {store.url} failed ({exc}); the backup is incomplete there.") from exc
    return f"{store.url}/{name}"


async def download_backup(store: S3Storage, into: Path) -> Path:
    """Copy the backup at the store's prefix into the directory ``into`` (made here) and return it: the manifest,
    then the database file and every file it lists. Checking them is verify's and restore's job."""
    await asyncio.to_thread(into.mkdir, parents=True)
    try:
        try:
            (into / MANIFEST).write_bytes(await store.read(MANIFEST))
        except ObjectMissingError as exc:
            raise BackupError(
                f"{store.url} is not a backup: it has no {MANIFEST} (not a backup's address, or an upload cut short)."
            ) from exc
        manifest = Manifest.read(into)
        wanted = [manifest.database_file.path, *(f"{FILES_DIR}/{f.path}" for f in manifest.files)]
        for key in wanted:
            target = into / key
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                stored = await store.open(key)
            except ObjectMissingError:
                continue  # verify names it; restore refuses the backup
            assert stored.chunks is not None  # a bucket's object streams
            with target.open("wb") as out:
                async for chunk in stored.chunks:
                    out.write(chunk)
    except StorageUnavailableError as exc:
        raise BackupError(f"{store.url} could not be read ({exc}).") from exc
    return into


# --- verify ----------------------------------------------------------------------------------------------------


def _check_files(backup: Path, manifest: Manifest, report: VerifyReport) -> None:
    root = backup / FILES_DIR
    for entry in manifest.files:
        path = root / entry.path
        if not path.is_file():
            report.problems.append(f"file {entry.path}: missing from the backup")
        elif path.stat().st_size != entry.size:
            report.problems.append(f"file {entry.path}: {path.stat().st_size} bytes, the manifest says {entry.size}")
        elif sha256_of(path) != entry.sha256:
            report.problems.append(f"file {entry.path}: checksum mismatch (the file is damaged)")
    listed = {e.path for e in manifest.files}
    if root.is_dir():
        extra = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        report.problems.extend(f"file {p}: not in the manifest" for p in extra if p not in listed)
    report.checked.append(f"{len(manifest.files)} files: sizes and SHA-256")


def _compare_counts(expected: dict[str, int], found: dict[str, int], report: VerifyReport) -> None:
    for table, count in sorted(expected.items()):
        if table not in found:
            report.problems.append(f"table {table}: missing after restore")
        elif found[table] != count:
            report.problems.append(f"table {table}: {found[table]} rows after restore, the manifest says {count}")
    report.checked.append(f"{len(expected)} tables: row counts ({sum(expected.values())} rows)")


async def verify_backup(backup: Path, database_url: str) -> VerifyReport:
    """Restore the backup into a scratch database and check it against its manifest; nothing else is touched.

    ``database_url`` only says where a PostgreSQL scratch database may be created (next to it, then dropped).
    """
    report = VerifyReport(backup)
    try:
        manifest = Manifest.read(backup)
    except BackupError as exc:
        report.problems.append(str(exc))
        return report
    report.manifest = manifest
    dump = backup / manifest.database_file.path
    database_ok = dump.is_file() and sha256_of(dump) == manifest.database_file.sha256
    if not dump.is_file():
        report.problems.append(f"database {manifest.database_file.path}: missing from the backup")
    elif not database_ok:
        report.problems.append(f"database {manifest.database_file.path}: checksum mismatch (the dump is damaged)")
    else:
        report.checked.append(f"database {manifest.database_file.path}: SHA-256")
    if dump.is_file():
        # Restored even when the checksum failed: the report then also says whether the damage is fatal.
        try:
            if manifest.database == "sqlite":
                await asyncio.to_thread(_verify_sqlite, dump, manifest, report)
            else:
                await _verify_pg(dump, manifest, database_url, report)
        except BackupError as exc:
            report.problems.append(f"database: restore failed: {exc}")
    await asyncio.to_thread(_check_files, backup, manifest, report)
    return report


def _verify_sqlite(dump: Path, manifest: Manifest, report: VerifyReport) -> None:
    with tempfile.TemporaryDirectory(prefix="cartwright-verify-") as scratch:
        copy = Path(scratch) / "restore.sqlite3"
        try:
            _sqlite_copy(dump, copy)
            conn = sqlite3.connect(copy)
            try:
                problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
                tables = _sqlite_tables(conn)
                found = _sqlite_counts(conn, tables)
            finally:
                conn.close()
        except sqlite3.DatabaseError as exc:
            raise BackupError(str(exc)) from exc
    if problems != ["ok"]:
        report.problems.extend(f"database: integrity_check: {p}" for p in problems[:10])
    else:
        report.checked.append("database: restored into a scratch file, PRAGMA integrity_check ok")
    _compare_counts(manifest.row_counts, found, report)


async def _verify_pg(dump: Path, manifest: Manifest, database_url: str, report: VerifyReport) -> None:
    if manifest.database != "postgresql":
        raise BackupError(f"unknown database kind {manifest.database!r} in the manifest")
    if _kind(database_url) != "postgresql":
        raise BackupError(
            "a PostgreSQL backup is verified next to a PostgreSQL DATABASE_URL (for its scratch database)"
        )
    url = make_url(database_url)
    scratch = f"{url.database or 'cartwright'}_verify_{secrets.token_hex(4)}"[:63]
    async with _connect(database_url, isolation_level="AUTOCOMMIT") as admin:
        try:
            await admin.execute(text(f"CREATE DATABASE {_quote(scratch)}"))
        except Exception as exc:  # the role may lack CREATEDB: say so rather than a traceback
            raise BackupError(f"cannot create the scratch database {scratch}: {exc}") from exc
        try:
            scratch_url = url.set(database=scratch)
            await _pg_restore(dump, scratch_url)
            async with _connect(scratch_url.render_as_string(hide_password=False)) as conn:
                found = await _counts(conn, await _pg_tables(conn))
            report.checked.append(f"database: pg_restore into scratch database {scratch} succeeded")
            _compare_counts(manifest.row_counts, found, report)
        finally:
            await admin.execute(text(f"DROP DATABASE IF EXISTS {_quote(scratch)} WITH (FORCE)"))


async def _pg_restore(dump: Path, url: URL) -> None:
    pg_restore = find_pg_tool("pg_restore")
    # One transaction: a failed restore leaves the database as empty as it was. Objects belong to the restoring role.
    args = [pg_restore, "--exit-on-error", "--single-transaction", "--no-owner", "--no-privileges"]
    await _run([*args, f"--dbname={url.database}", str(dump)], _libpq_env(url))


# --- restore ---------------------------------------------------------------------------------------------------


async def database_tables(database_url: str) -> list[str]:
    """The tables the database holds now (empty list: an empty database, fit for a restore)."""
    if _kind(database_url) == "sqlite":
        path = _sqlite_path(database_url)
        if not path.exists():
            return []
        lite = sqlite3.connect(path)
        try:
            return _sqlite_tables(lite)
        finally:
            lite.close()
    async with _connect(database_url) as conn:
        return await _pg_tables(conn)


async def restore_backup(
    backup: Path, database_url: str, storage_dir: Path | None, redis: Redis | None, *, force: bool = False
) -> Manifest:
    """Restore into an empty database (``force``: empty it first) and copy the files back into ``storage_dir``
    (None: the files are in a bucket, which keeps them itself)."""
    manifest = Manifest.read(backup)
    kind = _kind(database_url)
    if manifest.database != kind:
        raise BackupError(f"This is a {manifest.database} backup; DATABASE_URL points at {kind}.")
    dump = backup / manifest.database_file.path
    if not dump.is_file() or sha256_of(dump) != manifest.database_file.sha256:
        raise BackupError(f"{dump} is missing or damaged (checksum mismatch): run `cartwright backup verify`.")
    await asyncio.to_thread(_check_files_restorable, backup, manifest)
    tables = await database_tables(database_url)
    if tables and not force:
        raise BackupError(
            f"The database is not empty ({len(tables)} tables): restore into an empty database, "
            "or pass --force to delete everything in it first."
        )
    if kind == "sqlite":
        # The backup API again (not a file copy): it takes SQLite's locks and writes over a WAL database safely.
        target = _sqlite_path(database_url)
        target.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(_sqlite_copy, dump, target)
    else:
        if tables:
            await _pg_empty(database_url)
        await _pg_restore(dump, make_url(database_url))
    if storage_dir is not None:
        await asyncio.to_thread(_restore_files, backup, manifest, storage_dir)
    if redis is not None:
        # Redis remembers how far the catch-up got *after* the backup: forget it, so the next run scans from the
        # newest event the restored database holds and stores every event since. Cached pages are stale too.
        await redis.delete(CATCH_UP_STATE_KEY)
        await invalidate_catalog(redis)
    return manifest


async def _pg_empty(database_url: str) -> None:
    async with _connect(database_url) as conn:
        for table in await _pg_tables(conn):
            await conn.execute(text(f"DROP TABLE IF EXISTS {_quote(table)} CASCADE"))
        types = await conn.scalars(
            text(
                "SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                "WHERE n.nspname = current_schema() AND t.typtype = 'e'"
            )
        )
        for name in list(types):
            await conn.execute(text(f"DROP TYPE IF EXISTS {_quote(str(name))} CASCADE"))
        await conn.commit()


def _check_files_restorable(backup: Path, manifest: Manifest) -> None:
    # Before the database is touched: half a restore (the database without its files) is worse than none.
    for entry in manifest.files:
        source = backup / FILES_DIR / entry.path
        if not source.is_file() or sha256_of(source) != entry.sha256:
            raise BackupError(f"file {entry.path} is missing or damaged in the backup: run `cartwright backup verify`.")


def _restore_files(backup: Path, manifest: Manifest, storage_dir: Path) -> None:
    root = backup / FILES_DIR
    for entry in manifest.files:
        target = storage_dir / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / entry.path, target)
