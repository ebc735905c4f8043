"""File storage for purchased files and uploaded covers: a local directory (the default) or an S3-compatible bucket.

``STORAGE_URL`` chooses: ``file:///srv/cartwright/uploads`` (the default is ``CARTWRIGHT_VAR_DIR/uploads``) or
``s3://bucket/prefix``. Several web nodes need the bucket: a file uploaded through one node must be downloadable
through the others. Everything above this module speaks in storage *keys* (``products/<id>/<token>/guide.pdf``,
``covers/<id>/<token>/400.webp``) and never in paths or URLs.

Keys come from the database (``Product.digital_file``), so they are treated as untrusted: a key that is absolute,
climbs out with ``..`` or (on disk) escapes through a symlink is refused rather than served.

The S3 backend uses obstore (Rust's ``object_store`` behind an async Python API): native asyncio, streamed reads,
multipart uploads, and the standard AWS credential chain (environment, web identity, container and instance
roles) without pinning botocore. Credentials never appear in ``STORAGE_URL`` or in our settings.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Literal, Protocol
from urllib.parse import quote

from litestar import Response
from litestar.response import File, Stream

from app.lib.settings import BASE_DIR, Settings

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config, S3Store

STATIC_DIR = BASE_DIR / "static"
STREAM_CHUNK = 256 * 1024  # what a streamed download hands the ASGI server at a time


class StorageKeyError(ValueError):
    """The key does not name a file inside the storage."""


class ObjectMissingError(LookupError):
    """No object is stored under that key (deleted, never uploaded, or storage pointed somewhere else)."""


class StorageUnavailableError(RuntimeError):
    """The storage did not answer (the bucket is unreachable, refused our credentials, or timed out)."""


class FileTooLargeError(ValueError):
    """The upload went past its size limit; nothing was kept."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    key: str
    size: int
    sha256: str


def check_key(key: str) -> PurePosixPath:
    """``key`` as a relative POSIX path; ``StorageKeyError`` for anything that could name something else."""
    if not key or "\x00" in key or "\\" in key:
        raise StorageKeyError(key)
    relative = PurePosixPath(key)
    if relative.is_absolute() or ".." in relative.parts or "." in key.split("/") or "" in key.split("/"):
        raise StorageKeyError(key)
    return relative


def resolve_storage_key(storage_dir: Path, key: str) -> Path:
    """Return the absolute path for ``key`` under ``storage_dir``; raise ``StorageKeyError`` if it would escape.

    The file need not exist: callers check that separately, so a missing file and a hostile key stay distinct.
    """
    relative = check_key(key)
    root = storage_dir.resolve()
    # Paid files must never be reachable through the public static route, whatever STORAGE_URL says.
    if root == STATIC_DIR or root.is_relative_to(STATIC_DIR):
        msg = f"the storage dir {root} is inside static/: refusing to serve purchased files from a public directory"
        raise StorageKeyError(msg)
    path = (root / relative).resolve()  # follows symlinks, so a link pointing outside is caught below
    if path == root or not path.is_relative_to(root):
        raise StorageKeyError(key)
    return path


@dataclass(frozen=True)
class StoredObject:
    """An object opened for sending: a local file (served with sendfile and ranges) or a remote stream."""

    key: str
    size: int
    path: Path | None = None
    stat: os.stat_result | None = None
    chunks: AsyncIterator[bytes] | None = None


def stored_response(
    stored: StoredObject,
    *,
    filename: str,
    media_type: str,
    disposition: Literal["attachment", "inline"],
    headers: dict[str, str],
) -> Response[Any]:
    """The response that sends ``stored``: the same headers whichever backend holds it."""
    if stored.path is not None:
        return File(
            path=stored.path,
            filename=filename,
            media_type=media_type,
            stat_result=stored.stat,
            content_disposition_type=disposition,
            headers=headers,
        )
    assert stored.chunks is not None
    quoted = quote(filename)
    name = f'filename="{filename}"' if quoted == filename else f"filename*=utf-8''{quoted}"
    return Stream(
        stored.chunks,
        media_type=media_type,
        headers={**headers, "Content-Length": str(stored.size), "Content-Disposition": f"{disposition}; {name}"},
    )


class UploadWriter(Protocol):
    """One upload being written under ``key``: ``write`` each chunk (counted, hashed), then ``finish`` or ``abort``.
    Nothing is visible under ``key`` until ``finish`` returns."""

    key: str
    size: int

    def write(self, chunk: bytes) -> None: ...

    async def finish(self) -> StoredFile: ...

    def abort(self) -> None: ...


class Storage(Protocol):
    """Where product files and covers live. ``local_dir`` is the directory for the file backend, else None."""

    url: str
    local_dir: Path | None

    def writer(self, key: str, *, max_bytes: int, content_type: str = "") -> UploadWriter: ...

    async def put(self, key: str, data: bytes, *, content_type: str = "") -> None: ...

    async def exists(self, key: str) -> bool: ...

    async def open(self, key: str) -> StoredObject: ...

    async def read(self, key: str) -> bytes: ...

    async def remove(self, key: str, *, folder: bool = False) -> None: ...


# --- local directory ----------------------------------------------------------------------------------------------


class StorageWriter:
    """Writes one upload under ``key`` chunk by chunk, hashing as it goes, into a temporary file next to the final
    one; ``finish`` fsyncs and renames it into place (atomic on one filesystem), ``abort`` removes it. Whatever was
    stored under another key (the product's previous file) is untouched until the caller switches over."""

    def __init__(self, storage_dir: Path, key: str, *, max_bytes: int) -> None:
        self.key = key
        self.path = resolve_storage_key(storage_dir, key)
        self.max_bytes = max_bytes
        self.size = 0
        self._hash = hashlib.sha256()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.part")
        self._file: BinaryIO | None = self._tmp.open("xb")

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise FileTooLargeError(self.key)
        self._hash.update(chunk)
        # Plain blocking writes: each lands in the page cache (a chunk is at most the ASGI server's read size).
        self._file.write(chunk)

    def finish_sync(self) -> StoredFile:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self._tmp.replace(self.path)  # atomic within one filesystem: readers see the old file or the new one
        return StoredFile(key=self.key, size=self.size, sha256=self._hash.hexdigest())

    async def finish(self) -> StoredFile:
        return await asyncio.to_thread(self.finish_sync)

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._tmp.unlink(missing_ok=True)


def remove_stored(storage_dir: Path, key: str, *, folder: bool = False) -> None:
    """Delete a stored file (or the folder holding it) that nothing references any more; best effort."""
    try:
        path = resolve_storage_key(storage_dir, key)
    except StorageKeyError:
        return
    target = path.parent if folder else path
    if target.resolve() == storage_dir.resolve():
        return
    if folder:
        shutil.rmtree(target, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class LocalStorage:
    """Files in one directory on this machine: fine for one web node (``make run``, a single server)."""

    def __init__(self, directory: Path) -> None:
        self.local_dir: Path | None = directory
        self.directory = directory
        self.url = f"file://{directory}"

    def writer(self, key: str, *, max_bytes: int, content_type: str = "") -> UploadWriter:
        return StorageWriter(self.directory, key, max_bytes=max_bytes)

    async def put(self, key: str, data: bytes, *, content_type: str = "") -> None:
        writer = StorageWriter(self.directory, key, max_bytes=len(data))
        writer.write(data)
        await writer.finish()

    def _file(self, key: str) -> tuple[Path, os.stat_result]:
        path = resolve_storage_key(self.directory, key)
        try:
            stat = path.stat()
        except OSError as exc:
            raise ObjectMissingError(key) from exc
        if not path.is_file():
            raise ObjectMissingError(key)
        return path, stat

    async def exists(self, key: str) -> bool:
        try:
            self._file(key)
        except ObjectMissingError:
            return False
        return True

    async def open(self, key: str) -> StoredObject:
        path, stat = self._file(key)
        return StoredObject(key=key, size=stat.st_size, path=path, stat=stat)

    async def read(self, key: str) -> bytes:
        path, _ = self._file(key)
        return await asyncio.to_thread(path.read_bytes)

    async def remove(self, key: str, *, folder: bool = False) -> None:
        await asyncio.to_thread(remove_stored, self.directory, key, folder=folder)


# --- S3-compatible bucket -----------------------------------------------------------------------------------------


class S3Writer:
    """Spools one upload to a local temporary file (counted and hashed on the way), then sends it to the bucket in
    ``finish`` (a multipart upload above 5 MB). A cut-short or refused upload never reaches the bucket, so no
    half-finished multipart upload is left behind; the object appears whole, under a key nobody references yet."""

    def __init__(self, storage: S3Storage, key: str, *, max_bytes: int, content_type: str) -> None:
        check_key(key)
        self.key = key
        self.size = 0
        self.max_bytes = max_bytes
        self.content_type = content_type
        self._storage = storage
        self._hash = hashlib.sha256()
        self._file: IO[bytes] = tempfile.NamedTemporaryFile(prefix="cartwright-upload-", delete=False)  # noqa: SIM115
        self._path = Path(self._file.name)

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            self.abort()
            raise FileTooLargeError(self.key)
        self._hash.update(chunk)
        self._file.write(chunk)

    async def finish(self) -> StoredFile:
        self._file.close()
        try:
            await self._storage.put_path(self.key, self._path, content_type=self.content_type)
        finally:
            self._path.unlink(missing_ok=True)
        return StoredFile(key=self.key, size=self.size, sha256=self._hash.hexdigest())

    def abort(self) -> None:
        self._file.close()
        self._path.unlink(missing_ok=True)


class S3Storage:
    """Objects under ``prefix`` in an S3-compatible bucket (AWS S3, MinIO, R2, moto…), shared by every node."""

    def __init__(self, bucket: str, prefix: str, *, endpoint_url: str = "", region: str = "") -> None:
        try:
            from obstore.store import S3Store
        except ImportError as exc:  # pragma: no cover - the image and the test extra install it
            msg = "STORAGE_URL is s3://… but obstore is not installed: pip install 'cartwright[s3]'"
            raise RuntimeError(msg) from exc
        self.local_dir: Path | None = None
        self.url = f"s3://{bucket}/{prefix}".rstrip("/")
        config: S3Config = {}
        client_options: ClientConfig = {"timeout": "120s", "connect_timeout": "5s"}
        if endpoint_url:
            # MinIO, moto and most S3-compatibles answer path-style requests (bucket in the path, not the host).
            config["endpoint"] = endpoint_url
            config["virtual_hosted_style_request"] = False
            client_options["allow_http"] = endpoint_url.startswith("http://")
        if region:
            config["region"] = region
        # A download waits on this: a few quick retries, then the "isn't available right now" page, not minutes of
        # the client's default backoff (10 retries within 3 minutes).
        retry: RetryConfig = {
            "max_retries": 2,
            "retry_timeout": timedelta(seconds=10),
            "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=2), "base": 2},
        }
        # Everything not given here (credentials above all) comes from the standard AWS_* environment variables,
        # web identity, or the container/instance role, as the AWS SDKs do.
        self.store: S3Store = S3Store(
            bucket, prefix=prefix or None, config=config, client_options=client_options, retry_config=retry
        )

    def writer(self, key: str, *, max_bytes: int, content_type: str = "") -> UploadWriter:
        return S3Writer(self, key, max_bytes=max_bytes, content_type=content_type)

    def _attributes(self, content_type: str) -> dict[str, str] | None:
        return {"Content-Type": content_type} if content_type else None

    async def put(self, key: str, data: bytes, *, content_type: str = "") -> None:
        import obstore

        check_key(key)
        try:
            await obstore.put_async(self.store, key, data, attributes=self._attributes(content_type))
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise StorageUnavailableError(f"{self.url}: {exc}") from exc

    async def put_path(self, key: str, path: Path, *, content_type: str = "") -> None:
        import obstore

        check_key(key)
        try:
            await obstore.put_async(self.store, key, path, attributes=self._attributes(content_type))
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise StorageUnavailableError(f"{self.url}: {exc}") from exc

    async def exists(self, key: str) -> bool:
        import obstore

        check_key(key)
        try:
            await obstore.head_async(self.store, key)
        except FileNotFoundError:
            return False
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise StorageUnavailableError(f"{self.url}: {exc}") from exc
        return True

    async def open(self, key: str) -> StoredObject:
        """Start the GET (the object's size is known once its headers arrive); the body streams as it is sent."""
        import obstore

        check_key(key)
        try:
            result = await obstore.get_async(self.store, key)
        except FileNotFoundError as exc:
            raise ObjectMissingError(key) from exc
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise StorageUnavailableError(f"{self.url}: {exc}") from exc

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in result.stream(min_chunk_size=STREAM_CHUNK):
                yield bytes(chunk)

        return StoredObject(key=key, size=int(result.meta["size"]), chunks=chunks())

    async def read(self, key: str) -> bytes:
        import obstore

        check_key(key)
        try:
            result = await obstore.get_async(self.store, key)
        except FileNotFoundError as exc:
            raise ObjectMissingError(key) from exc
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise StorageUnavailableError(f"{self.url}: {exc}") from exc
        return bytes(await result.bytes_async())

    async def remove(self, key: str, *, folder: bool = False) -> None:
        """Delete the object, or with ``folder`` every object beside it under its parent "folder"; best effort."""
        import obstore

        try:
            relative = check_key(key)
        except StorageKeyError:
            return
        if not folder:
            await obstore.delete_async(self.store, key)
            return
        parent = str(relative.parent)
        if parent in {"", "."}:
            return  # never a whole top-level area
        keys = [meta["path"] async for batch in obstore.list(self.store, prefix=parent + "/") for meta in batch]
        if keys:
            await obstore.delete_async(self.store, keys)


def build_storage(settings: Settings) -> Storage:
    """The storage ``settings.storage_url`` names."""
    scheme, _, rest = settings.storage_url.partition("://")
    if scheme == "s3":
        bucket, _, prefix = rest.partition("/")
        return S3Storage(
            bucket,
            prefix.strip("/"),
            endpoint_url=settings.storage_s3_endpoint_url,
            region=settings.storage_s3_region,
        )
    return LocalStorage(settings.storage_dir)
