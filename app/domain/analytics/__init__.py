"""Analytics: the dashboard's KPIs and charts, MRR movements derived from the mirrored subscriptions, the Redis
cache and its invalidation, and the live activity feed (Litestar Channels on Redis, Server-Sent Events)."""
