"""Run the emulator in-process on a free port (for tests) — ``with run_emulator() as emu: emu.url``."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from app.stripe_emulator.app import create_app
from app.stripe_emulator.runtime import Runtime
from app.stripe_emulator.state import EmulatorState
from app.stripe_emulator.webhooks import DeliverySettings

__all__ = ["EmulatorServer", "create_app", "run_emulator"]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class EmulatorServer:
    """A uvicorn server running the emulator in a daemon thread.

    ``url`` is the base address to give the SDK (``base_addresses``) and the browser (``{url}/v3/``).
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        state: EmulatorState | None = None,
        state_file: Path | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        retry_base: float = 1.0,
        max_attempts: int = 5,
        delivery_timeout: float = 5.0,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.app = create_app(
            state,
            state_file=state_file,
            webhook_url=webhook_url,
            webhook_secret=webhook_secret,
            settings=DeliverySettings(retry_base=retry_base, max_attempts=max_attempts, timeout=delivery_timeout),
        )
        config = uvicorn.Config(
            self.app, host=host, port=self.port, log_level="warning", lifespan="on", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def runtime(self) -> Runtime:
        rt = self.app.state.runtime
        assert isinstance(rt, Runtime)
        return rt

    @property
    def state(self) -> EmulatorState:
        return self.runtime.state

    def start(self, timeout: float = 10.0) -> EmulatorServer:
        self._thread = threading.Thread(target=self._server.run, name="stripe-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("Stripe emulator failed to start")
            time.sleep(0.01)  # startup polling only; not used for test synchronisation
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- control API helpers (plain HTTP so they work against any emulator URL) ------------------
    def control(self, path: str, payload: dict[str, Any] | None = None, method: str = "POST") -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(  # noqa: S310 - local emulator URL
            f"{self.url}/_emulator/{path}",
            data=data if method == "POST" else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as resp:  # noqa: S310
            return json.loads(resp.read())

    def flush(self, timeout: float = 30.0) -> dict[str, Any]:
        """Return once every pending webhook delivery (with retries and delays) has finished."""
        result: dict[str, Any] = self.control("flush", {"timeout": timeout})
        return result

    def reset(self) -> None:
        self.control("reset", {})

    def chaos(self, **settings: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("chaos", settings)
        return result

    def add_webhook_endpoint(
        self, url: str, secret: str | None = None, enabled_events: list[str] | None = None
    ) -> dict[str, Any]:
        result: dict[str, Any] = self.control(
            "webhook_endpoints", {"url": url, "secret": secret, "enabled_events": enabled_events or ["*"]}
        )
        return result

    def deliveries(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.control("deliveries", method="GET")["data"]
        return rows


@contextmanager
def run_emulator(**kwargs: Any) -> Iterator[EmulatorServer]:
    """Start an emulator on a free port for the duration of the block. Accepts ``EmulatorServer`` kwargs."""
    server = EmulatorServer(**kwargs)
    server.start()
    try:
        yield server
    finally:
        server.stop()
