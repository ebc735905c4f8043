"""A small HTTP/1.1 load generator: keep-alive connections on asyncio streams, latency percentiles.

Two shapes of load:

- ``closed_loop``: ``concurrency`` connections, each sending its next request as soon as the previous answer
  arrives. Measures the most the server can do; latency then includes the queue the client itself builds
  (Little's law: p50 ~= concurrency / throughput), so a saturation p99 says little about a latency target.
- ``open_loop``: requests *scheduled* at a fixed rate whether or not earlier ones have come back, each timed
  from its scheduled instant (no coordinated omission: a stall shows up in the percentiles). This is the one to
  hold against "p99 at N requests/s".

Why a bare HTTP/1.1 exchange rather than httpx in the hot loop: the generator shares the machine's cores with
the server, PostgreSQL and Redis, and httpx spends several times more CPU per request than this (measured in
docs/benchmarks.md), CPU that would be taken from the server being measured. The setup requests (CSRF cookie,
cart) use httpx.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

MakeRequest = Callable[[int, int], bytes]  # (request index, connection index) -> the complete request bytes
Check = Callable[[int, bytes], bool]  # (status, body) -> is this a success


class Connection:
    """One keep-alive HTTP/1.1 connection; reopens itself when the server closes it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            await self.open()
        assert self.reader is not None
        assert self.writer is not None
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value
            elif name == b"connection":
                close = value == b"close"
        body = await self._chunked() if chunked else await self.reader.readexactly(length)
        if close:
            self.close()
        return status, body

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        parts = []
        while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
            parts.append(await self.reader.readexactly(size + 2))
        await self.reader.readuntil(b"\r\n")  # no trailers from our server; the blank line ends the body
        return b"".join(part[:-2] for part in parts)


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)  # seconds, every request (failed ones too)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    elapsed: float = 0.0
    connections: int = 0
    not_sent: int = 0  # open loop: requests dropped once the server had fallen too far behind

    def record(self, latency: float, status: str, ok: bool) -> None:
        self.latencies.append(latency)
        self.statuses[status] += 1
        self.errors += not ok

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile in milliseconds."""
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] * 1000 if ordered else math.nan

    def summary(self) -> dict[str, object]:
        count = len(self.latencies)
        return {
            "requests": count,
            "errors": self.errors,
            "seconds": round(self.elapsed, 2),
            "per_second": round(count / self.elapsed, 1) if self.elapsed else 0.0,
            "p50_ms": round(self.percentile(50), 2),
            "p95_ms": round(self.percentile(95), 2),
            "p99_ms": round(self.percentile(99), 2),
            "max_ms": round(self.percentile(100), 2),
            "connections": self.connections,
            "not_sent": self.not_sent,
            "statuses": dict(self.statuses),
        }


async def _timed(conn: Connection, request: bytes, check: Check, result: Result, started: float) -> None:
    try:
        status, body = await conn.exchange(request)
        result.record(time.perf_counter() - started, str(status), check(status, body))
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        conn.close()  # reopened on the next request
        result.record(time.perf_counter() - started, type(exc).__name__, ok=False)


async def closed_loop(
    name: str,
    host: str,
    port: int,
    make_request: MakeRequest,
    check: Check,
    *,
    concurrency: int,
    count: int | None = None,
    seconds: float | None = None,
) -> Result:
    """``count`` requests, or as many as fit in ``seconds``, over ``concurrency`` busy connections."""
    conns = [await Connection(host, port).open() for _ in range(concurrency)]
    result, indices = Result(name, connections=concurrency), itertools.count()
    start = time.perf_counter()
    deadline = start + seconds if seconds else math.inf

    async def run(slot: int) -> None:
        while (i := next(indices)) < (count if count is not None else math.inf) and time.perf_counter() < deadline:
            await _timed(conns[slot], make_request(i, slot), check, result, time.perf_counter())

    try:
        await asyncio.gather(*(run(slot) for slot in range(concurrency)))
    finally:
        result.elapsed = time.perf_counter() - start
        for conn in conns:
            conn.close()
    return result


async def open_loop(
    name: str,
    host: str,
    port: int,
    make_request: MakeRequest,
    check: Check,
    *,
    rate: float,
    seconds: float,
    max_connections: int = 256,
    preopen: int = 32,
    max_backlog_seconds: float = 1.0,
) -> Result:
    """``rate * seconds`` requests at a fixed rate, each timed from when it was due, not when it was sent.

    Once more than ``max_backlog_seconds`` worth of requests are waiting, the server cannot sustain the rate:
    the rest are not sent (``not_sent``) rather than piling up a backlog that takes minutes to drain.
    """
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    opened = [await Connection(host, port).open() for _ in range(preopen)]
    for conn in opened:
        idle.put_nowait(conn)
    result, total = Result(name), int(rate * seconds)
    tasks: set[asyncio.Task[None]] = set()

    async def one(i: int, due: float) -> None:
        if idle.empty() and len(opened) < max_connections:
            opened.append(Connection(host, port))  # opened by its first exchange, inside the timed interval
            conn = opened[-1]
        else:
            conn = await idle.get()
        await _timed(conn, make_request(i, 0), check, result, due)
        idle.put_nowait(conn)

    start, sent = time.perf_counter() + 0.05, 0
    while sent < total:
        if len(tasks) > rate * max_backlog_seconds:
            result.not_sent = total - sent
            break
        due_now = min(total, int((time.perf_counter() - start) * rate) + 1)
        for i in range(sent, due_now):
            task = asyncio.create_task(one(i, start + i / rate))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        sent = max(sent, due_now)
        await asyncio.sleep(max(0.0, start + sent / rate - time.perf_counter()))
    while tasks:
        await asyncio.gather(*tasks)
    result.elapsed = time.perf_counter() - start
    result.connections = len(opened)
    for conn in opened:
        with contextlib.suppress(Exception):
            conn.close()
    return result
