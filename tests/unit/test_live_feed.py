"""The live feed's channel: Redis Pub/Sub channels are server-wide, so shops on one server keep theirs apart."""

from __future__ import annotations

from redis.asyncio import Redis

from app.domain.analytics.feed import channel


def test_two_shops_on_one_redis_server_with_different_databases_do_not_share_a_live_feed() -> None:
    # Staging on database 1 and production on database 2 of one server (or two parallel test workers) saw each
    # other's orders on the dashboard while the channel was a bare "analytics".
    staging, production = Redis.from_url("redis://127.0.0.1:6379/1"), Redis.from_url("redis://127.0.0.1:6379/2")
    assert channel(staging) != channel(production)
    assert channel(production) == channel(Redis.from_url("redis://127.0.0.1:6379/2"))  # web and worker agree
    assert channel(Redis(unix_socket_path="/var/run/redis.sock")) == "cartwright:analytics:db0"
