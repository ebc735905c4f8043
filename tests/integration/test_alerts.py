"""Issue #14 item 2: alert rules that Prometheus evaluates, checked with promtool; the same conditions emailed
to admins by the app itself, at most once an hour per alert."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from saq import Queue
from sqlalchemy import func, select

from app.db import models as m
from app.domain.notifications.services import EmailService
from app.domain.system.alerts import email_admins, evaluate
from app.lib.runtime import Runtime
from tests.conftest import Factory

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy/prometheus"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing (Debian package prometheus; .ci/run installs it)")
        pytest.skip("promtool is not installed (apt install prometheus); CI installs it and runs this")
    return found


def test_the_rules_are_valid_and_each_alert_fires_on_its_condition_only() -> None:
    tool = promtool()
    subprocess.run([tool, "check", "rules", str(RULES / "alerts.yml")], check=True, capture_output=True)
    # compose.yaml's Prometheus: its configuration, with the rules file it loads.
    subprocess.run([tool, "check", "config", str(RULES / "prometheus.yml")], check=True, capture_output=True)
    tested = subprocess.run(
        [tool, "test", "rules", str(RULES / "alerts.test.yml")], capture_output=True, text=True, check=False
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # Every alert in the file has a test that makes it fire.
    rules = (RULES / "alerts.yml").read_text()
    tests = (RULES / "alerts.test.yml").read_text()
    names = [line.split(":", 1)[1].strip() for line in rules.splitlines() if line.strip().startswith("- alert:")]
    assert len(names) == 8
    for name in names:
        assert f"alertname: {name}" in tests, name


async def failed_payments(runtime: Runtime, *, failed: int, succeeded: int, at: datetime) -> None:
    async with runtime.db() as db:
        for n in range(failed + succeeded):
            order = m.Order(
                number=900_000 + n,
                email=f"buyer{n}@example.com",
                billing_name="B",
                country="CA",
                currency="CAD",
                subtotal=1000,
                tax_total=0,
                total=1000,
                created_at=at - timedelta(hours=2),  # placed a while ago: the webhook-silence rule stays out of it
            )
            db.add(order)
            await db.flush()
            status = m.PaymentStatus.FAILED if n < failed else m.PaymentStatus.SUCCEEDED
            db.add(
                m.Payment(
                    order_id=order.id,
                    payment_intent_id=f"pi_alert_{uuid4().hex}",
                    amount=1000,
                    currency="CAD",
                    status=status.value,
                    updated_at=at,
                )
            )
        await db.commit()


async def test_a_payment_failure_spike_emails_every_admin_once_an_hour(
    runtime: Runtime, factory: Factory, queue: Queue
) -> None:
    await factory.user(email="owner@example.com", role="admin")
    await factory.user(email="second@example.com", role="admin")
    await factory.user(email="helper@example.com", role="support")
    now = datetime.now(UTC)
    await failed_payments(runtime, failed=9, succeeded=3, at=now - timedelta(minutes=5))

    async def watch(at: datetime) -> int:
        async with runtime.db() as db:
            alerts = await evaluate(db, queue, runtime.redis, runtime.settings, now=at)
            assert [a.name for a in alerts] == ["payment_failures"]
            assert alerts[0].message == "9 of 12 order payments failed in the last 15 minutes."
            return await email_admins(db, EmailService(db, queue=None), alerts, now=at)

    assert await watch(now) == 1
    assert await watch(now + timedelta(minutes=5)) == 0  # still failing: not again within the hour
    async with runtime.db() as db:
        to = sorted(await db.scalars(select(m.EmailMessage.to_address).where(m.EmailMessage.kind == "ops_alert")))
        subject = await db.scalar(select(m.EmailMessage.subject).where(m.EmailMessage.kind == "ops_alert"))
    assert to == ["owner@example.com", "second@example.com"]  # admins, not support
    assert subject == "Cartwright alert: 9 of 12 order payments failed in the last 15 minutes."
    # An hour on, if it still holds, it is said again.
    async with runtime.db() as db:
        alerts = await evaluate(db, queue, runtime.redis, runtime.settings, now=now)
        assert await email_admins(db, EmailService(db, queue=None), alerts, now=now + timedelta(minutes=61)) == 1
        sent = await db.scalar(
            select(func.count()).select_from(m.EmailMessage).where(m.EmailMessage.kind == "ops_alert")
        )
    assert sent == 4


async def test_few_failures_and_a_calm_shop_raise_nothing(runtime: Runtime, factory: Factory, queue: Queue) -> None:
    now = datetime.now(UTC)
    await failed_payments(runtime, failed=4, succeeded=0, at=now - timedelta(minutes=5))  # under 10 tries
    async with runtime.db() as db:
        assert await evaluate(db, queue, runtime.redis, runtime.settings, now=now) == []


async def test_an_outbox_stuck_for_ten_minutes_is_an_alert(runtime: Runtime, queue: Queue) -> None:
    now = datetime.now(UTC)
    async with runtime.db() as db:
        for n in range(21):
            db.add(
                m.EmailMessage(
                    kind="receipt",
                    to_address=f"c{n}@example.com",
                    subject="s",
                    text_body="t",
                    html_body="h",
                    created_at=now - timedelta(minutes=11),
                )
            )
        await db.commit()
        alerts = await evaluate(db, queue, runtime.redis, runtime.settings, now=now)
    assert [(a.name, a.message) for a in alerts] == [
        ("outbox_backlog", "21 emails have waited over 10 minutes to be sent.")
    ]
