"""`python -m bench --scenario catalog`: the public catalog against the machine's own ceiling (#15).

1. The bench database migrated and seeded (the demo catalog), Redis flushed, granian as the Dockerfile runs it.
2. The ceiling: a raw ASGI app (bench/ceiling.py) returning a 22 KB page, served by the same granian with the
   same workers, measured in the same run, just before the pages (so both see the same machine load).
3. Each page (``/``, ``/products``, ``/products?sort=price&page=2``, ``/products?q=guide``, a product page,
   ``/pricing``), anonymous (a returning visitor: the CSRF cookie from a first visit) and signed in (the demo
   customer), at a fixed concurrency for a fixed time after a warm-up; ``--rounds`` interleaves the rounds and
   reports medians.
4. A table: req/s, % of the ceiling, p50, p99, p99/p50, errors, and the CPU accounting of the webhook bench (the
   server's cores and ms of CPU per request). ``--strict`` exits 2 when a target of the issue is missed.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from bench.cpu import Meter
from bench.load import Result, closed_loop

CUSTOMER = ("customer@cartwright.test", "customer-demo-password")
CSRF_COOKIE = "cartwright_csrf"

# The targets: ratios to the ceiling measured in the same run.
ANONYMOUS_SHARE = 15.0  # % of the ceiling, each anonymous page
SIGNED_IN_SHARE = 5.0
ANONYMOUS_P99_MS = 15.0
TAIL_RATIO = 4.0  # p99 / p50, every page


def pages(product_slug: str) -> list[tuple[str, str]]:
    return [
        ("/", "/"),
        ("/products", "/products"),
        ("/products?sort=price&page=2", "/products?sort=price&page=2"),
        ("/products?q=guide", "/products?q=guide"),
        ("a product page", f"/products/{product_slug}"),
        ("/pricing", "/pricing"),
    ]


async def visitor_cookie(base_url: str) -> str:
    """A returning anonymous visitor: the CSRF cookie a first page set, and nothing else."""
    async with httpx.AsyncClient(base_url=base_url) as client:
        first = await client.get("/products")
        if first.status_code != 200 or CSRF_COOKIE not in client.cookies:
            raise SystemExit(f"GET /products: {first.status_code}, no {CSRF_COOKIE} cookie")
        if "cartwright_session" in client.cookies:
            raise SystemExit("an anonymous GET created a session")
        return f"{CSRF_COOKIE}={client.cookies[CSRF_COOKIE]}"


async def customer_cookie(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url) as client:
        await client.get("/login")
        token = client.cookies.get(CSRF_COOKIE) or ""
        response = await client.post(
            "/login", data={"email": CUSTOMER[0], "password": CUSTOMER[1]}, headers={"x-csrftoken": token}
        )
        if response.status_code != 303:
            raise SystemExit(f"customer sign-in failed: {response.status_code} {response.text[:300]}")
        return "; ".join(f"{k}={v}" for k, v in client.cookies.items())


def request_bytes(host: str, port: int, path: str, cookie: str, accept_encoding: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/html"]
    if cookie:
        lines.append(f"Cookie: {cookie}")
    if accept_encoding:
        lines.append(f"Accept-Encoding: {accept_encoding}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def page_ok(status: int, body: bytes) -> bool:
    return status == 200 and len(body) > 1000


async def measure_one(
    name: str, host: str, port: int, request: bytes, opts: argparse.Namespace, *, check: Callable[[int, bytes], bool]
) -> dict[str, Any]:
    def make(_i: int, _slot: int) -> bytes:
        return request

    await closed_loop("warm-up", host, port, make, check, concurrency=opts.catalog_concurrency, seconds=1)
    meter = Meter()
    result: Result = await closed_loop(
        name, host, port, make, check, concurrency=opts.catalog_concurrency, seconds=opts.catalog_seconds
    )
    summary = result.summary()
    if cores := meter.cores():
        summary["cpu_cores"] = cores
        rate = float(summary["per_second"]) or 1.0  # type: ignore[arg-type]
        summary["server_cpu_ms_per_request"] = round(cores.get("server", 0.0) / rate * 1000, 2)
    return summary


def _median(rounds: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in rounds))


def combine(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the rounds (errors summed), with the per-round figures kept."""
    out: dict[str, Any] = {key: _median(rounds, key) for key in ("per_second", "p50_ms", "p95_ms", "p99_ms", "max_ms")}
    out["errors"] = sum(int(r["errors"]) for r in rounds)
    out["requests"] = sum(int(r["requests"]) for r in rounds)
    if all("cpu_cores" in r for r in rounds):
        out["server_cores"] = statistics.median(r["cpu_cores"].get("server", 0.0) for r in rounds)
        out["generator_cores"] = statistics.median(r["cpu_cores"].get("generator", 0.0) for r in rounds)
        out["other_cores"] = statistics.median(r["cpu_cores"].get("other", 0.0) for r in rounds)
        out["server_cpu_ms_per_request"] = statistics.median(r["server_cpu_ms_per_request"] for r in rounds)
    out["rounds"] = rounds
    return out


def verdicts(results: dict[str, Any]) -> list[str]:
    """Each missed target, in words (empty: all met)."""
    ceiling = results["ceiling"]["per_second"] or 1.0
    missed: list[str] = []
    for row in results["pages"]:
        share = 100 * row["per_second"] / ceiling
        label = f"{row['page']} ({row['who']})"
        if row["errors"]:
            missed.append(f"{label}: {row['errors']} errors")
        if row["who"] == "anonymous":
            if share < ANONYMOUS_SHARE:
                missed.append(f"{label}: {share:.1f} % of the ceiling < {ANONYMOUS_SHARE:.0f} %")
            if row["p99_ms"] > ANONYMOUS_P99_MS:
                missed.append(f"{label}: p99 {row['p99_ms']:.1f} ms > {ANONYMOUS_P99_MS:.0f} ms")
        elif share < SIGNED_IN_SHARE:
            missed.append(f"{label}: {share:.1f} % of the ceiling < {SIGNED_IN_SHARE:.0f} %")
        if row["p50_ms"] and row["p99_ms"] / row["p50_ms"] > TAIL_RATIO:
            missed.append(f"{label}: p99/p50 {row['p99_ms'] / row['p50_ms']:.1f} > {TAIL_RATIO:.0f}")
    by = {(r["page"], r["who"]): r for r in results["pages"]}
    pricing, products = by.get(("/pricing", "anonymous")), by.get(("/products", "anonymous"))
    if pricing and products and pricing["per_second"] < products["per_second"]:
        missed.append("/pricing is slower than /products (anonymous)")
    return missed


def table(results: dict[str, Any]) -> str:
    ceiling = results["ceiling"]
    rows: list[tuple[str, ...]] = [
        ("page", "who", "req/s", "% ceiling", "p50 ms", "p99 ms", "p99/p50", "errors", "server cores", "server ms/req")
    ]

    def row(page: str, who: str, r: dict[str, Any]) -> tuple[str, ...]:
        share = 100 * r["per_second"] / (ceiling["per_second"] or 1.0)
        ratio = r["p99_ms"] / r["p50_ms"] if r["p50_ms"] else float("nan")
        return (
            page,
            who,
            f"{r['per_second']:.0f}",
            f"{share:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p99_ms']:.1f}",
            f"{ratio:.1f}",
            str(r["errors"]),
            f"{r.get('server_cores', float('nan')):.2f}",
            f"{r.get('server_cpu_ms_per_request', float('nan')):.2f}",
        )

    rows.append(row("raw ASGI, 22 KB", "ceiling", ceiling))
    rows.extend(row(r["page"], r["who"], r) for r in results["pages"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


def write(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
