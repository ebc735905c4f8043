"""Where the CPU went during a phase, from /proc (Linux; elsewhere the figures are simply left out).

On a small machine the server, PostgreSQL, Redis and the load generator share the cores, and anything else
running at the same time (a test suite, a browser) takes from all of them; these figures show which it was.
Everything is in cores: CPU seconds divided by wall-clock seconds.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
PROC = Path("/proc")


def _machine_busy() -> float:
    fields = [int(x) for x in (PROC / "stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields) - idle) / TICKS


def _processes() -> dict[str, float]:
    """CPU seconds so far by group: ``server`` (granian's process group), ``postgres`` (backends of the bench
    database, and backends that have exited), ``redis`` (the whole redis-server: other clients included)."""
    out = {"server": 0.0, "postgres": 0.0, "redis": 0.0}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # gone meanwhile
        fields = stat[stat.rindex(")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / TICKS
        if Meter.server_pgid and int(fields[2]) == Meter.server_pgid:
            out["server"] += seconds
        elif cmdline.startswith("postgres:") and f" {Meter.database} " in cmdline:
            out["postgres"] += seconds
        elif cmdline.split(" ", 1)[0].endswith("/bin/postgres"):
            # The postmaster: its children's CPU once they exit. A pool that opens and closes connections
            # leaves most of PostgreSQL's work there (any database's exited backends are counted).
            out["postgres"] += (int(fields[13]) + int(fields[14])) / TICKS
        elif "redis-server" in cmdline.split(" ", 1)[0]:
            out["redis"] += seconds
    return out


class Meter:
    server_pgid = 0
    database = ""

    def __init__(self) -> None:
        self.available = (PROC / "stat").exists()
        if self.available:
            self.wall, self.busy, self.procs, self.own = (
                time.monotonic(),
                _machine_busy(),
                _processes(),
                time.process_time(),
            )

    def cores(self) -> dict[str, float]:
        if not self.available:
            return {}
        wall = time.monotonic() - self.wall
        busy, procs, own = _machine_busy(), _processes(), time.process_time()
        used = {name: (procs[name] - self.procs.get(name, 0.0)) / wall for name in procs}
        used["generator"] = (own - self.own) / wall
        used["machine"] = (busy - self.busy) / wall
        used["other"] = max(0.0, used["machine"] - sum(v for k, v in used.items() if k != "machine"))
        return {name: round(value, 2) for name, value in used.items()}
