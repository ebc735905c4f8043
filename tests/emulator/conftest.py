"""Fixtures: one emulator per session, reset before each test; SDK clients; a tiny webhook receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe

from app.stripe_emulator.server import EmulatorServer, run_emulator

SECRET_KEY = "sk_test_emulator"
PUBLISHABLE_KEY = "pk_test_emulator"


@pytest.fixture(scope="session")
def emulator() -> Iterator[EmulatorServer]:
    # Short retry base keeps the retry tests fast; flush() still waits for every attempt.
    with run_emulator(retry_base=0.05, max_attempts=4, delivery_timeout=2.0) as emu:
        yield emu


@pytest.fixture(autouse=True)
def _reset(emulator: EmulatorServer) -> None:
    emulator.reset()


def make_client(url: str, key: str = SECRET_KEY, **kwargs: Any) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key=key,
        base_addresses={"api": url, "files": url, "connect": url, "meter_events": url},
        max_network_retries=2,
        **kwargs,
    )


@pytest.fixture
def sc(emulator: EmulatorServer) -> stripe.StripeClient:
    return make_client(emulator.url)


@pytest.fixture
async def asc(emulator: EmulatorServer) -> AsyncIterator[stripe.StripeClient]:
    http_client = stripe.HTTPXClient()
    yield make_client(emulator.url, http_client=http_client)
    await http_client.close_async()


@dataclass
class Receiver:
    """Records webhook POSTs; ``fail_first`` makes the first N requests answer 500."""

    url: str = ""
    fail_first: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: int = 0

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            with state.lock:
                state.calls += 1
                failing = state.calls <= state.fail_first
                if not failing:
                    state.requests.append({"body": body, "signature": self.headers.get("Stripe-Signature", "")})
            self.send_response(500 if failing else 200)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/webhooks"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
