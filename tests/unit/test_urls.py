"""Issue #12 hole 3: the one same-site check for redirect targets that come from the client."""

from __future__ import annotations

import pytest

from app.domain.accounts.controllers import safe_next
from app.lib.urls import same_site_path

OFF_SITE = [
    "/\\evil.example",
    "/%5Cevil.example",
    "/%5cevil.example",
    "//evil.example",
    "///evil.example",
    "/%2F%2Fevil.example",
    "/%2f/evil.example",
    "%2F%2Fevil.example",
    "http:evil.example",
    "http://evil.example",
    "https://evil.example/",
    "HTTPS://evil.example",
    "javascript:alert(1)",
    " javascript:alert(1)",
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/evil.example",
    "\t//evil.example",
    "/products\x00",
    "products",
    "",
    None,
]


@pytest.mark.parametrize("target", OFF_SITE)
def test_anything_that_could_leave_the_site_falls_back(target: str | None) -> None:
    assert same_site_path(target, "/fallback") == "/fallback"
    assert safe_next(target) == "/"  # the login form's wrapper says the same


@pytest.mark.parametrize("target", ["/", "/products?page=2", "/account/orders/1#lines", "/search?q=a%2Fb"])
def test_paths_on_this_site_pass_unchanged(target: str) -> None:
    assert same_site_path(target) == target
