"""Cover images for the demo catalog: deterministic SVGs (category colour, product initials, a pattern).

Regenerate with ``python -m app.cli.covers``; the files are committed under static/img/covers/.
"""

from __future__ import annotations

import hashlib
from html import escape
from pathlib import Path

from app.cli.seed_data import CATEGORIES, PRODUCTS
from app.lib.settings import BASE_DIR

COVER_DIR = BASE_DIR / "static" / "img" / "covers"


def cover_svg(name: str, category: str, colour: str) -> str:
    digest = hashlib.sha256(name.encode()).digest()
    circles = "".join(
        f'<circle cx="{digest[i] * 2 % 480}" cy="{digest[i + 1] * 3 % 300}" r="{20 + digest[i + 2] % 70}" '
        f'fill="#fff" fill-opacity="0.{1 + digest[i + 3] % 2}"/>'
        for i in range(0, 24, 4)
    )
    words = name.replace("(", "").split()
    initials = "".join(w[0] for w in words if w[0].isalnum())[:2].upper()
    title = escape(name if len(name) <= 34 else name[:32] + "…")
    return (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 480 300" role="img" '
        f'aria-label="{escape(name)} cover">'
        f'<rect width="480" height="300" fill="{colour}"/>{circles}'
        f'<text x="36" y="150" font-family="Georgia, serif" font-size="96" font-weight="700" fill="#fff">'
        f"{escape(initials)}</text>"
        f'<text x="36" y="220" font-family="Helvetica, Arial, sans-serif" font-size="24" fill="#fff">{title}</text>'
        f'<text x="36" y="256" font-family="Helvetica, Arial, sans-serif" font-size="16" fill="#fff" '
        f'fill-opacity="0.8">{escape(category.upper())}</text></svg>\n'
    )


def write_covers(directory: Path = COVER_DIR) -> int:
    directory.mkdir(parents=True, exist_ok=True)
    categories = {c["slug"]: c for c in CATEGORIES}
    for product in PRODUCTS:
        category = categories[product["category"]]
        svg = cover_svg(product["name"], category["name"], category["colour"])
        (directory / f"{product['slug']}.svg").write_text(svg, encoding="utf-8")
    return len(PRODUCTS)


if __name__ == "__main__":
    write_covers()
