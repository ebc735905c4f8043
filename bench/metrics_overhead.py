"""`python -m bench --scenario metrics`: what the Prometheus metrics cost (#14: at most 5 %).

The same app is served twice, side by side on the bench database and Redis: metrics **on** as production runs
them (``PROMETHEUS_MULTIPROC_DIR``: every sample goes to a memory-mapped file shared by granian's workers) and
**off** (``METRICS_ENABLED=false``: no request middleware, no /metrics). Each round measures, on both servers in
turn (the order flips every round, so a machine that gets busier or quieter favours neither), the webhook intake
(closed loop, signed ``payment_intent.succeeded`` events) and an anonymous catalog page. Medians over the rounds;
the cost is ``1 - on / off`` of the throughput.
"""

# ruff: noqa: T201 - printing the progress is what this command is for

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from bench import catalog
from bench.load import closed_loop

TARGET_COST = 5.0  # % of the throughput, the ceiling
PAGE = "/products"


async def measure(
    opts: argparse.Namespace, servers: dict[str, tuple[str, int]], webhooks: dict[str, Any], webhook_ok: Any
) -> dict[str, Any]:
    """``servers``: variant -> (host, port); ``webhooks``: variant -> a ``Webhooks`` for that server."""
    cookies = {name: await catalog.visitor_cookie(f"http://{host}:{port}") for name, (host, port) in servers.items()}
    events = max(500, opts.events // 4)
    rounds: dict[str, dict[str, list[float]]] = {name: {"webhooks": [], "page": []} for name in servers}
    names = list(servers)
    for n in range(max(3, opts.rounds)):
        for name in names if n % 2 == 0 else reversed(names):
            host, port = servers[name]
            hooks = webhooks[name]
            warm = hooks.build(f"w{n}", 200)
            await closed_loop(
                "warm-up", host, port, hooks.maker(warm), webhook_ok, concurrency=opts.concurrency, count=200
            )
            bodies = hooks.build(f"m{n}", events)
            result = await closed_loop(
                "webhooks", host, port, hooks.maker(bodies), webhook_ok, concurrency=opts.concurrency, count=events
            )
            summary = result.summary()
            if summary["errors"]:
                raise SystemExit(f"metrics {name}: {summary['errors']} webhook errors")
            rounds[name]["webhooks"].append(float(summary["per_second"]))  # type: ignore[arg-type]
            request = catalog.request_bytes(host, port, PAGE, cookies[name], "")
            page = await catalog.measure_one(PAGE, host, port, request, opts, check=catalog.page_ok)
            if page["errors"]:
                raise SystemExit(f"metrics {name}: {page['errors']} errors on {PAGE}")
            rounds[name]["page"].append(float(page["per_second"]))
            print(
                f"round {n + 1}: metrics {name}: webhooks {rounds[name]['webhooks'][-1]:.0f}/s, "
                f"{PAGE} {rounds[name]['page'][-1]:.0f}/s"
            )
    medians = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in rounds.items()}
    cost = {
        k: round(100 * (1 - medians["on"][k] / medians["off"][k]), 1) if medians["off"][k] else float("nan")
        for k in ("webhooks", "page")
    }
    return {"rounds": rounds, "medians": medians, "cost_percent": cost, "events_per_round": events}


def verdicts(results: dict[str, Any]) -> list[str]:
    return [
        f"{what}: metrics cost {cost:.1f} % > {TARGET_COST:.0f} %"
        for what, cost in results["cost_percent"].items()
        if cost > TARGET_COST
    ]


def table(results: dict[str, Any]) -> str:
    med, cost = results["medians"], results["cost_percent"]
    rows = [
        ("", "metrics off", "metrics on", "cost"),
        (
            "webhooks/s (closed loop)",
            f"{med['off']['webhooks']:.0f}",
            f"{med['on']['webhooks']:.0f}",
            f"{cost['webhooks']:.1f} %",
        ),
        (
            f"GET {PAGE} /s (anonymous)",
            f"{med['off']['page']:.0f}",
            f"{med['on']['page']:.0f}",
            f"{cost['page']:.1f} %",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in rows
    )


def write(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
