"""Issue #14 item 9: two web nodes and two workers on one PostgreSQL and Redis, with a node and a worker killed.

`make test-cluster` runs this (`.ci/run` runs it after `make test`). Everything is real and local: two granian
processes (the Dockerfile's command), two `cartwright workers run`, the Stripe emulator delivering webhooks
through a round-robin balancer in front of both web nodes, and customers buying at the same time, each request
of theirs on whichever node the balancer picks (no sticky sessions). Mid-load web node 1 and worker 1 get
SIGKILL. Afterwards: no Stripe event lost, none failed, no order fulfilled twice, every paid order fulfilled,
and every customer still signed in (sessions live in Redis, not in a node).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import stripe

from app.lib.ratelimit import POLICIES
from app.lib.ratelimit import Scope as RateScope
from e2e.conftest import BIN, _flushed_redis, _log_tail, _run, _start, _stop, _wait_until_up
from tests.helpers import text_of
from tests.support import (
    app_environment,
    create_postgres_database,
    free_port,
    postgres_admin_url,
    redis_test_url,
    smtp_server,
    tcp_reachable,
    wait_until,
)

pytestmark = pytest.mark.cluster

CUSTOMERS = 12
ORDERS_EACH = 3
PASSWORD = "a long cluster passphrase"


class Balancer:
    """Round-robin TCP balancing over the web nodes, one backend per connection; a node that refuses
    connections is skipped, as a load balancer's health check would take it out."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="balancer")
        self._server: asyncio.Server | None = None

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(len(self.backends)):
            port = self.backends[self._next % len(self.backends)]
            self._next += 1
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                continue  # that node is down: the next one
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            except asyncio.CancelledError:
                # The balancer is stopping. Ending quietly: 3.11's start_server callback asks a cancelled
                # handler for its exception, which raises and logs a traceback.
                writer.close()
                up_writer.close()
            return
        writer.close()

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        # Connections still piped (keep-alive clients) end here, not when the interpreter exits.
        pipes = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    def stop(self) -> None:
        # The loop's thread ends before pytest's session summary: a thread still running there raced the
        # summary's imports (a CPython 3.11 AST crash when hypothesis's plugin imported itself).
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()


@dataclass
class Cluster:
    url: str
    stripe_url: str
    env: dict[str, str]
    webs: list[subprocess.Popen[bytes]]
    workers: list[subprocess.Popen[bytes]]
    logs: Path
    database_url: str
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)


def _node(env: dict[str, str], name: str, metrics_root: Path) -> dict[str, str]:
    """A node's environment: its own metrics directory, as on its own machine."""
    (metrics_root / name).mkdir(parents=True, exist_ok=True)
    return {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_root / name)}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not tcp_reachable(postgres_admin_url(), 5432):
        pytest.fail("the cluster test needs PostgreSQL (TEST_DATABASE_URL)")
    redis_url = _flushed_redis(redis_test_url(15))
    if not redis_url:
        pytest.fail("the cluster test needs a Redis server (TEST_REDIS_URL): two nodes cannot share an embedded one")
    var_dir = tmp_path_factory.mktemp("cluster-var")
    logs = tmp_path_factory.mktemp("cluster-logs")
    database_url = create_postgres_database("cartwright_cluster")
    balancer_port_holder = free_port()
    web_ports = [free_port(), free_port()]
    stripe_port = free_port()
    stripe_url = f"http://127.0.0.1:{stripe_port}"
    with smtp_server() as (smtp_url, _mailbox):
        balancer = Balancer(web_ports)
        base_url = f"http://127.0.0.1:{balancer.port}"
        del balancer_port_holder
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")},
            "STRIPE_API_BASE": stripe_url,
            "RATE_LIMITS": ",".join(
                f"{p.name}={p.limit * 1000}/{p.window}" for p in POLICIES.values() if p.scope is RateScope.IP
            ),
            **app_environment(
                database_url=database_url, redis_url=redis_url, smtp_url=smtp_url, var_dir=var_dir, base_url=base_url
            ),
        }
        env.pop("LITESTAR_APP", None)
        cartwright = str(BIN / "cartwright")
        _run([cartwright, "database", "upgrade", "--no-prompt"], env, logs / "migrate.log")
        _run([cartwright, "seed"], env, logs / "seed.log")
        metrics_root = var_dir / "metrics"
        emulator = [
            str(BIN / "python"), "-m", "app.stripe_emulator", "--port", str(stripe_port),
            "--webhook-url", f"{base_url}/webhooks/stripe", "--webhook-secret", "whsec_cartwright_emulator",
            "--webhook-retry-base", "0.5",
        ]  # fmt: skip
        started: list[subprocess.Popen[bytes]] = []
        try:
            started.append(stripe_proc := _start(emulator, env, logs / "stripe.log"))
            _wait_until_up(f"{stripe_url}/_emulator/health", stripe_proc, logs / "stripe.log")
            webs = []
            for n, port in enumerate(web_ports, start=1):
                granian = [
                    str(BIN / "granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1",
                    "--port", str(port), "--workers", "1", "app.asgi:create_app",
                ]  # fmt: skip
                web = _start(granian, _node(env, f"web{n}", metrics_root), logs / f"web{n}.log")
                started.append(web)
                webs.append(web)
                _wait_until_up(f"http://127.0.0.1:{port}/readyz", web, logs / f"web{n}.log")
            workers = []
            for n in (1, 2):
                worker = _start(
                    [cartwright, "workers", "run"], _node(env, f"worker{n}", metrics_root), logs / f"w{n}.log"
                )
                started.append(worker)
                workers.append(worker)
            balancer.start()
            yield Cluster(base_url, stripe_url, env, webs, workers, logs, database_url, started)
        finally:
            balancer.stop()
            for proc in reversed(started):
                if proc.poll() is None:
                    _stop(proc)


class Customer:
    """A browser: its own cookies, every request on a new connection (so on either node)."""

    def __init__(self, base_url: str, n: int) -> None:
        self.email = f"cluster{n}@example.com"
        self.history: list[str] = []  # what this browser sent and got, for the failure message
        self.client = httpx.Client(
            base_url=base_url, timeout=30, limits=httpx.Limits(max_keepalive_connections=0), follow_redirects=False
        )

    def request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """Retry what a dead node dropped mid-request, as a browser's reload would. Safe for our POSTs: the
        checkout form's one-use token makes a second submission find the first order."""
        for attempt in range(4):
            try:
                response = self.client.request(method, path, **kwargs)  # type: ignore[arg-type]
                self.history.append(f"{method} {path} -> {response.status_code} {response.headers.get('location', '')}")
                return response
            except httpx.TransportError as exc:
                self.history.append(f"{method} {path} -> {type(exc).__name__} (retried)")
                if attempt == 3:
                    raise
        raise AssertionError("unreachable")

    def csrf(self, html: str) -> str:
        found = re.search(r'name="_csrf_token" value="([^"]+)"', html)
        assert found, "no CSRF token on the page"
        return found.group(1)

    def post(self, path: str, page: str, data: dict[str, str]) -> httpx.Response:
        return self.request("POST", path, data={**data, "_csrf_token": self.csrf(page)})

    def sign_up_and_in(self) -> None:
        page = self.request("GET", "/register").text
        assert self.post("/register", page, {"email": self.email, "password": PASSWORD, "name": "C"}).status_code == 200
        page = self.request("GET", "/login").text
        assert self.post("/login", page, {"email": self.email, "password": PASSWORD}).status_code == 303

    def buy(self, slug: str, sc: stripe.StripeClient) -> str:
        product = self.request("GET", f"/products/{slug}").text
        product_id = re.search(r'name="product_id" value="([^"]+)"', product)
        assert product_id
        added = self.post("/cart/items", product, {"product_id": product_id.group(1), "quantity": "1"})
        assert added.status_code in (200, 303), added.text[:300]
        page = self.request("GET", "/checkout")
        checkout = page.text
        token = re.search(r'name="checkout_token" value="([^"]+)"', checkout)
        if not token:
            pytest.fail(f"no checkout form: {self.history} / cart: {text_of(self.request('GET', '/cart').text)[:600]}")
        placed = self.post(
            "/checkout",
            checkout,
            {"checkout_token": token.group(1), "name": "C", "email": self.email, "country": "CA", "region": "ON",
             "postal_code": "M5V 2T6"},
        )  # fmt: skip
        if placed.status_code != 303:
            pytest.fail(f"checkout {placed.status_code}: {self.history} / {text_of(placed.text)[:1500]}")
        pay = self.request("GET", placed.headers["location"]).text
        secret = re.search(r'data-client-secret="(pi_[A-Za-z0-9]+)_secret_', pay)
        assert secret, pay[:500]
        sc.v1.payment_intents.confirm(secret.group(1), {"payment_method": "pm_card_visa", "return_url": "http://x/r"})
        return secret.group(1)


def _sql(database_url: str, query: str) -> list[tuple[object, ...]]:
    import asyncpg

    async def run() -> list[tuple[object, ...]]:
        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
        try:
            return [tuple(row) for row in await conn.fetch(query)]
        finally:
            await conn.close()

    return asyncio.run(run())


def test_killing_a_web_node_and_a_worker_mid_load_loses_nothing_and_doubles_nothing(cluster: Cluster) -> None:
    sc = stripe.StripeClient(
        "sk_test_cartwright_emulator",
        base_addresses={"api": cluster.stripe_url},
        http_client=stripe.HTTPXClient(allow_sync_methods=True),
    )
    # Import what the threads will use here, once: the SDK imports its resources lazily, and CPython 3.11's
    # parser is not safe for imports racing in several threads under pytest's assertion rewriting.
    sc.v1.payment_intents.list({"limit": 1})
    sc.v1.events.list({"limit": 1})
    slug = _sql(cluster.database_url, "SELECT slug FROM products WHERE is_active AND stock IS NULL LIMIT 1")[0][0]
    customers = [Customer(cluster.url, n) for n in range(CUSTOMERS)]
    intents: list[str] = []
    lock = threading.Lock()
    killed = threading.Event()

    def shop(customer: Customer) -> None:
        customer.sign_up_and_in()
        for _ in range(ORDERS_EACH):
            intent = customer.buy(str(slug), sc)
            with lock:
                intents.append(intent)
                if len(intents) == CUSTOMERS and not killed.is_set():
                    killed.set()  # a third of the way: the node and the worker die with work in flight
                    os.killpg(cluster.webs[0].pid, signal.SIGKILL)
                    os.killpg(cluster.workers[0].pid, signal.SIGKILL)

    with ThreadPoolExecutor(max_workers=CUSTOMERS) as pool:
        for future in [pool.submit(shop, c) for c in customers]:
            future.result()
    assert killed.is_set()
    assert len(intents) == CUSTOMERS * ORDERS_EACH

    # Every sign-in survived the node it was made on.
    for customer in customers:
        assert customer.request("GET", "/account").status_code == 200, customer.email

    def settled() -> bool:
        rows = _sql(
            cluster.database_url,
            "SELECT count(*) FILTER (WHERE status = 'paid'), count(*) FROM orders",
        )
        pending = _sql(
            cluster.database_url,
            "SELECT count(*) FROM stripe_events WHERE status IN ('received', 'processing', 'failed')",
        )
        return rows[0][0] == len(intents) and pending[0][0] == 0

    # A job the killed worker held comes back once SAQ finds it abandoned (its timeout, then the sweep).
    wait_until(
        settled, timeout=240, what=f"every order paid and every event processed\n{_log_tail(cluster.logs / 'w2.log')}"
    )

    # No event lost: every event Stripe sent about our payments is in the log, processed.
    stripe_events = {
        e.id for e in sc.v1.events.list({"type": "payment_intent.succeeded", "limit": 100}).auto_paging_iter()
    }
    ours = {
        row[0]
        for row in _sql(
            cluster.database_url,
            "SELECT stripe_id FROM stripe_events WHERE type = 'payment_intent.succeeded' AND status = 'processed'",
        )
    }
    assert stripe_events <= ours
    # No double fulfilment: one paid timeline entry, one entitlement per line, one receipt per order.
    doubles = _sql(
        cluster.database_url,
        """SELECT o.id FROM orders o
           WHERE (SELECT count(*) FROM order_events e WHERE e.order_id = o.id AND e.kind = 'paid') != 1
              OR (SELECT count(*) FROM entitlements n WHERE n.order_id = o.id)
                 != (SELECT count(*) FROM order_lines l WHERE l.order_id = o.id)""",
    )
    assert doubles == []
    receipts = _sql(cluster.database_url, "SELECT count(*) FROM email_messages WHERE kind = 'receipt'")[0][0]
    assert receipts == len(intents)
