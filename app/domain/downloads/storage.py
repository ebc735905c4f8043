"""Local file storage for purchased files: turn a storage key into a path that is strictly inside the storage dir.

Keys come from the database (``Product.digital_file``), so they are treated as untrusted: a key that is absolute,
climbs out with ``..`` or escapes through a symlink is refused rather than served.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

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
