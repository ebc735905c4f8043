"""Product descriptions are Markdown, rendered safely: CommonMark with raw HTML off and links limited by scheme.

markdown-it-py escapes any HTML typed into a description (so ``<script>`` shows as text), and ``validateLink``
drops links and images whose target is not http, https or mailto (``javascript:``, ``data:``, ``vbscript:`` …):
the text stays, the link does not.
"""

from __future__ import annotations

from functools import lru_cache

from markdown_it import MarkdownIt
from markupsafe import Markup

ALLOWED_SCHEMES = ("http:", "https:", "mailto:")


def _validate_link(url: str) -> bool:
    # markdown-it has already normalised the URL (entities decoded, percent-encoded); compare case-insensitively
    # after stripping what browsers ignore before a scheme.
    target = "".join(ch for ch in url.strip().lower() if ch > " ")
    return target.startswith(ALLOWED_SCHEMES)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    parser = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    parser.validateLink = _validate_link  # type: ignore[method-assign]
    return parser


def render_markdown(text: str) -> Markup:
    """HTML for a product description; safe to insert into a page as is."""
    return Markup(_parser().render(text or ""))  # noqa: S704 - markdown-it escaped every raw HTML byte
