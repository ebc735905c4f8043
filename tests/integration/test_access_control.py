"""Every admin route is guarded by the permission table, and each role gets exactly what the table says."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator

import httpx
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler

from app.lib.permissions import PERMISSIONS, Access, Resource, Role, can
from tests.conftest import Factory
from tests.helpers import post_form, sign_in


def admin_routes(app: Litestar) -> Iterator[tuple[str, str, HTTPRouteHandler]]:
    for route in app.routes:
        if not route.path.startswith("/admin"):
            continue
        for handler in getattr(route, "route_handlers", []):
            for method in handler.http_methods:
                path = re.sub(r"\{[^}:]+:uuid\}", str(uuid.uuid4()), route.path)
                path = re.sub(r"\{[^}:]+:(str|int)\}", "1", path)
                yield method, path, handler


def required_permission(handler: HTTPRouteHandler) -> tuple[Resource, Access]:
    """The strictest ``requires(...)`` guard on the handler and its owners (controller, router)."""
    rules = [
        g.permission for layer in handler.ownership_layers for g in (layer.guards or []) if hasattr(g, "permission")
    ]
    assert rules, f"{handler} has no permission guard: add requires(Resource, Access)"
    return max(rules, key=lambda rule: rule[1])


def test_permission_table_matches_the_seed_matrix() -> None:
    expected = {  # (admin, customer, support) from the product brief
        Resource.PRODUCTS: ("full", "none", "read"),
        Resource.ORDERS: ("full", "own", "full"),
        Resource.CUSTOMERS: ("full", "own", "full"),
        Resource.ANALYTICS: ("full", "none", "limited"),
        Resource.SUBSCRIPTIONS: ("full", "own", "full"),
        Resource.REFUNDS: ("full", "none", "full"),
        Resource.PROMO_CODES: ("full", "none", "read"),
        Resource.PLANS: ("full", "none", "read"),
        Resource.SYSTEM: ("full", "none", "none"),
    }
    for resource, (admin, customer, support) in expected.items():
        row = PERMISSIONS[resource]
        assert (row[Role.ADMIN].name.lower(), row[Role.CUSTOMER].name.lower(), row[Role.SUPPORT].name.lower()) == (
            admin,
            customer,
            support,
        ), resource


async def test_every_admin_route_answers_each_role_as_the_table_says(
    app: Litestar, client: httpx.AsyncClient, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    routes = [(m, p, h) for m, p, h in admin_routes(app) if m in {"GET", "HEAD"}]
    assert routes, "no admin routes found"
    for role in Role:
        email = f"{role.value}@example.com"
        await factory.user(email=email, role=role.value)
        browser = new_browser()
        await sign_in(browser, email)
        for method, path, handler in routes:
            resource, access = required_permission(handler)
            response = await browser.request(method, path)
            if can(role, resource, access):
                assert response.status_code in {200, 404}, (role, path, response.status_code)
            else:
                assert response.status_code == 403, (role, path, response.status_code)
                assert "You don&#39;t have access to that page." in response.text


async def test_anonymous_visitors_are_sent_to_sign_in_from_every_admin_route(
    app: Litestar, client: httpx.AsyncClient
) -> None:
    for method, path, _ in admin_routes(app):
        if method != "GET":
            continue
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/login?next_url=")
        htmx = await client.get(path, headers={"HX-Request": "true"})
        assert htmx.headers.get("hx-redirect", "").startswith("/login?next_url="), path


async def test_customer_gets_403_page_on_admin(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.user(email="c@example.com")
    await sign_in(client, "c@example.com")
    response = await client.get("/admin")
    assert response.status_code == 403
    assert "<h1>You don&#39;t have access to that page</h1>" in response.text
    htmx = await client.get("/admin/emails", headers={"HX-Request": "true"})
    assert htmx.status_code == 403 and "<html" not in htmx.text and 'role="alert"' in htmx.text


async def test_account_pages_require_sign_in(client: httpx.AsyncClient) -> None:
    for path in ("/account", "/account/password"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next_url={path.replace('/', '%2F')}"


async def test_every_admin_form_post_answers_each_role_as_the_table_says(
    app: Litestar, client: httpx.AsyncClient, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    """Unsafe routes too (refunds, credits, promo codes…): a role without the access gets 403 and changes nothing;
    a role with it gets past the guard (here to a 404 for a made-up id, the form's own 422, or a table fragment)."""
    routes = [(m, p, h) for m, p, h in admin_routes(app) if m == "POST"]
    assert any(p.startswith("/admin/promo-codes") for _, p, _ in routes)
    for n, role in enumerate(Role):
        email = f"{role.value}-post@example.com"
        await factory.user(email=email, role=role.value)
        # One address per role: all the roles' posts from one would pass the per-IP unsafe-request limit (120/min).
        browser = new_browser(ip=f"198.51.100.{10 + n}")
        await sign_in(browser, email)
        for _, path, handler in routes:
            resource, access = required_permission(handler)
            response = await post_form(browser, path, {})
            if can(role, resource, access):
                assert response.status_code in {200, 303, 404, 422}, (role, path, response.status_code)
            else:
                assert response.status_code == 403, (role, path, response.status_code)


async def test_support_and_customers_get_403_on_every_webhook_log_route_including_actions(
    app: Litestar, client: httpx.AsyncClient, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    routes = [(m, p) for m, p, _ in admin_routes(app) if p.startswith("/admin/webhooks") and m in {"GET", "POST"}]
    assert {m for m, _ in routes} == {"GET", "POST"}
    assert len([p for m, p in routes if m == "POST"]) >= 5  # replay/ignore one, replay/ignore selected, all failed
    for role in (Role.SUPPORT, Role.CUSTOMER):
        email = f"{role.value}-webhooks@example.com"
        await factory.user(email=email, role=role.value)
        browser = new_browser()
        await sign_in(browser, email)
        token = browser.cookies.get("cartwright_csrf")
        assert token
        for method, path in routes:
            response = await browser.request(method, path, headers={"x-csrftoken": token}, data={"ids": "x"})
            assert response.status_code == 403, (role, method, path, response.status_code)
