"""Local file storage for purchased files: turn a storage key into a path that is strictly inside the storage dir.

Keys come from the database (``Product.digital_file``), so they are treated as untrusted: a key that is absolute,
climbs out with ``..`` or escapes through a symlink is refused rather than served.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from app.lib.settings import BASE_DIR

STATIC_DIR = BASE_DIR / "static"


class StorageKeyError(ValueError):
    """The key does not name a file inside the storage directory."""


def resolve_storage_key(storage_dir: Path, key: str) -> Path:
    """Return the absolute path for ``key`` under ``storage_dir``; raise ``StorageKeyError`` if it would escape.

    The file need not exist: callers check that separately, so a missing file and a hostile key stay distinct.
    """
    if not key or "\x00" in key or "\\" in key:
        raise StorageKeyError(key)
    relative = PurePosixPath(key)
    if relative.is_absolute() or ".." in relative.parts:
        raise StorageKeyError(key)
    root = storage_dir.resolve()
    # Paid files must never be reachable through the public static route, whatever STORAGE_DIR says.
    if root == STATIC_DIR or root.is_relative_to(STATIC_DIR):
        msg = f"STORAGE_DIR {root} is inside static/: refusing to serve purchased files from a public directory"
        raise StorageKeyError(msg)
    path = (root / relative).resolve()  # follows symlinks, so a link pointing outside is caught below
    if path == root or not path.is_relative_to(root):
        raise StorageKeyError(key)
    return path


class FileTooLargeError(ValueError):
    """The upload went past its size limit; nothing was kept."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    key: str
    size: int
    sha256: str


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

    def finish(self) -> StoredFile:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        self._tmp.replace(self.path)  # atomic within one filesystem: readers see the old file or the new one
        return StoredFile(key=self.key, size=self.size, sha256=self._hash.hexdigest())

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
