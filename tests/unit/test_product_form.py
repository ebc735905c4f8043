"""The back office's product and category forms: what a valid form saves, and the message each bad field shows."""

from __future__ import annotations

from dataclasses import asdict
from uuid import uuid4

import pytest

from app.db import models as m
from app.domain.catalog.admin_categories import CategoryForm, parse_category_form
from app.domain.catalog.admin_products import ProductForm, form_values, parse_product_form, slugify
from app.lib.exceptions import FormError

FONTS = m.Category(id=uuid4(), name="Fonts", slug="fonts")
VALID = {"name": "Maple Sans", "price": "12.50", "form_token": "tok"}


def parse(**changes: str) -> ProductForm:
    return parse_product_form({**VALID, **changes}, [FONTS])


def errors_of(**changes: str) -> dict[str, str]:
    with pytest.raises(FormError) as caught:
        parse(**changes)
    assert str(caught.value) == "Please correct the errors below."
    return caught.value.errors


def test_a_minimal_valid_product_gets_a_slug_unlimited_stock_and_five_downloads() -> None:
    assert asdict(parse()) == {
        "name": "Maple Sans",
        "slug": "maple-sans",
        "summary": "",
        "description": "",
        "price": 1250,
        "category_id": None,
        "stock": None,
        "seo_title": "",
        "seo_description": "",
        "download_limit": 5,
        "is_active": False,
        "is_featured": False,
    }


def test_a_full_valid_product() -> None:
    values = parse(
        slug="maple-sans-2",
        price="$1,000",
        category_id=str(FONTS.id),
        stock="0",
        download_limit="1000",
        description="Line one\r\nLine two",
        is_active="on",
        is_featured="true",
    )
    assert (values.slug, values.price, values.category_id, values.stock) == (
        "maple-sans-2",
        100_000,
        FONTS.id,
        0,
    )
    assert (values.download_limit, values.is_active, values.is_featured) == (1000, True, True)
    assert values.description == "Line one\nLine two"  # browsers post CRLF


def test_price_bounds() -> None:
    assert parse(price="0").price == 0  # free products are allowed
    assert parse(price="100000.00").price == 100_000_00


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"name": "  "}, "name", "Give the product a name."),
        ({"name": "x" * 161}, "name", "Keep the name under 160 characters."),
        ({"slug": "Maple Sans"}, "slug", "Use lower-case letters, digits and dashes, e.g. “maple-sans”."),
        ({"slug": "!!!"}, "slug", "Use lower-case letters, digits and dashes, e.g. “my-product”."),
        ({"name": "!!!"}, "slug", "Enter a slug: lower-case letters, digits and dashes."),
        ({"summary": "x" * 281}, "summary", "Keep the summary under 280 characters."),
        ({"description": "x" * 50_001}, "description", "Keep the description under 50,000 characters."),
        ({"price": ""}, "price", "Enter a price, such as 12.50."),
        ({"price": "twelve"}, "price", "Enter a price such as 12.50 (at most two decimals)."),
        ({"price": "12.505"}, "price", "Enter a price such as 12.50 (at most two decimals)."),
        ({"price": "inf"}, "price", "Enter a price such as 12.50 (at most two decimals)."),
        ({"price": "-1"}, "price", "A price can't be negative."),
        ({"price": "100000.01"}, "price", "At most $100,000.00 CAD."),
        ({"category_id": str(uuid4())}, "category_id", "Choose one of the listed categories."),
        ({"stock": "-1"}, "stock", "Enter a whole number of copies, or leave it blank for unlimited."),
        ({"stock": "2.5"}, "stock", "Enter a whole number of copies, or leave it blank for unlimited."),
        ({"stock": "1000001"}, "stock", "Enter a whole number of copies, or leave it blank for unlimited."),
        ({"seo_title": "x" * 161}, "seo_title", "Keep the SEO title under 160 characters."),
        ({"seo_description": "x" * 321}, "seo_description", "Keep the SEO description under 320 characters."),
        ({"download_limit": "0"}, "download_limit", "Enter how many downloads a buyer gets, from 1 to 1000."),
        ({"download_limit": "1001"}, "download_limit", "Enter how many downloads a buyer gets, from 1 to 1000."),
    ],
)
def test_each_field_error(changes: dict[str, str], field: str, message: str) -> None:
    assert errors_of(**changes) == {field: message}


def test_every_problem_is_reported_at_once() -> None:
    assert set(errors_of(name="", price="", stock="lots")) == {"name", "price", "stock"}


def test_slugs_are_ascii_lower_case_with_single_dashes() -> None:
    assert slugify("  Crème Brûlée -- Font! ") == "creme-brulee-font"
    assert slugify("x" * 159 + " y") == "x" * 159  # cut at 160, no dangling dash
    assert slugify("日本語") == ""


def test_the_form_shows_a_saved_product_as_it_was_typed() -> None:
    product = m.Product(
        name="Maple Sans",
        slug="maple-sans",
        summary="",
        description="",
        price=1250,
        currency="CAD",
        category_id=None,
        stock=None,
        seo_title="",
        seo_description="",
        download_limit=3,
        is_active=True,
        is_featured=False,
    )
    values = form_values(product)
    assert (values["price"], values["stock"], values["is_active"], values["is_featured"]) == ("12.50", "", "on", "")
    # And the same values parse back to the same product.
    parsed = parse_product_form(values, [])
    assert (parsed.price, parsed.stock, parsed.download_limit, parsed.is_active) == (1250, None, 3, True)
    assert form_values(None) == {"is_active": "on", "download_limit": "5"}


def category_errors(**form: str) -> dict[str, str]:
    with pytest.raises(FormError) as caught:
        parse_category_form({"name": "Fonts", **form})
    return caught.value.errors


def test_category_form() -> None:
    assert parse_category_form({"name": " Fonts ", "position": " -3 "}) == CategoryForm(
        name="Fonts", slug="fonts", description="", position=-3
    )
    assert parse_category_form({"name": "Fonts", "position": "1000"}).position == 1000
    assert category_errors(name="") == {"name": "Give the category a name."}
    assert category_errors(name="x" * 81) == {"name": "Keep the name under 80 characters."}
    assert category_errors(slug="Fonts") == {"slug": "Use lower-case letters, digits and dashes, e.g. “fonts”."}
    assert category_errors(description="x" * 2001) == {"description": "Keep the description under 2,000 characters."}
    message = "Enter a whole number from -1000 to 1000 (smaller comes first)."
    assert category_errors(position="1001") == {"position": message}
    assert category_errors(position="first") == {"position": message}
