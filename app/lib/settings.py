"""Settings: the only module that reads environment variables.

Every value has an embedded default so `make run` works on a bare machine; production sets them in env.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.lib.client_ip import Network, parse_networks

LOOPBACK = parse_networks("127.0.0.1/32,::1/128")

BASE_DIR = Path(__file__).resolve().parents[2]


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default).strip()


def _env_int(name: str, default: int) -> int:
    raw = _env(name)
    return int(raw) if raw else default


def _env_float(name: str, default: float) -> float:
    raw = _env(name)
    return float(raw) if raw else default


def _env_bool(name: str, default: bool) -> bool:
    raw = _env(name).lower()
    if not raw:
        return default
    return raw in {"1", "true", "yes", "on"}


def normalise_database_url(url: str) -> str:
    """Accept the URLs people paste (``postgres://``, ``postgresql://``) and pick the async driver."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url.removeprefix(prefix)
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
    return url


def _secret_key(var_dir: Path) -> str:
    """SECRET_KEY from env; in development one is generated once into var/ so sessions survive restarts."""
    if key := _env("SECRET_KEY"):
        return key
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


class SettingsError(ValueError):
    """A configuration that must not start: the message says what to set."""


EMULATOR_WEBHOOK_SECRET = "whsec_cartwright_emulator"  # public (it is in this repository): the emulator's only


@dataclass(frozen=True)
class StripeSettings:
    secret_key: str
    publishable_key: str
    webhook_secrets: tuple[str, ...]
    api_base: str
    js_url: str

    @property
    def uses_emulator(self) -> bool:
        return self.api_base != "https://api.stripe.com"

    @property
    def livemode(self) -> bool:
        """The key's mode: events whose ``livemode`` differs were not meant for this shop."""
        return self.secret_key.startswith(("sk_live_", "rk_live_"))


@dataclass(frozen=True)
class Settings:
    var_dir: Path
    database_url: str
    redis_url: str  # empty: start an embedded Redis (see app.lib.embedded_redis)
    secret_key: str
    base_url: str
    smtp_url: str
    mail_from: str
    stripe: StripeSettings
    debug: bool = False
    db_echo: bool = False
    db_pool_size: int = 20  # database connections per process (web worker, SAQ worker)
    # A database that is down or hung answers "503, try again" within seconds, not after asyncpg's 60 s.
    db_connect_timeout: float = 5.0
    db_pool_timeout: float = 5.0  # waiting for a free pooled connection
    db_statement_timeout: float = 30.0  # PostgreSQL's statement_timeout; the re-sync and analytics fit within it
    # The web's Redis calls; a hung Redis then costs a request this long once, and the breaker spares the rest.
    redis_timeout: float = 1.0
    log_level: str = "INFO"
    log_format: str = "json"  # "console": readable lines (a terminal, `make run`); "json": one JSON object a line
    # SIGTERM to a worker: running jobs get this long to finish; what is still running then goes back on the queue.
    worker_shutdown_grace_seconds: int = 30
    staff_idle_seconds: int = 30 * 60
    staff_absolute_seconds: int = 12 * 60 * 60
    customer_session_seconds: int = 24 * 60 * 60
    remember_me_seconds: int = 30 * 24 * 60 * 60
    reset_token_seconds: int = 60 * 60
    verify_email_token_seconds: int = 3 * 24 * 60 * 60  # a sign-up's confirmation link
    # How long after a failed order payment (and nothing since) the customer is emailed the way back to pay.
    unpaid_order_notice_seconds: int = 15 * 60
    login_max_failures_account: int = 5
    login_max_failures_ip: int = 20
    login_lockout_seconds: int = 15 * 60
    # Failed sign-ins on one account from all addresses within an hour that make us email its owner (once).
    login_alert_failures: int = 50
    storage_dir: Path = field(default=BASE_DIR / "var" / "uploads")  # the file backend's directory
    # Where product files and covers live: "file:///a/dir" (storage_dir) or "s3://bucket/prefix" (app/lib/storage.py).
    storage_url: str = ""
    storage_s3_endpoint_url: str = ""  # MinIO, R2, moto…; empty: AWS (or AWS_ENDPOINT_URL)
    storage_s3_region: str = ""  # empty: AWS_REGION / AWS_DEFAULT_REGION
    cover_max_bytes: int = 5 * 1024 * 1024  # an uploaded cover image
    product_file_max_bytes: int = 200 * 1024 * 1024  # an uploaded digital file (streamed to storage)
    trusted_proxies: tuple[Network, ...] = ()
    # Off: no per-request metrics and no /metrics (a shop without Prometheus; `make bench` measures the cost).
    metrics_enabled: bool = True
    # Who may scrape /metrics: these networks (default: this machine), or anyone sending the bearer token.
    metrics_allow: tuple[Network, ...] = LOOPBACK
    metrics_token: str = ""
    worker_metrics_port: int = 0  # 0: the worker serves no metrics of its own (the web's /metrics has them in dev)
    # How members pay for a new plan: "elements" (the Payment Element on our page), "hosted" (Stripe Checkout)
    # or "both" (the customer chooses).
    subscription_checkout: str = "elements"
    # Full re-sync with Stripe (app/domain/sync): a crontab line for the nightly sync ("" = no cron; the admin's
    # "Sync now" and `cartwright stripe sync` always work), and the most requests it may have in flight at once.
    stripe_sync_cron: str = ""
    stripe_sync_concurrency: int = 2
    # How long one live-dashboard connection (Server-Sent Events) stays open before the browser reconnects.
    analytics_stream_seconds: int = 300
    # Webhook health (the admin's alert banner): no Stripe event for this long while orders were placed, or a
    # failure rate above this share of the last hour's events (once at least `webhook_failure_alert_min_sample`).
    webhook_silence_alert_minutes: int = 30
    # Limited stock is held for a placed order this long; unpaid by then, the units go back on sale.
    stock_hold_minutes: int = 15
    webhook_failure_alert_rate: float = 0.05
    webhook_failure_alert_min_sample: int = 20
    # Failed events are retried by the sweeper with exponential backoff (base x 2^(attempts-1), capped at 6 h)
    # until they have had this many attempts; then they stay `failed` for an admin to replay.
    stripe_event_max_attempts: int = 10
    stripe_event_retry_base_seconds: int = 60
    # Catch-up from Stripe's Events API: re-list this much before the last complete scan (events can become
    # visible late) and read at most this many pages (100 events each) per run.
    stripe_catch_up_overlap_seconds: int = 300
    stripe_catch_up_max_pages: int = 10
    # Rate limits (app/lib/ratelimit.py holds the policy table): the global switch, and per-policy overrides
    # parsed from RATE_LIMITS="login_ip=20/600,promo_apply_session=5/600" as (name, limit, window seconds).
    rate_limits_enabled: bool = True
    rate_limits: tuple[tuple[str, int, int], ...] = ()
    # The shop's time zone (IANA name): opening hours are wall-clock times there, and pages and emails show times
    # in it. Storage stays UTC. Checked at start-up, so a typo stops the app instead of showing wrong times.
    shop_time_zone: str = "America/Toronto"

    @property
    def shop_zone(self) -> ZoneInfo:
        return ZoneInfo(self.shop_time_zone)  # zoneinfo caches instances: cheap to call per use

    # Password hashes (argon2) run in worker threads, at most this many at once per process.
    password_hash_threads: int = 2

    @property
    def offers_hosted_checkout(self) -> bool:
        return self.subscription_checkout in {"hosted", "both"}

    @property
    def offers_elements(self) -> bool:
        return self.subscription_checkout in {"elements", "both"}

    @property
    def secure_cookies(self) -> bool:
        return urlsplit(self.base_url).scheme == "https"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def storage_is_local(self) -> bool:
        """Files in ``storage_dir`` on this machine (not a bucket): backups copy them, alerts watch the disk."""
        return not self.storage_url.startswith("s3://")


def load_settings() -> Settings:
    settings = _load_settings()
    check_settings(settings)
    return settings


def check_settings(settings: Settings) -> None:
    """Refuse configurations that would be unsafe on the open internet (raises ``SettingsError``)."""
    stripe = settings.stripe
    public_secret = not stripe.webhook_secrets or EMULATOR_WEBHOOK_SECRET in stripe.webhook_secrets
    if public_secret and (not stripe.uses_emulator or stripe.secret_key.startswith(("sk_live_", "rk_live_"))):
        # The emulator's secret is public: with it anybody could sign a "payment succeeded" event.
        raise SettingsError(
            "STRIPE_WEBHOOK_SECRET is not set: with real Stripe keys it must be the signing secret of your webhook "
            "endpoint (Stripe dashboard > Developers > Webhooks, or `stripe listen`). Refusing to start."
        )
    if stripe.livemode and not settings.secure_cookies:
        raise SettingsError(
            f"A live Stripe key needs an https BASE_URL (it is {settings.base_url}): "
            "cookies and card pages must not travel in clear. Refusing to start."
        )


def _load_settings() -> Settings:
    var_dir = Path(_env("CARTWRIGHT_VAR_DIR") or BASE_DIR / "var")
    database_url = normalise_database_url(_env("DATABASE_URL") or f"sqlite+aiosqlite:///{var_dir / 'cartwright.db'}")
    webhook_secrets = tuple(s.strip() for s in _env("STRIPE_WEBHOOK_SECRET").split(",") if s.strip())
    api_base = _env("STRIPE_API_BASE") or (
        "https://api.stripe.com" if _env("STRIPE_SECRET_KEY") else "http://127.0.0.1:12111"
    )
    return Settings(
        var_dir=var_dir,
        database_url=database_url,
        redis_url=_env("REDIS_URL"),
        secret_key=_secret_key(var_dir),
        base_url=(_env("BASE_URL") or "http://127.0.0.1:8000").rstrip("/"),
        smtp_url=_env("SMTP_URL"),
        mail_from=_env("MAIL_FROM") or "Cartwright <shop@cartwright.test>",
        stripe=StripeSettings(
            secret_key=_env("STRIPE_SECRET_KEY") or "sk_test_cartwright_emulator",
            publishable_key=_env("STRIPE_PUBLISHABLE_KEY") or "pk_test_cartwright_emulator",
            # The emulator's public secret only ever with the emulator: check_settings refuses real Stripe without one.
            webhook_secrets=webhook_secrets
            or (() if api_base.rstrip("/") == "https://api.stripe.com" else (EMULATOR_WEBHOOK_SECRET,)),
            api_base=api_base.rstrip("/"),
            js_url=_env("STRIPE_JS_URL")
            or ("https://js.stripe.com/v3/" if api_base.startswith("https://api.stripe.com") else f"{api_base}/v3/"),
        ),
        debug=_env_bool("DEBUG", default=False),
        db_echo=_env_bool("DB_ECHO", default=False),
        db_pool_size=_env_int("DB_POOL_SIZE", 20),
        db_connect_timeout=_env_float("DB_CONNECT_TIMEOUT", 5.0),
        db_pool_timeout=_env_float("DB_POOL_TIMEOUT", 5.0),
        db_statement_timeout=_env_float("DB_STATEMENT_TIMEOUT", 30.0),
        redis_timeout=_env_float("REDIS_TIMEOUT", 1.0),
        log_level=_env("LOG_LEVEL") or "INFO",
        log_format=parse_log_format(_env("LOG_FORMAT")),
        worker_shutdown_grace_seconds=max(0, _env_int("WORKER_SHUTDOWN_GRACE_SECONDS", 30)),
        **_storage(var_dir),
        cover_max_bytes=_env_int("COVER_MAX_BYTES", 5 * 1024 * 1024),
        product_file_max_bytes=_env_int("PRODUCT_FILE_MAX_BYTES", 200 * 1024 * 1024),
        trusted_proxies=parse_networks(_env("TRUSTED_PROXIES")),
        metrics_enabled=_env_bool("METRICS_ENABLED", default=True),
        metrics_allow=parse_networks(_env("METRICS_ALLOW")) or LOOPBACK,
        metrics_token=_env("METRICS_TOKEN"),
        worker_metrics_port=_env_int("WORKER_METRICS_PORT", 0),
        subscription_checkout=_subscription_checkout(_env("SUBSCRIPTION_CHECKOUT")),
        stripe_sync_cron=_env("STRIPE_SYNC_CRON"),
        stripe_sync_concurrency=max(1, min(_env_int("STRIPE_SYNC_CONCURRENCY", 2), 2)),
        analytics_stream_seconds=_env_int("ANALYTICS_STREAM_SECONDS", 300),
        webhook_silence_alert_minutes=_env_int("WEBHOOK_SILENCE_ALERT_MINUTES", 30),
        stock_hold_minutes=max(1, _env_int("STOCK_HOLD_MINUTES", 15)),
        webhook_failure_alert_rate=_env_float("WEBHOOK_FAILURE_ALERT_RATE", 0.05),
        webhook_failure_alert_min_sample=_env_int("WEBHOOK_FAILURE_ALERT_MIN_SAMPLE", 20),
        stripe_event_max_attempts=_env_int("STRIPE_EVENT_MAX_ATTEMPTS", 10),
        stripe_event_retry_base_seconds=_env_int("STRIPE_EVENT_RETRY_BASE_SECONDS", 60),
        stripe_catch_up_overlap_seconds=_env_int("STRIPE_CATCH_UP_OVERLAP_SECONDS", 300),
        stripe_catch_up_max_pages=_env_int("STRIPE_CATCH_UP_MAX_PAGES", 10),
        login_alert_failures=max(1, _env_int("LOGIN_ALERT_FAILURES", 50)),
        rate_limits_enabled=_env_bool("RATE_LIMITS_ENABLED", default=True),
        rate_limits=parse_rate_limits(_env("RATE_LIMITS")),
        shop_time_zone=_time_zone(_env("SHOP_TIME_ZONE")),
        password_hash_threads=max(1, _env_int("PASSWORD_HASH_THREADS", 2)),
    )


def parse_storage_url(url: str, var_dir: Path) -> tuple[str, Path]:
    """``STORAGE_URL`` -> ``(normalised url, local dir)``: ``file://<path>`` (a relative path is taken from the
    working directory) or ``s3://bucket[/prefix]``; empty means ``file://`` + ``CARTWRIGHT_VAR_DIR/uploads``."""
    scheme, sep, rest = url.strip().partition("://")
    if not url.strip():
        directory = var_dir / "uploads"
    elif sep and scheme == "file" and rest:
        directory = Path(rest)
    elif sep and scheme == "s3" and rest.partition("/")[0]:
        bucket, _, prefix = rest.partition("/")
        return (f"s3://{bucket}/{prefix.strip('/')}".rstrip("/"), var_dir / "uploads")
    else:
        raise SettingsError(f"STORAGE_URL {url!r} is neither file:///a/directory nor s3://bucket/prefix")
    directory = directory.absolute()
    return (f"file://{directory}", directory)


def _storage(var_dir: Path) -> dict[str, Any]:
    # STORAGE_DIR is the older spelling of a file:// STORAGE_URL; STORAGE_URL wins when both are set.
    legacy = _env("STORAGE_DIR")
    url, directory = parse_storage_url(_env("STORAGE_URL") or (f"file://{legacy}" if legacy else ""), var_dir)
    return {
        "storage_url": url,
        "storage_dir": directory,
        "storage_s3_endpoint_url": _env("STORAGE_S3_ENDPOINT_URL"),
        "storage_s3_region": _env("STORAGE_S3_REGION"),
    }


def parse_rate_limits(text: str) -> tuple[tuple[str, int, int], ...]:
    """``"name=limit/seconds,..."`` -> ``(("name", limit, seconds), ...)``; the names are checked against the table
    when the app starts (``app.lib.ratelimit``), so a typo stops it instead of silently changing nothing."""
    rows: list[tuple[str, int, int]] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, rule = part.partition("=")
        limit, _, window = rule.partition("/")
        try:
            row = (name.strip(), int(limit), int(window))
        except ValueError:
            raise ValueError(f"RATE_LIMITS: {part!r} is not name=limit/seconds (e.g. login_ip=20/600)") from None
        if not row[0] or row[1] < 1 or row[2] < 1:
            raise ValueError(f"RATE_LIMITS: {part!r} needs a name, a limit >= 1 and a window >= 1 second")
        rows.append(row)
    return tuple(rows)


def _time_zone(value: str) -> str:
    name = value or "America/Toronto"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"SHOP_TIME_ZONE must be an IANA time zone such as America/Toronto, not {value!r}") from None
    return name


def _subscription_checkout(value: str) -> str:
    choice = (value or "elements").strip().lower()
    if choice not in {"elements", "hosted", "both"}:
        raise ValueError(f"SUBSCRIPTION_CHECKOUT must be elements, hosted or both, not {value!r}")
    return choice


def parse_log_format(value: str | None) -> str:
    """``console`` or ``json``; unset: readable in a terminal, JSON lines otherwise (a container, a log shipper)."""
    if not value:
        return "console" if sys.stderr.isatty() else "json"
    fmt = value.strip().lower()
    if fmt not in {"console", "json"}:
        msg = f"LOG_FORMAT must be console or json, not {value!r}"
        raise ValueError(msg)
    return fmt


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
