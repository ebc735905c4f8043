"""Issue #14 item 1: /metrics, private, with the figures an operator alerts on; summed across processes."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from litestar import Litestar
from prometheus_client.parser import text_string_to_metric_families
from saq import Queue, Worker

from app.lib.runtime import Runtime
from app.lib.settings import Settings, get_settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.integration.purchase_support import (
    add_to_cart,
    confirm,
    digital_product,
    open_pay_page,
    place_order,
    settle,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
async def monitor(app: Litestar) -> httpx.AsyncClient:
    """Prometheus, scraping from this machine (the default allow-list is loopback)."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver.local")


async def scrape(monitor: httpx.AsyncClient) -> Samples:
    response = await monitor.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


async def test_metrics_are_not_public(
    client: httpx.AsyncClient, monitor: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    # From the internet: the route does not exist, as far as anyone can tell.
    refused = await client.get("/metrics")
    assert refused.status_code == 404 and "cartwright_" not in refused.text
    assert (await monitor.get("/metrics")).status_code == 200
    # A token opens it from anywhere (Prometheus outside the host's network); a wrong one does not.
    monkeypatch.setattr(runtime, "settings", dataclasses.replace(runtime.settings, metrics_token="s3cret-scrape"))
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 404
    opened = await client.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
    assert opened.status_code == 200 and "cartwright_http_requests_total" in opened.text


async def test_a_purchase_and_a_decline_show_in_the_payment_funnel_and_webhook_figures(
    client: httpx.AsyncClient,
    monitor: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    app_server: str,
) -> None:
    before = await scrape(monitor)
    guide = await digital_product(factory, settings.storage_dir, name="Metric Guide", price=1500)
    await add_to_cart(client, guide)
    order_id = await place_order(client, email="metrics@example.com")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id, "pm_card_chargeDeclined")
    await confirm(runtime, intent_id, "pm_card_visa")
    await settle(stripe_emulator, queue, runtime)
    assert (await client.get(f"/products/{guide.slug}")).status_code == 200
    after = await scrape(monitor)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("cartwright_payments_total", outcome="succeeded", reason="") == 1
    assert grew("cartwright_payments_total", outcome="declined", reason="generic_decline") == 1
    for step in ("cart_add", "checkout_view", "order_placed", "pay_page", "paid"):
        assert grew("cartwright_checkout_steps_total", step=step) >= 1, step
    assert grew("cartwright_webhooks_received_total", result="received") >= 2  # failed + succeeded, at least
    assert grew("cartwright_stripe_events_processed_total", type="payment_intent.succeeded", result="processed") == 1
    assert grew("cartwright_stripe_event_lag_seconds_count") >= 2
    # Requests by route template (never one label per product), with the latency histogram beside them.
    assert grew("cartwright_http_requests_total", method="GET", route="/products/{slug}", status="200") == 1
    assert grew("cartwright_http_request_duration_seconds_count", method="GET", route="/products/{slug}") == 1
    assert grew("cartwright_job_duration_seconds_count", function="process_stripe_event", status="complete") >= 2
    # State read at scrape time.
    assert value(after, "cartwright_queue_jobs_queued") >= 0
    assert value(after, "cartwright_outbox_backlog") >= 0
    assert ("cartwright_queue_oldest_job_age_seconds", frozenset()) in after


async def test_an_unknown_path_is_one_label_not_one_per_url(
    client: httpx.AsyncClient, monitor: httpx.AsyncClient
) -> None:
    before = await scrape(monitor)
    for n in range(3):
        assert (await client.get(f"/no-such-page-{n}")).status_code == 404
    after = await scrape(monitor)
    routes = {dict(labels).get("route") for name, labels in after if name == "cartwright_http_requests_total"}
    assert not any(route and route.startswith("/no-such-page") for route in routes)
    grown = value(after, "cartwright_http_requests_total", method="GET", route="unmatched", status="404") - value(
        before, "cartwright_http_requests_total", method="GET", route="unmatched", status="404"
    )
    assert grown == 3


def test_samples_from_several_processes_are_summed(tmp_path: Path) -> None:
    """granian's workers and SAQ's worker are separate processes: /metrics must add them up."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    count = "from app.lib import metrics; metrics.CHECKOUT_STEPS.labels('paid').inc({n})"
    for n in (2, 3):
        subprocess.run([sys.executable, "-c", count.format(n=n)], env=env, check=True)
    rendered = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from app.lib import metrics; sys.stdout.write(metrics.render({}).decode())",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert value(parse(rendered), "cartwright_checkout_steps_total", step="paid") == 5


async def test_metrics_can_be_turned_off(migrated: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    # METRICS_ENABLED=false: a shop without Prometheus pays nothing per request, and has no /metrics at all.
    from app.asgi import create_app

    monkeypatch.setenv("METRICS_ENABLED", "false")
    get_settings.cache_clear()
    try:
        app = create_app()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))  # loopback: /metrics would open
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as local:
            assert (await local.get("/metrics")).status_code == 404
            assert (await local.get("/products")).status_code == 200
