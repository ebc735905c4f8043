"""Running the emulator: state-file persistence, the CLI entry point, health and reset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import stripe

from app.stripe_emulator.server import EmulatorServer, free_port, run_emulator
from tests.emulator.conftest import make_client


def test_state_file_persists_and_reloads(tmp_path: Path) -> None:
    state_file = tmp_path / "stripe.json"
    with run_emulator(state_file=state_file) as emu:
        sc = make_client(emu.url)
        cus = sc.v1.customers.create(params={"email": "keep@example.com"})
        pi = sc.v1.payment_intents.create(
            params={
                "amount": 1000,
                "currency": "usd",
                "customer": cus.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
            },
            options={"idempotency_key": "persist-1"},
        )
    saved = json.loads(state_file.read_text())
    assert cus.id in saved["objects"]
    assert not list(tmp_path.glob(".stripe-emulator-*"))  # atomic writes leave no temp files behind
    with run_emulator(state_file=state_file) as emu:
        sc = make_client(emu.url)
        assert sc.v1.customers.retrieve(cus.id).email == "keep@example.com"
        assert sc.v1.payment_intents.retrieve(pi.id).status == "succeeded"
        replay = sc.v1.payment_intents.create(
            params={
                "amount": 1000,
                "currency": "usd",
                "customer": cus.id,
                "payment_method": "pm_card_visa",
                "confirm": True,
            },
            options={"idempotency_key": "persist-1"},
        )
        assert replay.id == pi.id
        assert len(sc.v1.events.list(params={"limit": 100}).data) >= 4


def test_cli_entry_point(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "STRIPE_EMULATOR_STATE_FILE": str(tmp_path / "cli.json")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.stripe_emulator",
            "--port",
            str(port),
            "--host",
            "127.0.0.1",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--webhook-secret",
            "whsec_cli",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        with httpx.Client() as http:
            # Readiness: retry the health endpoint until the process listens (transport retries, no sleeps).
            transport = httpx.HTTPTransport(retries=50)
            with httpx.Client(transport=transport, timeout=10) as ready:
                for _ in range(100):
                    try:
                        if ready.get(f"{url}/_emulator/health").status_code == 200:
                            break
                    except httpx.ConnectError:
                        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert http.get(f"{url}/_emulator/health").json()["api_version"] == "2026-10-28.endive"
            assert "window.Stripe" in http.get(f"{url}/v3/").text
        sc = make_client(url)
        endpoints = sc.v1.webhook_endpoints.list().data
        assert [e.url for e in endpoints] == ["http://127.0.0.1:9/hook"]
        assert sc.v1.customers.create().id.startswith("cus_")
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert (tmp_path / "cli.json").exists()


def test_health_and_reset(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    sc.v1.customers.create()
    assert emulator.control("health", method="GET")["status"] == "ok"
    emulator.reset()
    assert sc.v1.customers.list().data == []
    assert sc.v1.events.list().data == []
