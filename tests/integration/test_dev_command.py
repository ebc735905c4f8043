"""`cartwright dev` (what `make run` starts): a clean start beside another checkout, a clean failure.

Each test runs the real command with its own var/ (SQLite, the embedded Redis) and watches its output.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port, wait_until

CARTWRIGHT = str(Path(sys.executable).parent / "cartwright")


def _processes_with(var_dir: Path) -> list[int]:
    """Live processes whose environment names this test's var/ (everything `cartwright dev` started)."""
    marker = f"CARTWRIGHT_VAR_DIR={var_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                status = (entry / "status").read_text()
                if "\nState:\tZ" not in status:  # a zombie is gone, only not yet reaped
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def held_port() -> Iterator[socket.socket]:
    """A port something else already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def _dev(tmp_path: Path, port: int, **env: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    var_dir, out = tmp_path / "var", tmp_path / "dev.log"
    # As on a fresh machine: no Stripe keys, database, Redis or base URL configured.
    unset = ("STRIPE_", "DATABASE_URL", "REDIS_URL", "BASE_URL", "SECRET_KEY")
    environment = {k: v for k, v in os.environ.items() if not k.startswith(unset)}
    environment.update({"CARTWRIGHT_VAR_DIR": str(var_dir), "SMTP_URL": "", **env})
    with out.open("wb") as log:
        proc = subprocess.Popen(
            [CARTWRIGHT, "dev", "--port", str(port)], env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    return proc, var_dir, out


def test_a_second_checkout_gets_its_own_emulator_port(tmp_path: Path) -> None:
    # With 12111 taken (by another checkout's `make run`), the emulator moves to a free port and the shop uses it.
    with socket.socket() as other_checkout:
        other_checkout.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            other_checkout.bind(("127.0.0.1", 12111))
            other_checkout.listen()
        except OSError:
            pass  # already taken by something else: the same situation
        port = free_port()
        proc, var_dir, out = _dev(tmp_path, port)
        try:
            wait_until(
                lambda: b"is running at" in out.read_bytes() or proc.poll() is not None, timeout=90, what="start"
            )
            text = out.read_text()
            assert f"Cartwright is running at http://127.0.0.1:{port}" in text, text
            moved = next(line for line in text.splitlines() if "the Stripe emulator runs at" in line)
            emulator = moved.rsplit(" ", 1)[1].rstrip(".")
            assert not emulator.endswith(":12111")
            with urllib.request.urlopen(f"{emulator}/_emulator/health", timeout=5) as response:
                assert response.status == 200
            # The shop talks to that emulator: its pricing page (plans priced through Stripe) renders.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/products", timeout=10) as response:
                assert response.status == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    wait_until(lambda: not _processes_with(var_dir), timeout=30, what="every child process to stop")


def test_a_process_that_fails_to_start_is_named_and_nothing_is_left_running(
    tmp_path: Path, held_port: socket.socket
) -> None:
    # The emulator's configured port is taken: `make run` said "The web server did not start" and left granian
    # running, orphaned, on the shop's port.
    busy = held_port.getsockname()[1]
    port = free_port()
    proc, var_dir, out = _dev(tmp_path, port, STRIPE_API_BASE=f"http://127.0.0.1:{busy}")
    assert proc.wait(timeout=120) == 1
    text = out.read_text()
    assert f"The Stripe emulator (http://127.0.0.1:{busy}) exited" in text, text
    assert "The web server did not start" not in text
    wait_until(lambda: not _processes_with(var_dir), timeout=30, what="every child process to stop")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # nothing kept the shop's port


def test_a_taken_web_port_is_refused_before_anything_starts(tmp_path: Path, held_port: socket.socket) -> None:
    port = held_port.getsockname()[1]
    proc, var_dir, out = _dev(tmp_path, port)
    assert proc.wait(timeout=120) == 1
    assert f"Port {port} on 127.0.0.1 is already in use" in out.read_text()
    assert not _processes_with(var_dir)
