"""Static files: fingerprinted URLs for templates, and the bytes (with their gzip/brotli forms) held in memory.

``static_url("js/app.js")`` is ``/static/js/app.<hash>.js``: the hash is of the file's content, so a changed file
gets a new URL and the old one may be cached for a year (``immutable``). The plain path (``/static/js/app.js``)
still answers, with a short cache, for anything that cannot use the helper (an email, an old page).

The files are few and small: they are read once per process, hashed, and compressed ahead of time (text types
only: an image or a font is compressed already), so serving one is a dictionary lookup.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import brotli  # type: ignore[import-untyped,import-not-found,unused-ignore]

from app.lib.settings import BASE_DIR

STATIC_DIR = BASE_DIR / "static"
STATIC_PREFIX = "/static/"
IMMUTABLE = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"  # the unfingerprinted path: a deploy shows within minutes
_COMPRESSIBLE = ("text/", "application/javascript", "image/svg+xml", "application/json")
_MIN_COMPRESS = 256
_HASH_LEN = 10


@dataclass(frozen=True)
class Asset:
    path: str  # relative to static/, "/"-separated
    media_type: str
    body: bytes
    digest: str
    encoded: dict[str, bytes]  # "br"/"gzip" -> body, only when smaller

    @property
    def etag(self) -> str:
        return f'"{self.digest}"'

    @property
    def fingerprinted(self) -> str:
        stem, dot, ext = self.path.rpartition(".")
        return f"{stem}.{self.digest}.{ext}" if dot else f"{self.path}.{self.digest}"


def _media_type(path: str) -> str:
    if path.endswith(".js"):
        return "text/javascript; charset=utf-8"
    guessed = mimetypes.guess_type(path)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def _load(file: Path, root: Path) -> Asset:
    body = file.read_bytes()
    rel = file.relative_to(root).as_posix()
    media_type = _media_type(rel)
    encoded: dict[str, bytes] = {}
    if len(body) >= _MIN_COMPRESS and media_type.startswith(_COMPRESSIBLE):
        encoded["br"] = brotli.compress(body, quality=11)
        encoded["gzip"] = gzip.compress(body, compresslevel=9, mtime=0)
        encoded = {name: data for name, data in encoded.items() if len(data) < len(body)}
    return Asset(rel, media_type, body, hashlib.sha256(body).hexdigest()[:_HASH_LEN], encoded)


class StaticAssets:
    def __init__(self, root: Path = STATIC_DIR) -> None:
        files = sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
        assets = [_load(p, root) for p in files]
        self.by_path = {a.path: a for a in assets}
        self.by_fingerprint = {a.fingerprinted: a for a in assets}

    def url(self, path: str) -> str:
        """The fingerprinted URL of ``path`` (relative to static/; a leading / is fine). Unknown files keep their
        plain URL, so a typo shows as a 404 in the browser rather than a template error."""
        rel = path.lstrip("/")
        asset = self.by_path.get(rel)
        return f"{STATIC_PREFIX}{asset.fingerprinted if asset else rel}"

    def find(self, path: str) -> tuple[Asset, bool] | None:
        """The asset for a request path under /static/, and whether the URL was the fingerprinted one."""
        rel = path.lstrip("/")
        if (asset := self.by_fingerprint.get(rel)) is not None:
            return asset, True
        if (asset := self.by_path.get(rel)) is not None:
            return asset, False
        return None

    def digest(self) -> str:
        """One hash for the whole set: changes whenever any file does (part of page ETags)."""
        return hashlib.sha256("".join(sorted(a.digest for a in self.by_path.values())).encode()).hexdigest()[:12]


@lru_cache(maxsize=1)
def static_assets() -> StaticAssets:
    return StaticAssets()


def static_url(path: str) -> str:
    """Template helper: ``{{ static_url('js/app.js') }}``."""
    return static_assets().url(path)


def pick_encoding(asset: Asset, accept_encoding: str) -> str | None:
    accepted = {part.split(";")[0].strip().lower() for part in accept_encoding.split(",")}
    for name in ("br", "gzip"):
        if name in asset.encoded and name in accepted:
            return name
    return None
