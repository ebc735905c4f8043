"""`python -m bench sync` (`make bench-sync`): the full Stripe re-sync at scale, against the emulator and PostgreSQL.

1. The emulator, started as its own process, is filled with ``--customers`` customers, each with a subscription,
   ``--invoices-per-customer`` paid invoices and one-off PaymentIntents with charges (every fifth refunded):
   ``POST /_emulator/seed_history``, straight into its state.
2. A fresh PostgreSQL database, migrated; a share of the customers (``--local-share``) have an account here with
   the same e-mail and no Stripe link, so the sync links them and mirrors their subscriptions and invoices; the
   rest are Stripe-only and counted as skipped.
3. ``cartwright stripe sync`` runs twice as a child process (the first sync, then a second one that should find
   everything unchanged). For each: wall time, objects/s, CPU seconds and the peak RSS of the syncing process
   (``wait4``), and the most requests the emulator ever had in flight at once (must be <= 2).
4. A table on stdout and the figures in ``bench/results/sync.json``.
"""

# ruff: noqa: T201 - printing the progress and the table is what this command is for

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.run import BIN, RESULTS, ROOT, _env, _grid, _run, create_database, free_port, machine, serve, sql


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench sync", description=__doc__.split("\n\n")[0])
    add = p.add_argument
    add(
        "--database-url",
        default=_env("BENCH_SYNC_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/cartwright_bench_sync"),
    )
    add("--redis-url", default=_env("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9"))
    add("--customers", type=int, default=int(_env("BENCH_SYNC_CUSTOMERS", "50000")))
    add("--invoices-per-customer", type=int, default=2, help="50k customers x 2 = the issue's 100k invoices")
    add("--local-share", type=float, default=0.1, help="share of the customers with an account here")
    add("--no-second", action="store_true", help="skip the second (all unchanged) sync")
    return p.parse_args(argv)


def control(url: str, path: str, payload: dict[str, Any] | None = None, method: str = "POST") -> Any:
    request = urllib.request.Request(  # noqa: S310 - our local emulator
        f"{url}/_emulator/{path}",
        data=None if payload is None else json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method=method,
    )
    with urllib.request.urlopen(request, timeout=3600) as response:  # noqa: S310
        return json.loads(response.read())


def run_sync(env: dict[str, str], log: Path) -> dict[str, Any]:
    """One `cartwright stripe sync` child: wall time, CPU time and peak RSS (from wait4, so exactly this process)."""
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - our own venv's binary
            [str(BIN / "cartwright"), "stripe", "sync", "--no-resume"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    if proc.returncode:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"cartwright stripe sync exited {proc.returncode}:\n{tail}")
    return {
        "seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux: kilobytes
    }


async def local_accounts(url: str, count: int, every: int) -> None:
    """Accounts for every ``every``-th history customer (same e-mail, not linked): the sync links them."""
    await sql(url, "TRUNCATE sync_runs, stripe_objects, invoices, subscriptions, users CASCADE")
    await sql(
        url,
        """
        INSERT INTO users (id, email, name, password_hash, role, is_active, session_epoch, holder_pricing,
                           created_at, updated_at)
        SELECT gen_random_uuid(), 'history' || n || '@example.test', 'History ' || n, '!', 'customer', true, 0,
               false, now(), now()
        FROM generate_series(0, $1 - 1, $2) AS n
        """,
        count,
        every,
    )


async def last_run(url: str) -> dict[str, Any]:
    rows = await sql(url, "SELECT status, counts, progress, summary FROM sync_runs ORDER BY started_at DESC LIMIT 1")
    row = rows[0]
    counts, progress = json.loads(row["counts"]), json.loads(row["progress"])
    return {
        "status": row["status"],
        "summary": row["summary"],
        "objects": sum(int(p.get("objects") or 0) for p in progress.values()),
        "counts": counts,
    }


def main(argv: list[str]) -> int:
    opts = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cartwright-bench-sync-"))
    stripe_port = free_port()
    stripe_url = f"http://127.0.0.1:{stripe_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GRANIAN_", "LITESTAR_", "STRIPE_"))}
    env.update(
        {
            "DATABASE_URL": opts.database_url,
            "REDIS_URL": opts.redis_url,
            "CARTWRIGHT_VAR_DIR": str(work / "var"),
            "SECRET_KEY": "cartwright-bench-secret-key",
            "STRIPE_API_BASE": stripe_url,
            "LOG_LEVEL": "WARNING",
            "SMTP_URL": "",
        }
    )
    results: dict[str, Any] = {}
    info = machine()
    try:
        print(f"setup: database {opts.database_url}, emulator on :{stripe_port}")
        asyncio.run(create_database(opts.database_url, fresh=True))
        _run([str(BIN / "cartwright"), "database", "upgrade", "--no-prompt"], env, work / "migrate.log")
        emulator = [sys.executable, "-m", "app.stripe_emulator", "--port", str(stripe_port)]
        with serve(emulator, env, work / "stripe.log", f"{stripe_url}/_emulator/health") as stripe_proc:
            started = time.monotonic()
            seeded = control(
                stripe_url,
                "seed_history",
                {"customers": opts.customers, "invoices_per_customer": opts.invoices_per_customer},
            )["created"]
            print(f"history: {seeded} in {time.monotonic() - started:.0f} s")
            every = max(1, round(1 / opts.local_share)) if opts.local_share > 0 else opts.customers + 1
            asyncio.run(local_accounts(opts.database_url, opts.customers, every))
            for phase in ("first", "second"):
                if phase == "second" and opts.no_second:
                    break
                control(stripe_url, "stats?reset=1", method="GET")
                print(f"sync: {phase} run ...")
                figures = run_sync(env, work / f"sync-{phase}.log")
                run = asyncio.run(last_run(opts.database_url))
                stats = control(stripe_url, "stats", method="GET")
                figures.update(
                    objects=run["objects"],
                    objects_per_second=round(run["objects"] / figures["seconds"], 1),
                    api_requests=stats["api_requests"],
                    max_in_flight=stats["max_in_flight"],
                    status=run["status"],
                    summary=run["summary"],
                    counts=run["counts"],
                )
                results[phase] = figures
                print(f"  {run['summary']}")
            emulator_rss = _rss_mb(stripe_proc.pid)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows: list[tuple[str, ...]] = [
        ("sync", "objects", "seconds", "objects/s", "CPU s", "peak RSS MB", "requests", "max in flight")
    ]
    for phase, r in results.items():
        rows.append(
            (
                phase,
                str(r["objects"]),
                f"{r['seconds']:.1f}",
                f"{r['objects_per_second']:.0f}",
                f"{r['cpu_seconds']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
                str(r["api_requests"]),
                str(r["max_in_flight"]),
            )
        )
    bounded = all(r["max_in_flight"] <= 2 for r in results.values())
    ok = bounded and all(r["status"] == "succeeded" for r in results.values())
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "config": {
            "customers": opts.customers,
            "invoices_per_customer": opts.invoices_per_customer,
            "local_share": opts.local_share,
            "seeded": seeded,
            "emulator_rss_mb": emulator_rss,
        },
        "results": results,
        "ok": ok,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sync.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(_grid(rows))
    print(f"\nat most 2 requests in flight: {'OK' if bounded else 'FAILED'}; emulator RSS {emulator_rss} MB")
    print(f"machine: {info['cpus']} x {info['cpu']}, load average at start {info['load_average_at_start']}")
    print(f"wrote {RESULTS.relative_to(ROOT) / 'sync.json'}")
    return 0 if ok else 1


def _rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmHWM:\s+(\d+) kB", status)
    return round(int(match.group(1)) / 1024, 1) if match else 0.0
