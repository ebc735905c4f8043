"""Retry backoff: failed webhook events (base x 2^(attempts-1), capped at six hours) and Stripe 429s in the sync."""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta

import pytest
import stripe
from hypothesis import given
from hypothesis import strategies as st

from app.domain.payments.jobs import MAX_RETRY_BACKOFF, retry_backoff
from app.lib.stripe_gateway import with_backoff

SIX_HOURS = timedelta(hours=6)


def test_failed_events_wait_base_then_double_each_attempt() -> None:
    assert [retry_backoff(attempts, 60).total_seconds() for attempts in (1, 2, 3, 4)] == [60, 120, 240, 480]
    assert retry_backoff(0, 60) == timedelta(seconds=60)  # never shorter than the base


def test_failed_events_never_wait_more_than_six_hours() -> None:
    assert MAX_RETRY_BACKOFF == SIX_HOURS
    assert retry_backoff(9, 60) == timedelta(seconds=60 * 256)  # 4 h 16 min, under the cap
    assert retry_backoff(10, 60) == SIX_HOURS  # 8 h 32 min, capped
    assert retry_backoff(1, 6 * 3600) == SIX_HOURS  # exactly the cap
    assert retry_backoff(1, 6 * 3600 + 1) == SIX_HOURS
    # A high STRIPE_EVENT_MAX_ATTEMPTS: 60 s x 2^499 is beyond timedelta's range; the sweep must not crash on it.
    assert retry_backoff(500, 60) == SIX_HOURS


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=1, max_value=3600))
def test_backoff_is_exponential_capped_and_never_shrinks(attempts: int, base: int) -> None:
    wait = retry_backoff(attempts, base)
    assert wait.total_seconds() == min(base * 2 ** (attempts - 1), 6 * 3600)
    assert timedelta(seconds=base) <= wait or wait == SIX_HOURS
    assert retry_backoff(attempts + 1, base) >= wait


class Flaky:
    """A Stripe read that answers 429 ``failures`` times, then succeeds."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.calls = failures, 0
        self.error = error or stripe.RateLimitError("Too many requests")

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "listed"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays ``with_backoff`` asks for, recorded instead of waited (the stdlib sleep, not our code)."""
    asked: list[float] = []
    real_sleep, test_thread = asyncio.sleep, threading.current_thread()

    async def record(delay: float) -> None:
        # Only this test's own calls: in a full run, servers in other threads (the Stripe emulator's) sleep too.
        if threading.current_thread() is not test_thread:
            await real_sleep(delay)
            return
        asked.append(delay)

    monkeypatch.setattr(asyncio, "sleep", record)
    return asked


def test_a_429_is_retried_with_doubling_jittered_delays_up_to_the_cap(sleeps: list[float]) -> None:
    call = Flaky(failures=5)
    assert asyncio.run(with_backoff(call, attempts=6, base_delay=1.0, max_delay=10.0)) == "listed"
    assert call.calls == 6
    nominal = [1.0, 2.0, 4.0, 8.0, 10.0]  # 16 is capped at max_delay
    assert len(sleeps) == len(nominal)
    for delay, full in zip(sleeps, nominal, strict=True):
        # Jitter takes 50-100 % of the nominal delay: concurrent readers spread out, none waits longer than planned.
        assert full / 2 <= delay <= full


def test_after_the_last_attempt_the_429_reaches_the_caller(sleeps: list[float]) -> None:
    call = Flaky(failures=10)
    with pytest.raises(stripe.RateLimitError, match="Too many requests"):
        asyncio.run(with_backoff(call, attempts=3, base_delay=0.5))
    assert call.calls == 3
    assert len(sleeps) == 2  # no pointless wait after the last attempt


def test_other_errors_are_not_retried(sleeps: list[float]) -> None:
    call = Flaky(failures=1, error=stripe.InvalidRequestError("No such price", param="price"))
    with pytest.raises(stripe.InvalidRequestError, match="No such price"):
        asyncio.run(with_backoff(call))
    assert (call.calls, sleeps) == (1, [])


def test_a_success_at_once_does_not_wait(sleeps: list[float]) -> None:
    assert asyncio.run(with_backoff(Flaky(failures=0))) == "listed"
    assert sleeps == []
