"""``python -m app.stripe_emulator --port 12111 [--state-file PATH] [--webhook-url URL --webhook-secret S]``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import uvicorn

from app.stripe_emulator.app import create_app
from app.stripe_emulator.webhooks import DeliverySettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m app.stripe_emulator", description="Offline Stripe emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--state-file", default=os.environ.get("STRIPE_EMULATOR_STATE_FILE"))
    parser.add_argument("--webhook-url", default=os.environ.get("STRIPE_EMULATOR_WEBHOOK_URL"))
    parser.add_argument("--webhook-secret", default=os.environ.get("STRIPE_EMULATOR_WEBHOOK_SECRET"))
    parser.add_argument(
        "--webhook-retry-base",
        type=float,
        default=float(os.environ.get("STRIPE_EMULATOR_WEBHOOK_RETRY_BASE", "1.0")),
        help="seconds before the first retry",
    )
    parser.add_argument("--webhook-max-attempts", type=int, default=5)
    parser.add_argument("--webhook-timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    app = create_app(
        state_file=Path(args.state_file) if args.state_file else None,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        settings=DeliverySettings(
            retry_base=args.webhook_retry_base, max_attempts=args.webhook_max_attempts, timeout=args.webhook_timeout
        ),
    )
    uvicorn.run(app, host=args.host, port=args.port, log_config=_log_config())


def _log_config() -> dict[str, Any]:
    """The shop's log format (LOG_FORMAT, LOG_LEVEL), so `make run` prints one format; each request's access line
    is routine and stays at DEBUG."""
    from app.lib.settings import parse_log_format
    from app.server.logging import stdlib_logging_config

    level = os.environ.get("LOG_LEVEL") or "INFO"
    config: dict[str, Any] = {
        "version": 1,
        "disable_existing_loggers": False,
        **stdlib_logging_config(level, parse_log_format(os.environ.get("LOG_FORMAT"))),
    }
    config["loggers"]["uvicorn.access"] = {"level": "DEBUG" if level.upper() == "DEBUG" else "WARNING"}
    return config


if __name__ == "__main__":
    main()
