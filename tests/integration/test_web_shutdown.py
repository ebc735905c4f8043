"""Issue #14 item 5, the web side: SIGTERM to the web server (granian, as deployed) ends open Server-Sent Event
streams (the admin's live feed) promptly, exits, and prints no traceback. It printed "HeartbeatManager thread
crashed" before: litestar-saq started a heartbeat thread per queue in the web process (app/server/saq_worker.py).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import Factory
from tests.helpers import sign_in, until
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
GRANIAN = Path(sys.executable).parent / "granian"


def start_web(port: int, log: Path) -> subprocess.Popen[bytes]:
    """The web server as deployed (granian), with the test's environment (test_env put it in os.environ)."""
    env = {**os.environ, "BASE_URL": f"http://127.0.0.1:{port}"}
    command = [str(GRANIAN), "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        return subprocess.Popen(
            [*command, "app.asgi:create_app"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def test_sigterm_ends_live_streams_and_exits_without_a_traceback(factory: Factory, tmp_path: Path) -> None:
    await factory.user(email="boss@example.com", role="admin")
    port = free_port()
    log = tmp_path / "web.log"
    web = start_web(port, log)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:

            async def up() -> bool:
                try:
                    return (await client.get("/healthz")).status_code == 200
                except httpx.TransportError:
                    return False

            await until(up, timeout=60, what=f"the web server to start:\n{log.read_text(errors='replace')}")
            await sign_in(client, "boss@example.com")
            headers = {"Accept": "text/event-stream"}
            async with client.stream("GET", "/admin/live/", headers=headers) as stream:
                assert stream.status_code == 200
                lines = stream.aiter_lines()
                assert (await anext(lines)).startswith(":")  # the "connected" comment: the stream is open
                signalled = time.monotonic()
                web.send_signal(signal.SIGTERM)

                async def drain() -> None:
                    async for _ in lines:
                        pass

                await asyncio.wait_for(drain(), timeout=10)  # the stream ends; the feed would run for minutes
            assert time.monotonic() - signalled < 10
        assert await asyncio.to_thread(web.wait, 20) == 0
        output = log.read_text(errors="replace")
        assert "Traceback" not in output, output
        assert "HeartbeatManager" not in output, output
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGKILL)
            web.wait(timeout=5)
