"""`python -m bench --scenario dashboard`: the admin dashboard (``GET /admin``) on a large, realistic data set.

1. A dedicated PostgreSQL database (``BENCH_DASHBOARD_DATABASE_URL``), migrated and seeded, then filled once by
   bulk COPY: customers, 100k orders over a year with their lines, payments (declines too), refunds, a plan with
   monthly and yearly prices, subscriptions (trials, switches, cancellations) with their monthly invoices, and
   credit usage; then the MRR movements are derived (``rebuild_subscription_metrics``) and the tables analysed.
   Kept between runs (``--fresh`` starts over).
2. granian as in production; the demo admin signs in.
3. **Cold**: the analytics cache invalidated (its version bumped, as an order paid does) before each request.
   **Warm**: sequential requests (one connection) of the same page, then a few connections at once.
"""

# ruff: noqa: T201 - printing the progress and the table is what this command is for

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import httpx
from redis import Redis
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from bench.load import closed_loop

NUMBER_BASE = 10_000_000  # generated order numbers: far above what the app's counter hands out
ADMIN = ("admin@cartwright.test", "admin-demo-password")
VERSION_KEY = "cartwright:analytics:version"  # app.domain.analytics.cache.ANALYTICS_CACHE.version_key


def _audit(now: datetime) -> tuple[datetime, datetime]:
    return now, now


async def generate(dsn: str, *, orders: int, seed: int = 42) -> dict[str, int]:
    """Bulk-insert the data set with COPY. Returns the row counts."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    conn = await asyncpg.connect(dsn)
    try:
        products = list(await conn.fetch("SELECT id, name, slug, price FROM products WHERE currency = 'CAD'"))
        if not products:
            raise SystemExit("no products: did `cartwright seed` run?")
        counts: dict[str, int] = {}

        # Customers, created over two years (a few a day more lately).
        users = []
        for i in range(orders // 5):
            created = now - timedelta(days=730 * rng.random() ** 1.3, seconds=rng.randint(0, 86399))
            users.append(
                (
                    uuid.uuid4(),
                    f"bench{i}@example.com",
                    "Bench Customer",
                    "!",
                    "customer",
                    True,
                    0,
                    False,
                    created,
                    created,
                )
            )
        await conn.copy_records_to_table(
            "users",
            records=users,
            columns=[
                "id",
                "email",
                "name",
                "password_hash",
                "role",
                "is_active",
                "session_epoch",
                "holder_pricing",
                "created_at",
                "updated_at",
            ],
        )
        counts["users"] = len(users)

        order_rows, line_rows, payment_rows, refund_rows = [], [], [], []
        for n in range(orders):
            placed = now - timedelta(days=365 * rng.random() ** 1.15, seconds=rng.randint(0, 86399))
            order_id = uuid.uuid4()
            picks = rng.sample(products, rng.randint(1, 3))
            subtotal = 0
            for position, product in enumerate(picks):
                quantity = 1 if rng.random() < 0.9 else 2
                line_subtotal = int(product["price"]) * quantity
                subtotal += line_subtotal
                line_rows.append(
                    (
                        uuid.uuid4(),
                        order_id,
                        position,
                        product["id"],
                        product["name"],
                        product["slug"],
                        int(product["price"]),
                        quantity,
                        line_subtotal,
                        line_subtotal * 5 // 100,
                        5,
                        True,
                        placed,
                        placed,
                    )
                )
            tax = sum(r[9] for r in line_rows[-len(picks) :])
            total = subtotal + tax
            roll = rng.random()
            paid = roll > 0.03
            refunded = 0
            status = "paid" if paid else "pending"
            if paid and roll > 0.95:
                refunded = total if roll > 0.98 else total // 2
                status = "refunded" if refunded == total else "partially_refunded"
                refund_rows.append(
                    (
                        uuid.uuid4(),
                        order_id,
                        f"re_bench_{n}",
                        refunded,
                        "CAD",
                        "succeeded",
                        "requested_by_customer",
                        placed + timedelta(days=rng.randint(0, 10)),
                        placed + timedelta(days=rng.randint(0, 10)),
                    )
                )
            user = rng.choice(users) if rng.random() < 0.7 else None
            paid_at = placed + timedelta(seconds=30) if paid else None
            order_rows.append(
                (
                    order_id,
                    NUMBER_BASE + n,
                    user[0] if user else None,
                    user[1] if user else f"guest{n}@example.com",
                    "Bench",
                    "CA",
                    "AB",
                    "T2P 1J9",
                    status,
                    "CAD",
                    subtotal,
                    tax,
                    total,
                    refunded,
                    "[]",
                    f"pi_bench_{n}",
                    "",
                    paid_at,
                    paid_at,
                    placed if status == "refunded" else None,
                    placed,
                    placed,
                )
            )
            payment_rows.append(
                (
                    uuid.uuid4(),
                    order_id,
                    f"pi_bench_{n}",
                    total,
                    "CAD",
                    "succeeded" if paid else rng.choice(["failed", "canceled", "requires_action"]),
                    "",
                    0,
                    placed,
                    placed,
                )
            )
        await conn.copy_records_to_table(
            "orders",
            records=order_rows,
            columns=[
                "id",
                "number",
                "user_id",
                "email",
                "billing_name",
                "country",
                "region",
                "postal_code",
                "status",
                "currency",
                "subtotal",
                "tax_total",
                "total",
                "amount_refunded",
                "tax_breakdown",
                "payment_intent_id",
                "visitor_token_hash",
                "paid_at",
                "fulfilled_at",
                "refunded_at",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "order_lines",
            records=line_rows,
            columns=[
                "id",
                "order_id",
                "position",
                "product_id",
                "product_name",
                "product_slug",
                "unit_price",
                "quantity",
                "subtotal",
                "tax",
                "download_limit",
                "has_download",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "payments",
            records=payment_rows,
            columns=[
                "id",
                "order_id",
                "payment_intent_id",
                "amount",
                "currency",
                "status",
                "failure_message",
                "last_event_created",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "refunds",
            records=refund_rows,
            columns=[
                "id",
                "order_id",
                "stripe_refund_id",
                "amount",
                "currency",
                "status",
                "reason",
                "created_at",
                "updated_at",
            ],
        )
        counts |= {
            "orders": len(order_rows),
            "order_lines": len(line_rows),
            "payments": len(payment_rows),
            "refunds": len(refund_rows),
        }

        # A plan with three prices, subscriptions for 3% of the customers, one invoice per paid cycle.
        plan_id = uuid.uuid4()
        await conn.execute(
            "INSERT INTO plans (id, name, slug, description, features, trial_days, is_active, position,"
            " credits_roll_over, allow_cancel_now, created_at, updated_at)"
            " VALUES ($1, 'Bench plan', $2, '', '[]', 14, false, 99, false, false, now(), now())",
            plan_id,
            f"bench-plan-{plan_id.hex[:8]}",
        )
        prices = [(uuid.uuid4(), "month", 2000), (uuid.uuid4(), "month", 4900), (uuid.uuid4(), "year", 19900)]
        for price_id, interval, amount in prices:
            await conn.execute(
                "INSERT INTO plan_prices (id, plan_id, interval, tier, amount, currency, is_active, created_at,"
                " updated_at) VALUES ($1, $2, $3, 'standard', $4, 'CAD', false, now(), now())",
                price_id,
                plan_id,
                interval,
                amount,
            )
        subs, invoices = [], []
        for n, user in enumerate(rng.sample(users, max(1, len(users) * 3 // 20))):
            price_id, interval, amount = rng.choice(prices)
            start = now - timedelta(days=rng.randint(1, 700))
            trial = rng.random() < 0.15
            cancel = start + timedelta(days=rng.randint(20, 400)) if rng.random() < 0.25 else None
            cancel = cancel if cancel and cancel < now else None
            switch_to = rng.choice(prices) if interval == "month" and rng.random() < 0.15 else None
            switch_to = switch_to if switch_to and switch_to[1] == "month" and switch_to[0] != price_id else None
            sub_id = uuid.uuid4()
            paid_from = start + timedelta(days=14 if trial else 0)
            current = switch_to or (price_id, interval, amount)
            status = "canceled" if cancel else ("trialing" if paid_from > now else "active")
            subs.append(
                (
                    sub_id,
                    user[0],
                    plan_id,
                    current[0],
                    f"sub_bench_{n}",
                    f"cus_bench_{n}",
                    "",
                    status,
                    1,
                    False,
                    cancel,
                    cancel,
                    paid_from if trial else None,
                    0,
                    start,
                    start,
                )
            )
            invoices.append(
                (
                    uuid.uuid4(),
                    f"in_bench_{n}_0",
                    user[0],
                    sub_id,
                    "paid",
                    "subscription_create",
                    0 if trial else amount,
                    0 if trial else amount,
                    "CAD",
                    start,
                    start,
                    start,
                )
            )
            step = timedelta(days=365 if interval == "year" else 30)
            moment, k, switch_at = (paid_from if trial else start + step), 1, None
            if switch_to:
                switch_at = start + timedelta(days=rng.randint(5, 300))
                if switch_at < now and (cancel is None or switch_at < cancel):
                    invoices.append(
                        (
                            uuid.uuid4(),
                            f"in_bench_{n}_u",
                            user[0],
                            sub_id,
                            "paid",
                            "subscription_update",
                            500,
                            500,
                            "CAD",
                            switch_at,
                            switch_at,
                            switch_at,
                        )
                    )
            while moment < now and (cancel is None or moment < cancel):
                charge = switch_to[2] if switch_to and switch_at and moment > switch_at else amount
                invoices.append(
                    (
                        uuid.uuid4(),
                        f"in_bench_{n}_{k}",
                        user[0],
                        sub_id,
                        "paid",
                        "subscription_cycle",
                        charge,
                        charge,
                        "CAD",
                        moment,
                        moment,
                        moment,
                    )
                )
                moment, k = moment + step, k + 1
        await conn.copy_records_to_table(
            "subscriptions",
            records=subs,
            columns=[
                "id",
                "user_id",
                "plan_id",
                "plan_price_id",
                "stripe_subscription_id",
                "stripe_customer_id",
                "stripe_price_id",
                "status",
                "quantity",
                "cancel_at_period_end",
                "canceled_at",
                "ended_at",
                "trial_end",
                "last_event_created",
                "created_at",
                "updated_at",
            ],
        )
        await conn.copy_records_to_table(
            "invoices",
            records=[(*row, "", "", "", 0, 0) for row in invoices],
            columns=[
                "id",
                "stripe_invoice_id",
                "user_id",
                "subscription_id",
                "status",
                "billing_reason",
                "amount_due",
                "amount_paid",
                "currency",
                "stripe_created",
                "created_at",
                "updated_at",
                "number",
                "hosted_invoice_url",
                "invoice_pdf",
                "attempt_count",
                "last_event_created",
            ],
        )
        counts |= {"subscriptions": len(subs), "invoices": len(invoices)}

        credit_type = await conn.fetchval("SELECT id FROM credit_types ORDER BY code LIMIT 1")
        if credit_type is None:
            credit_type = uuid.uuid4()
            await conn.execute(
                "INSERT INTO credit_types (id, code, name, unit, created_at, updated_at)"
                " VALUES ($1, 'bench-hours', 'Bench hours', 'hours', now(), now())",
                credit_type,
            )
        credits = []
        for n in range(orders // 20):
            user = subs[rng.randrange(len(subs))]
            moment = now - timedelta(days=365 * rng.random())
            credits.append(
                (uuid.uuid4(), user[1], credit_type, -rng.randint(1, 3), "usage", "", f"bench-{n}", moment, moment)
            )
        await conn.copy_records_to_table(
            "credit_entries",
            records=credits,
            columns=[
                "id",
                "user_id",
                "credit_type_id",
                "amount",
                "kind",
                "reason",
                "reference",
                "created_at",
                "updated_at",
            ],
        )
        counts["credit_entries"] = len(credits)
        await conn.execute("ANALYZE")
        return counts
    finally:
        await conn.close()


async def derive_movements(url: str) -> float:
    from app.domain.analytics.movements import rebuild_subscription_metrics

    engine = create_async_engine(url)
    started = time.perf_counter()
    try:
        async with AsyncSession(engine, expire_on_commit=False) as db:
            await rebuild_subscription_metrics(db)
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def prepare(opts: argparse.Namespace, dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        existing = int(await conn.fetchval("SELECT count(*) FROM orders WHERE number >= $1", NUMBER_BASE))
    finally:
        await conn.close()
    if existing >= opts.orders:
        print(f"data set: {existing} generated orders already there (--fresh to start over)")
        return {"orders": existing, "reused": True}
    if existing:
        raise SystemExit(f"{existing} generated orders, fewer than --orders {opts.orders}: run with --fresh")
    print(f"data set: generating {opts.orders} orders and the rest with COPY...")
    started = time.perf_counter()
    counts = await generate(dsn, orders=opts.orders)
    counts["generate_seconds"] = round(time.perf_counter() - started, 1)
    counts["derive_movements_seconds"] = round(await derive_movements(opts.database_url), 1)
    print(f"data set: {counts}")
    return counts


async def sign_in(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as client:
        await client.get("/login")
        token = client.cookies.get("cartwright_csrf") or ""
        response = await client.post(
            "/login", data={"email": ADMIN[0], "password": ADMIN[1]}, headers={"x-csrftoken": token}
        )
        if response.status_code != 303:
            raise SystemExit(f"admin sign-in failed: {response.status_code} {response.text[:300]}")
        page = await client.get("/admin")
        if page.status_code != 200 or 'data-kpi="gross"' not in page.text:
            raise SystemExit(f"GET /admin as admin: {page.status_code}, no KPIs:\n{page.text[:500]}")
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


def _dashboard_ok(status: int, body: bytes) -> bool:
    return status == 200 and b'data-kpi="gross"' in body


async def measure(opts: argparse.Namespace, base_url: str, host: str, port: int) -> dict[str, Any]:
    cookie = await sign_in(base_url)
    path = "/admin?period=30d"
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/html\r\nCookie: {cookie}\r\n\r\n".encode()
    redis = Redis.from_url(opts.redis_url, socket_timeout=5)
    cold: list[float] = []
    try:
        async with httpx.AsyncClient(base_url=base_url, headers={"Cookie": cookie}, timeout=30) as client:
            for _ in range(opts.cold_requests):
                redis.incr(VERSION_KEY)  # what every order paid, refund or mirror does
                started = time.perf_counter()
                response = await client.get(path)
                cold.append((time.perf_counter() - started) * 1000)
                if not _dashboard_ok(response.status_code, response.content):
                    raise SystemExit(f"cold GET {path}: {response.status_code}")
    finally:
        redis.close()
    print(f"cold: {len(cold)} requests, each after an invalidation")
    await closed_loop("warm-up", host, port, lambda _i, _s: request, _dashboard_ok, concurrency=1, count=50)
    warm = await closed_loop(
        "warm", host, port, lambda _i, _s: request, _dashboard_ok, concurrency=1, count=opts.warm_requests
    )
    print(f"warm: {opts.warm_requests} sequential requests")
    parallel = await closed_loop(
        "warm x4", host, port, lambda _i, _s: request, _dashboard_ok, concurrency=4, count=opts.warm_requests
    )
    return {
        "cold_ms": {
            "requests": len(cold),
            "median": round(statistics.median(cold), 1),
            "max": round(max(cold), 1),
            "all": [round(c, 1) for c in cold],
        },
        "warm_sequential": warm.summary(),
        "warm_4_connections": parallel.summary(),
        "page_bytes": len(request),
    }


def report(results: dict[str, Any], data: dict[str, Any], info: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps({"data_set": data, "machine": info, "results": results}, indent=2) + "\n")
    warm, par, cold = results["warm_sequential"], results["warm_4_connections"], results["cold_ms"]
    print()
    print(f"GET /admin?period=30d as admin, {data.get('orders')} orders")
    print(f"  cold (cache invalidated): median {cold['median']} ms, max {cold['max']} ms over {cold['requests']}")
    print(f"  warm, 1 connection:  p50 {warm['p50_ms']} ms  p99 {warm['p99_ms']} ms  ({warm['per_second']}/s)")
    print(f"  warm, 4 connections: p50 {par['p50_ms']} ms  p99 {par['p99_ms']} ms  ({par['per_second']}/s)")
    print(
        f"  targets: warm p99 <= 100 ms -> {'met' if warm['p99_ms'] <= 100 else 'MISSED'}; "
        f"cold <= 1 s -> {'met' if cold['max'] <= 1000 else 'MISSED'}"
    )
    print(f"  machine: load average at start {info.get('load_average_at_start')}; wrote {path}")
