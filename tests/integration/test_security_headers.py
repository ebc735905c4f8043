"""Security headers and the strict CSP on every response, walked over every GET route like the access matrix.

Also issue #12 hole 1 (stored script injection into the back office): user data never lands in an on* handler.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace

import httpx
import structlog.testing
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler

from app.domain.notifications.services import EmailService
from app.domain.system import csp_reports
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.lib.static_assets import static_url
from app.server.security_headers import SANDBOXED_DOCUMENT_CSP, SecurityHeaders, content_security_policy, origin
from tests.conftest import Factory
from tests.helpers import select, sign_in
from tests.integration.test_downloads import link, purchase

NONCE = re.compile(r"'nonce-([A-Za-z0-9_-]{22})'")
TAG = re.compile(r"<[a-zA-Z][^>]*>")
HANDLER_ATTRIBUTE = re.compile(r"\son[a-z]+\s*=", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"\sstyle\s*=", re.IGNORECASE)
SCRIPT = re.compile(r"<script\b([^>]*)>(.*?)</script>", re.DOTALL | re.IGNORECASE)
# The stored-XSS probe of issue #12, hole 1: an address a client that skips type=email can register.
EVIL_EMAIL = "x');document.title='pwned';('@e.co"

VERIFY_URL = "http://shop/verify-email/Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0"


def get_routes(app: Litestar) -> Iterator[tuple[str, HTTPRouteHandler]]:
    """Every GET route with its path parameters filled in (a made-up id answers with the 404 page)."""
    for route in app.routes:
        for handler in getattr(route, "route_handlers", []):
            if "GET" not in handler.http_methods:
                continue
            path = re.sub(r"\{[^}:]+:uuid\}", str(uuid.uuid4()), route.path)
            path = re.sub(r"\{[^}:]+:path\}", "/css/app.css", path)
            path = re.sub(r"\{[^}:]+:(str|int)\}", "1", path)
            yield path, handler


def assert_secure(response: httpx.Response, settings: Settings) -> str:
    """The headers every response carries, and a page body the CSP can run as is. Returns the nonce."""
    where = f"{response.request.method} {response.request.url.path} -> {response.status_code}"
    headers = response.headers
    csp = headers.get("content-security-policy", "")
    nonces = NONCE.findall(csp)
    assert len(nonces) == 1, f"{where}: no nonce in {csp!r}"
    for directive in (
        "default-src 'self'",
        "'strict-dynamic'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
        "report-uri /csp-report",
        "report-to csp",
    ):
        assert directive in csp, (where, directive)
    emulator = origin(settings.stripe.api_base)
    assert f"connect-src 'self' {emulator}" in csp, where  # the tests run against the emulator...
    assert "stripe.com" not in csp, where  # ...so Stripe's own origins are not allowed
    assert headers.get("x-content-type-options") == "nosniff", where
    secret_url = response.request.url.path.startswith(
        ("/downloads/", "/reset-password/", "/verify-email/", "/invoices/")
    )
    expected_referrer = "no-referrer" if secret_url else "strict-origin-when-cross-origin"
    assert headers.get("referrer-policy") == expected_referrer, where
    permissions = headers.get("permissions-policy", "")
    assert "camera=()" in permissions and "microphone=()" in permissions and "geolocation=()" in permissions
    assert f'payment=(self "{emulator}")' in permissions, (where, permissions)
    assert headers.get("cross-origin-opener-policy") == "same-origin", where
    assert "strict-transport-security" not in headers, where  # BASE_URL is http in the tests
    if "text/html" in headers.get("content-type", ""):
        body = response.text
        for attrs, content in SCRIPT.findall(body):
            assert f'nonce="{nonces[0]}"' in attrs, f"{where}: a script without the nonce: <script{attrs}>"
            assert "src=" in attrs and not content.strip(), f"{where}: an inline script"
        for tag in TAG.findall(body):
            assert not HANDLER_ATTRIBUTE.search(tag), f"{where}: an on* handler: {tag}"
            assert not STYLE_ATTRIBUTE.search(tag), f"{where}: a style attribute: {tag}"
        assert "<style" not in body, where
    return nonces[0]


async def test_every_get_route_answers_with_the_security_headers_and_a_clean_page(
    app: Litestar, client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    routes = list(get_routes(app))
    assert len(routes) > 50, "the route walk found too few routes"
    seen_nonces: set[str] = set()
    # Anonymous: public pages, and the sign-in redirects of the others.
    for path, _ in routes:
        seen_nonces.add(assert_secure(await client.get(path), settings))
    # Staff: every page and every fragment (HX-Request) of the back office and the shop.
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    statuses: dict[int, int] = {}
    for path, _ in routes:
        for headers in ({}, {"HX-Request": "true"}):
            response = await client.get(path, headers=headers)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            seen_nonces.add(assert_secure(response, settings))
    assert statuses.get(200, 0) > 50, statuses
    assert len(seen_nonces) == 3 * len(routes), "a nonce was used twice"


async def test_error_pages_redirects_static_files_and_downloads_carry_the_headers(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings
) -> None:
    not_found = await client.get("/no-such-page")  # answered by the router, before any app middleware
    assert not_found.status_code == 404 and "Page not found" in not_found.text
    assert_secure(not_found, settings)
    toast = await client.get("/no-such-page", headers={"HX-Request": "true"})
    assert toast.status_code == 404 and "<html" not in toast.text
    assert_secure(toast, settings)
    wrong_method = await client.delete("/login")
    assert wrong_method.status_code == 405
    assert_secure(wrong_method, settings)
    redirect = await client.get("/account")
    assert redirect.status_code == 303
    assert_secure(redirect, settings)
    static = await client.get("/static/css/app.css")
    assert static.status_code == 200 and static.headers["content-type"].startswith("text/css")
    assert_secure(static, settings)
    script = await client.get("/static/js/app.js")
    assert script.status_code == 200
    assert_secure(script, settings)

    bought = await purchase(runtime)
    download = await client.get(await link(runtime, bought.entitlement))
    assert download.status_code == 200 and download.headers["content-type"] == "application/pdf"
    assert_secure(download, settings)
    assert download.headers["referrer-policy"] == "no-referrer"
    reset = await client.get("/reset-password/not-a-real-token")
    assert_secure(reset, settings)
    assert reset.headers["referrer-policy"] == "no-referrer"
    assert (await client.get("/login")).headers["referrer-policy"] == "strict-origin-when-cross-origin"


async def test_the_nonce_on_the_payment_page_scripts_matches_the_header(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    """The payment pages load Stripe.js (here the emulator's stand-in) and checkout.js, each with the nonce."""
    from tests.integration.purchase_support import add_to_cart, open_pay_page, place_order

    product = await factory.product()
    await add_to_cart(client, product)
    order_id = await place_order(client)
    await open_pay_page(client, order_id)
    page = await client.get(f"/orders/{order_id}/pay")
    assert page.status_code == 200
    nonce = assert_secure(page, settings)
    scripts = [(tag.attributes["src"], tag.attributes["nonce"]) for tag in select(page.text, "script[src]")]
    assert [src for src, _ in scripts] == [
        static_url("vendor/htmx-2.0.11.min.js"),
        static_url("js/app.js"),
        settings.stripe.js_url,
        static_url("js/checkout.js"),
    ]
    assert {n for _, n in scripts} == {nonce}


def _hook_headers(settings: Settings, path: str = "/") -> dict[str, str]:
    import asyncio

    message: dict[str, object] = {"type": "http.response.start", "status": 200, "headers": []}
    asyncio.run(SecurityHeaders(settings)(message, {"type": "http", "path": path, "state": {}}))  # type: ignore[arg-type]
    return {k.decode(): v.decode() for k, v in message["headers"]}  # type: ignore[attr-defined]


def test_hsts_only_when_base_url_is_https(settings: Settings) -> None:
    assert "strict-transport-security" not in _hook_headers(replace(settings, base_url="http://127.0.0.1:8000"))
    secure = _hook_headers(replace(settings, base_url="https://shop.example"))
    assert secure["strict-transport-security"] == "max-age=63072000; includeSubDomains"


def test_emulator_origin_is_allowed_only_with_the_emulator(settings: Settings) -> None:
    emulator = origin(settings.stripe.api_base)
    with_emulator = content_security_policy(settings, "n")
    assert settings.stripe.uses_emulator
    for directive in ("script-src", "frame-src", "connect-src", "img-src", "form-action"):
        assert re.search(rf"{directive} [^;]*{re.escape(emulator)}", with_emulator), directive
    assert "stripe.com" not in with_emulator

    live = replace(
        settings,
        stripe=replace(settings.stripe, api_base="https://api.stripe.com", js_url="https://js.stripe.com/v3/"),
    )
    policy = content_security_policy(live, "n")
    assert emulator not in policy
    assert "script-src 'nonce-n' 'strict-dynamic' https://js.stripe.com https://*.js.stripe.com;" in policy
    assert "frame-src 'self' https://js.stripe.com https://*.js.stripe.com https://hooks.stripe.com;" in policy
    assert "connect-src 'self' https://api.stripe.com;" in policy
    assert "img-src 'self' data: https://*.stripe.com;" in policy
    # The tests offer hosted Checkout (SUBSCRIPTION_CHECKOUT=both): its origin and the portal's may be posted to.
    assert "form-action 'self' https://checkout.stripe.com https://billing.stripe.com;" in policy
    elements_only = content_security_policy(replace(live, subscription_checkout="elements"), "n")
    assert "form-action 'self' https://billing.stripe.com;" in elements_only
    assert 'payment=(self "https://js.stripe.com")' in _hook_headers(live)["permissions-policy"]


# --- issue #12, hole 1: stored script injection into the back office ----------------------------------------


def _confirm_attributes(html: str) -> list[str]:
    return re.findall(r'(?:data-confirm|hx-confirm)="([^"]*)"', html)


async def test_hole_1_an_email_never_lands_in_an_inline_handler_on_the_admin_user_page(
    client: httpx.AsyncClient, factory: Factory, settings: Settings
) -> None:
    victim = await factory.user(email=EVIL_EMAIL)  # straight into the database, as a lax client could register
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    page = await client.get(f"/admin/users/{victim.id}")
    assert page.status_code == 200
    assert_secure(page, settings)  # no on* attribute at all, scripts only by src with the nonce
    escaped = "x&#39;);document.title=&#39;pwned&#39;;(&#39;@e.co"
    assert f"Disable {escaped} and sign them out everywhere?" in _confirm_attributes(page.text)
    # Anywhere else the address appears, it is text, never inside a tag's handler.
    for tag in TAG.findall(page.text):
        if "pwned" in tag:
            assert re.search(r'\s(data-confirm|value|hx-confirm)="[^"]*pwned', tag), tag


async def test_hole_1_an_email_never_lands_in_an_inline_handler_on_the_admin_order_page(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings
) -> None:
    bought = await purchase(runtime, email=EVIL_EMAIL)
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    page = await client.get(f"/admin/orders/{bought.order.id}")
    assert page.status_code == 200
    assert_secure(page, settings)
    escaped = "x&#39;);document.title=&#39;pwned&#39;;(&#39;@e.co"
    message = f"Reset the download counts of this order and email fresh links to {escaped}?"
    assert message in _confirm_attributes(page.text)
    for tag in TAG.findall(page.text):
        if "pwned" in tag:
            assert re.search(r'\s(data-confirm|value|hx-confirm|href)="[^"]*pwned', tag), tag


# --- the CSP report endpoint ----------------------------------------------------------------------------------


async def test_csp_reports_are_logged_without_query_strings_and_counted_by_directive(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    old_style = {
        "csp-report": {
            "document-uri": "http://testserver.local/checkout?email=secret%40example.com#top",
            "violated-directive": "script-src-elem",
            "effective-directive": "script-src-elem",
            "blocked-uri": "https://evil.example/x.js?session=abc",
            "source-file": "http://testserver.local/reset-password/the-secret-token?x=1",
            "line-number": 12,
        }
    }
    # No CSRF token: the browser sends these itself.
    with structlog.testing.capture_logs() as logs:
        response = await client.post(
            "/csp-report", content=json.dumps(old_style), headers={"Content-Type": "application/csp-report"}
        )
    assert response.status_code == 204, response.text
    [line] = [entry for entry in logs if entry["event"] == "csp_violation"]
    assert line["directive"] == "script-src-elem" and line["line"] == 12
    assert line["blocked"] == "https://evil.example/x.js"
    assert line["document"] == "http://testserver.local/checkout"
    assert line["source"] == "http://testserver.local/reset-password/…"  # the token segment is a secret too
    reporting_api = [
        {
            "type": "csp-violation",
            "url": "http://testserver.local/",
            "body": {
                "effectiveDirective": "style-src-attr",
                "blockedURL": "inline",
                "documentURL": "http://testserver.local/?q=1",
                "disposition": "enforce",
            },
        },
        {"type": "deprecation", "body": {"id": "x"}},  # other report types are ignored
    ]
    response = await client.post(
        "/csp-report", content=json.dumps(reporting_api), headers={"Content-Type": "application/reports+json"}
    )
    assert response.status_code == 204
    assert await csp_reports.counts(runtime.redis) == {"script-src-elem": 1, "style-src-attr": 1}
    for secret in ("session=abc", "secret%40example.com", "the-secret-token", "#top"):
        assert secret not in repr(line), secret


async def test_csp_reports_are_size_capped_and_checked(client: httpx.AsyncClient, runtime: Runtime) -> None:
    big = json.dumps({"csp-report": {"violated-directive": "script-src", "blocked-uri": "x" * 9000}})
    headers = {"Content-Type": "application/csp-report"}
    assert (await client.post("/csp-report", content=big, headers=headers)).status_code == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the endpoint stops reading at the cap
        for _ in range(10):
            yield b" " * 1024

    assert (await client.post("/csp-report", content=chunks(), headers=headers)).status_code == 413
    assert (await client.post("/csp-report", content=b"{not json", headers=headers)).status_code == 400
    wrong_type = await client.post("/csp-report", content=b"{}", headers={"Content-Type": "text/plain"})
    assert wrong_type.status_code == 415
    odd = {"csp-report": {"violated-directive": "DROP TABLE users; --", "blocked-uri": "eval"}}
    assert (await client.post("/csp-report", content=json.dumps(odd), headers=headers)).status_code == 204
    assert await csp_reports.counts(runtime.redis) == {"other": 1}  # only directive-shaped names become fields


async def test_the_outbox_shows_an_email_with_its_inline_styles_in_a_sandboxed_document_of_its_own(
    client: httpx.AsyncClient,
    runtime: Runtime,
    factory: Factory,
    settings: Settings,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    """A srcdoc frame inherits the page's style-src 'self' (the e2e run reported its styles blocked), so the
    email's HTML is its own document, under a policy that lets its inline styles apply and nothing run."""
    async with runtime.db() as db:
        message = await EmailService(db, queue=None).send(
            "welcome",
            "kim@example.com",
            {"name": "Kim", "shop_url": "http://shop", "verify_url": VERIFY_URL, "valid_days": 3},
        )
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    page = await client.get(f"/admin/emails/{message.id}")
    assert_secure(page, settings)
    assert f'sandbox src="/admin/emails/{message.id}/html"' in page.text
    assert "frame-src 'self' " in page.headers["content-security-policy"]
    document = await client.get(f"/admin/emails/{message.id}/html")
    assert document.status_code == 200 and 'style="' in document.text
    assert document.headers["content-security-policy"] == SANDBOXED_DOCUMENT_CSP
    assert "script-src" not in SANDBOXED_DOCUMENT_CSP and "sandbox" in SANDBOXED_DOCUMENT_CSP
    assert document.headers["x-content-type-options"] == "nosniff"
    await factory.user(email="support@example.com", role="support")
    support = new_browser()
    await sign_in(support, "support@example.com")
    assert (await support.get(f"/admin/emails/{message.id}/html")).status_code == 403


def test_csp_reports_drop_the_token_of_every_secret_page() -> None:
    from app.domain.system.csp_reports import clean_url

    for path in ("/downloads/", "/reset-password/", "/verify-email/"):
        assert clean_url(f"https://shop.test{path}the-secret-token-value?x=1") == f"https://shop.test{path}…"
