"""Pure functions: money, passwords, permissions, listing queries, SMTP URLs, redirect targets."""

from __future__ import annotations

import pytest

from app.domain.accounts.controllers import safe_next
from app.domain.catalog.services import ProductQuery, SortOrder
from app.lib.email import parse_smtp_url
from app.lib.email_address import email_problem, normalise_email
from app.lib.money import format_money, parse_money
from app.lib.passwords import hash_password, needs_rehash, password_problem, verify_password
from app.lib.permissions import Access, Resource, Role, can, is_staff
from app.lib.settings import normalise_database_url


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (0, "CAD", "$0.00 CAD"),
        (3900, "CAD", "$39.00 CAD"),
        (123456789, "CAD", "$1,234,567.89 CAD"),
        (-550, "CAD", "-$5.50 CAD"),
        (1000, "JPY", "¥1,000 JPY"),
        (1999, "CHF", "19.99 CHF"),
    ],
)
def test_format_money(amount: int, currency: str, expected: str) -> None:
    assert format_money(amount, currency) == expected


def test_parse_money_round_trips_and_rejects_fractions_of_a_cent() -> None:
    assert parse_money("39.00") == 3900
    assert parse_money("$1,234.5") == 123450
    assert parse_money("1000", "JPY") == 1000
    with pytest.raises(ValueError, match="decimal places"):
        parse_money("1.005")


def test_password_policy() -> None:
    assert password_problem("short") == "Use at least 8 characters."
    assert password_problem("x" * 129) == "Use at most 128 characters."
    assert password_problem("Password123") is not None  # common list is case-insensitive
    assert password_problem("ann@example.com", email="ANN@example.com") == "Your password can't be your email address."
    assert password_problem("correct horse battery") is None
    assert password_problem("é" * 8) is None  # no composition rules; any characters


def test_argon2id_hash_and_verify() -> None:
    hashed = hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct horse battery")
    assert not verify_password(hashed, "wrong")
    assert not verify_password(None, "anything")  # unknown user: still does the work, still false
    assert not verify_password("not-a-hash", "anything")
    assert not needs_rehash(hashed)


def test_permissions() -> None:
    assert can(Role.ADMIN, Resource.SYSTEM, Access.FULL)
    assert not can(Role.SUPPORT, Resource.SYSTEM, Access.READ)
    assert can(Role.SUPPORT, Resource.PRODUCTS, Access.READ)
    assert not can(Role.SUPPORT, Resource.PRODUCTS, Access.FULL)
    assert can(Role.CUSTOMER, Resource.ORDERS, Access.OWN)
    assert not can(Role.CUSTOMER, Resource.ORDERS, Access.READ)
    assert not can(None, Resource.PRODUCTS, Access.OWN)
    assert can(Role.SUPPORT, Resource.ANALYTICS, Access.LIMITED)
    assert not can(Role.SUPPORT, Resource.ANALYTICS, Access.FULL)  # no revenue figures
    assert is_staff("support") and is_staff("admin") and not is_staff("customer") and not is_staff(None)


def test_product_query_is_lenient_and_links_leave_out_defaults() -> None:
    query = ProductQuery.parse(category=" fonts ", q="  maple ", sort="bogus", page="-3")
    assert query == ProductQuery(category="fonts", q="maple", sort=SortOrder.NEWEST, page=1)
    assert query.params(page=2) == {"category": "fonts", "q": "maple", "page": "2"}
    assert ProductQuery.parse(category=None, q=None, sort="price_desc", page="999999").page == 10_000
    assert ProductQuery().params() == {}


def test_smtp_urls() -> None:
    plain = parse_smtp_url("smtp://user%40x:p%3Ass@mail.example:2525")
    assert (plain.hostname, plain.port, plain.username, plain.password, plain.use_tls) == (
        "mail.example",
        2525,
        "user@x",
        "p:ss",
        False,
    )
    tls = parse_smtp_url("smtps://mail.example")
    assert tls.port == 465 and tls.use_tls
    with pytest.raises(ValueError, match="SMTP_URL"):
        parse_smtp_url("http://mail.example")


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/products?page=2", "/products?page=2"),
        ("https://evil.example/", "/"),
        ("//evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
        (None, "/"),
        ("products", "/"),
    ],
)
def test_safe_next(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_email_rules_and_database_urls() -> None:
    assert normalise_email("  Ann@Example.COM ") == "ann@example.com"
    assert email_problem("") == "Enter your email address."
    assert email_problem("ann@example") is not None and email_problem("ann@example.com") is None
    # Issue #12 hole 1: characters that break out of a JS string are not part of any address we accept.
    assert email_problem("x');document.title='pwned';('@e.co") == "Enter an email address like name@example.com."
    assert email_problem('"quoted local"@example.com') is not None
    assert email_problem("a" * 310 + "@example.com") is not None
    assert normalise_email("Ann@BÜCHER.example") == "ann@bücher.example"  # IDNA domain, normalised
    assert email_problem("admin@cartwright.test") is None  # the seed accounts' reserved domain is allowed
    assert normalise_database_url("postgres://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalise_database_url("postgresql://u@h/db") == "postgresql+asyncpg://u@h/db"
    assert normalise_database_url("sqlite:///x.db") == "sqlite+aiosqlite:///x.db"


def test_client_ip_trusts_forwarded_for_only_from_our_proxies() -> None:
    from app.lib.client_ip import client_ip, parse_networks

    proxies = parse_networks("10.0.0.0/8, 192.168.1.5")
    assert client_ip("203.0.113.7", "1.2.3.4", proxies) == "203.0.113.7"  # not from a proxy: header ignored
    assert client_ip("10.0.0.2", "198.51.100.9", proxies) == "198.51.100.9"
    # A client cannot spoof by prepending: we take the first untrusted hop from the right.
    assert client_ip("10.0.0.2", "6.6.6.6, 198.51.100.9, 192.168.1.5", proxies) == "198.51.100.9"
    assert client_ip("10.0.0.2", None, proxies) == "10.0.0.2"
    assert client_ip(None, None, ()) == "unknown"
