"""Cover images: checked by content (Pillow, not the file name), turned into WebP thumbnails, served publicly.

An upload is decoded by Pillow and refused unless it is a JPEG, PNG or WebP within the size limit and a sane
pixel count (a decompression bomb is refused too). Thumbnails 400 and 800 px wide are written into a fresh folder
``covers/<product id>/<token>/`` in storage (a directory or a bucket), which is only then recorded on the product:
the public URL changes with every upload, so it is cached as immutable. Only files named like a thumbnail inside
``covers/`` are ever served by the public route; purchased files live elsewhere in storage and stay private.
"""

from __future__ import annotations

import asyncio
import io
import re
import secrets
from typing import Any
from uuid import UUID

from PIL import Image, ImageOps, UnidentifiedImageError

from app.lib.static_assets import static_url
from app.lib.storage import Storage

COVER_ROUTE = "/media/covers"
THUMB_WIDTHS = (400, 800)
ACCEPTED_FORMATS = {"JPEG": "JPEG", "PNG": "PNG", "WEBP": "WebP"}
MAX_PIXELS = 40_000_000  # e.g. 8000 x 5000; more is a bomb or a mistake
_SERVED = re.compile(r"^[0-9a-f-]{36}/[A-Za-z0-9_-]{8,64}/(400|800)\.webp$")


class CoverError(ValueError):
    """The upload is not an image we accept; the message is safe to show."""


def make_thumbnails(data: bytes) -> dict[int, bytes]:
    """Check ``data`` and encode its WebP thumbnails, by width. CPU-bound: run it in a thread."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind = probe.format or ""
            width, height = probe.size
            probe.verify()  # catches truncated and corrupt files before a full decode
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise CoverError("That file isn't an image: upload a JPEG, PNG or WebP.") from exc
    if kind not in ACCEPTED_FORMATS:
        raise CoverError(f"{kind or 'That'} images aren't accepted: upload a JPEG, PNG or WebP.")
    if width * height > MAX_PIXELS:
        raise CoverError("That image has too many pixels: upload one under 40 megapixels.")
    thumbs: dict[int, bytes] = {}
    try:
        with Image.open(io.BytesIO(data)) as image:
            source: Any = ImageOps.exif_transpose(image)
            source = source.convert("RGBA" if source.mode in {"RGBA", "LA", "P"} else "RGB")
            for target in THUMB_WIDTHS:
                thumb = source.copy()
                thumb.thumbnail((target, 10 * target))  # the width decides; never upscaled
                out = io.BytesIO()
                thumb.save(out, "WEBP", quality=82, method=4)
                thumbs[target] = out.getvalue()
    except (OSError, ValueError) as exc:
        raise CoverError("That image could not be read: upload another JPEG, PNG or WebP.") from exc
    return thumbs


async def store_cover(storage: Storage, product_id: UUID, data: bytes) -> str:
    """Check and thumbnail ``data``, store the thumbnails in a fresh folder; returns the cover's key (the folder)."""
    thumbs = await asyncio.to_thread(make_thumbnails, data)
    key = f"covers/{product_id}/{secrets.token_urlsafe(12)}"
    for width, webp in thumbs.items():
        await storage.put(f"{key}/{width}.webp", webp, content_type="image/webp")
    return key


def cover_key(key: str) -> str | None:
    """The storage key for a public cover URL's ``<product id>/<token>/<width>.webp``; None for anything else."""
    return f"covers/{key}" if _SERVED.match(key) else None


def cover_src(product: Any, width: int = 400) -> str:
    """The image URL for a product's cover (a model or a cached view): the uploaded thumbnail when there is one,
    else the seeded static cover."""
    upload = getattr(product, "cover_upload", None)
    if upload:
        return f"{COVER_ROUTE}/{upload.removeprefix('covers/')}/{800 if width > 400 else 400}.webp"
    return static_url(product.cover_image)
