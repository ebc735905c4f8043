"""Issue #14 item 10: a calm console. An idle worker's cron ticks, job starts and sweeps are DEBUG, not INFO; a
failing job still says so at ERROR; in production (LOG_FORMAT=json) every line is one JSON object.

A real SAQ worker (ours, app/server/saq_worker.py) on the test Redis, with a cron that ticks every second, writing
through the logging configuration the app installs (``stdlib_logging_config``) into a buffer.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging.config
import os
from typing import Any

import pytest
from redis.asyncio import Redis
from saq import CronJob
from saq.queue.redis import RedisQueue

from app.lib.settings import parse_log_format
from app.server.logging import stdlib_logging_config
from app.server.saq_worker import GracefulWorker, dequeue_timeout
from tests.helpers import until
from tests.support import redis_test_url

TICKS = 3


@pytest.fixture
async def redis_client() -> Any:
    # A database of this test worker's own (the app's are 10-13, e2e's 14, the cluster test's 15).
    url = redis_test_url(6 + int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0))
    assert url is not None, "these tests need the test Redis (TEST_REDIS_URL)"
    client = Redis.from_url(url)
    await client.flushdb()
    yield client
    await client.aclose()


def restore() -> None:
    install("INFO", "json")


def install(level: str, fmt: str, stream: io.StringIO | None = None) -> None:
    config: dict[str, Any] = {"version": 1, "disable_existing_loggers": False, **stdlib_logging_config(level, fmt)}
    if stream is not None:
        config["handlers"]["console"]["stream"] = stream
    logging.config.dictConfig(config)


async def run_worker_for_ticks(redis: Redis, name: str, *, fail: bool = False) -> None:
    ticks: list[int] = []

    async def tick(ctx: Any) -> None:
        ticks.append(1)
        if fail:
            raise RuntimeError("the job broke")

    queue = RedisQueue(redis, name=name)
    worker = GracefulWorker(
        queue,
        functions=[tick],
        cron_jobs=[CronJob(tick, cron="* * * * * *", retries=1)],  # every second
        timers={"schedule": 1},
        dequeue_timeout=dequeue_timeout(1.0),
        separate_process=True,
        enable_heartbeat_manager=False,
    )
    task = asyncio.create_task(worker.start())
    try:
        await until(lambda: asyncio.sleep(0, len(ticks) >= TICKS), timeout=20, what=f"{TICKS} cron ticks")
    finally:
        await worker.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("fmt", ["json", "console"])
async def test_an_idle_worker_writes_no_info_lines(redis_client: Redis, fmt: str) -> None:
    out = io.StringIO()
    install("INFO", fmt, out)
    try:
        await run_worker_for_ticks(redis_client, f"log-idle-{fmt}")
    finally:
        restore()
    lines = [line for line in out.getvalue().splitlines() if line.strip()]
    if fmt == "json":
        levels = [json.loads(line)["level"] for line in lines]
        assert "info" not in levels, lines
    else:
        assert not [line for line in lines if "[info" in line], lines


async def test_json_lines_parse_and_a_failing_job_still_logs_an_error(redis_client: Redis) -> None:
    out = io.StringIO()
    install("INFO", "json", out)
    try:
        await run_worker_for_ticks(redis_client, "log-failing", fail=True)
    finally:
        restore()
    records = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    errors = [r for r in records if r["level"] == "error" and r["logger"].startswith("saq")]
    assert errors, records
    assert "the job broke" in errors[0]["exception"]
    assert all("timestamp" in r and "event" in r for r in records)


async def test_debug_level_shows_the_routine_lines(redis_client: Redis) -> None:
    out = io.StringIO()
    install("DEBUG", "json", out)
    try:
        await run_worker_for_ticks(redis_client, "log-debug")
    finally:
        restore()
    records = [json.loads(line) for line in out.getvalue().splitlines() if line.strip()]
    assert any(r["event"].startswith("Processing") and r["level"] == "debug" for r in records), records


def test_log_format_defaults_to_json_off_a_terminal_and_refuses_nonsense() -> None:
    assert parse_log_format(None) == "json"  # pytest's stderr is not a terminal
    assert parse_log_format("Console") == "console"
    with pytest.raises(ValueError, match="LOG_FORMAT"):
        parse_log_format("xml")
