"""Per-process resources built from settings: the database, Redis, file storage and the Stripe client.

The web app, the worker and the CLI each build one ``Runtime``; jobs find it in their SAQ context.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from redis.asyncio import Redis
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from app.lib.embedded_redis import resolve_redis_url
from app.lib.ratelimit import RateLimiter
from app.lib.settings import BASE_DIR, Settings
from app.lib.storage import Storage, build_storage
from app.lib.stripe_gateway import build_stripe_client


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web and worker processes read while the other writes; foreign keys are off by default.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _connect_args(settings: Settings) -> dict[str, Any]:
    if settings.is_sqlite:
        return {}
    # asyncpg: give up connecting after db_connect_timeout, and let PostgreSQL cancel a statement that runs away.
    return {
        "timeout": settings.db_connect_timeout,
        "server_settings": {"statement_timeout": str(int(settings.db_statement_timeout * 1000))},
    }


class Runtime:
    def __init__(self, settings: Settings, *, redis_timeout: float = 5.0) -> None:
        """``redis_timeout``: the web passes ``settings.redis_timeout`` (short: a page must not hang on Redis);
        workers keep 5 s, as SAQ's blocking dequeue waits on the same connection."""
        self.settings = settings
        self.redis_url = resolve_redis_url(settings.redis_url, settings.var_dir)
        if settings.is_sqlite:
            settings.var_dir.mkdir(parents=True, exist_ok=True)
        self.alchemy = SQLAlchemyAsyncConfig(
            connection_string=settings.database_url,
            # Commit on 2xx and on redirects: every form here answers POST/Redirect/GET with a 303.
            before_send_handler="autocommit_include_redirects",
            session_dependency_key="db_session",
            session_config=AsyncSessionConfig(expire_on_commit=False),
            engine_config=EngineConfig(
                echo=settings.db_echo,
                # Connections beyond the pool size are closed when returned: a pool smaller than the requests in
                # flight forks a PostgreSQL backend for about one request in four. No overflow: requests wait
                # for a connection instead, and processes x DB_POOL_SIZE bounds the connections we open.
                pool_size=settings.db_pool_size,
                max_overflow=0,
                # No pre-ping: on asyncpg it is three round trips (BEGIN, ";", ROLLBACK) before every request.
                # After a database restart the first request on a dead connection fails and SQLAlchemy then
                # invalidates the whole pool; recycling bounds a connection's age meanwhile.
                pool_pre_ping=False,
                pool_recycle=3600,
                pool_timeout=max(1, round(settings.db_pool_timeout)),
                connect_args=_connect_args(settings),
            ),
            alembic_config=AlembicAsyncConfig(
                script_location=str(BASE_DIR / "migrations"),
                script_config=str(BASE_DIR / "alembic.ini"),
                compare_type=True,
                version_table_name="alembic_version",
            ),
            create_all=False,
        )
        if settings.is_sqlite:
            event.listen(self.alchemy.get_engine().sync_engine, "connect", _sqlite_pragmas)
        self.redis: Redis = Redis.from_url(
            self.redis_url, socket_timeout=redis_timeout, socket_connect_timeout=min(2.0, redis_timeout)
        )
        self.stripe = build_stripe_client(settings.stripe)
        self.rate_limiter = RateLimiter(self.redis, settings)
        self.storage: Storage = build_storage(settings)

    @asynccontextmanager
    async def db(self) -> AsyncIterator[AsyncSession]:
        """A session for jobs and the CLI; commit explicitly."""
        async with self.alchemy.get_session() as session:
            yield session

    async def close(self) -> None:
        await self.redis.aclose()
        await self.alchemy.get_engine().dispose()
