"""ApplicationCore: the one plugin that assembles Cartwright (routes, stores, sessions, CSRF, templates, errors)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Mapping
from types import FrameType
from typing import TYPE_CHECKING, Any

import stripe
from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.config.compression import CompressionConfig
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.logging.config import LoggingConfig
from litestar.middleware import DefineMiddleware
from litestar.middleware.compression import CompressionMiddleware
from litestar.plugins import CLIPluginProtocol, InitPluginProtocol
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.stores.redis import RedisStore
from litestar.stores.registry import StoreRegistry
from litestar.template import TemplateConfig
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import exc as sa_exc

from app.domain.accounts.admin_customer_controllers import AdminCustomerController
from app.domain.accounts.admin_user_controllers import AdminUserController
from app.domain.accounts.controllers import AccountController
from app.domain.accounts.self_service_controllers import SelfServiceController
from app.domain.admin.controllers import AdminController
from app.domain.analytics.controllers import AnalyticsLiveController
from app.domain.audit.controllers import AuditController
from app.domain.bookings.admin_booking_controllers import AdminBookingController
from app.domain.bookings.admin_resource_controllers import AdminResourceController
from app.domain.bookings.controllers import BookingController
from app.domain.cart.controllers import CartController
from app.domain.catalog.admin_category_controllers import AdminCategoryController
from app.domain.catalog.admin_product_controllers import AdminProductController
from app.domain.catalog.controllers import CatalogController
from app.domain.catalog.covers import COVER_ROUTE, cover_src
from app.domain.checkout.controllers import CheckoutController
from app.domain.downloads.controllers import DownloadController
from app.domain.notifications.admin_controllers import AdminEmailController
from app.domain.orders.admin_controllers import AdminOrderController, AdminRefundController
from app.domain.orders.controllers import OrderController
from app.domain.orders.invoice_controllers import AdminInvoiceController, GuestInvoiceController, InvoiceController
from app.domain.payments.admin_controllers import AdminWebhookController
from app.domain.payments.controllers import StripeWebhookController
from app.domain.plans.admin_controllers import AdminPlanController
from app.domain.plans.controllers import PlanController
from app.domain.promotions.controllers import AdminPromoCodeController
from app.domain.settings.controllers import AdminSettingsController
from app.domain.subscriptions.admin_controllers import AdminSubscriptionActionController, AdminSubscriptionController
from app.domain.subscriptions.controllers import SubscriptionController
from app.domain.sync.controllers import AdminSyncController
from app.domain.system.controllers import csp_report, healthz, readyz
from app.domain.system.metrics import metrics_endpoint
from app.lib import metrics, queues
from app.lib.exceptions import ApplicationError
from app.lib.htmx import pop_flashes
from app.lib.runtime import Runtime
from app.lib.static_assets import static_assets
from app.lib.templating import csrf_token, get_environment
from app.server import errors
from app.server.auth import CurrentUserMiddleware, NotSignedInError, current_user
from app.server.csrf import CSRFMiddleware, cookie_name
from app.server.deps import provide_actor, provide_queue, provide_runtime, provide_settings
from app.server.head import install_head_as_get
from app.server.logging import RequestLogMiddleware, configure_logging, request_id_header, stdlib_logging_config
from app.server.metrics import RequestMetricsMiddleware, count_unrouted
from app.server.page_cache import PageCacheMiddleware
from app.server.ratelimit import UnsafeRequestLimitMiddleware
from app.server.saq_worker import saq_plugin
from app.server.security_headers import SecurityHeaders
from app.server.sessions import session_config
from app.server.shop_settings import ShopSettingsMiddleware
from app.server.static import static_file
from app.server.worker import saq_config

if TYPE_CHECKING:
    from click import Group
    from litestar.config.app import AppConfig

# Routes that take no form posts from our pages (and so carry no CSRF token). Stripe's webhook is authenticated
# by its signature instead; CSP reports come from the browser itself, without our token.
CSRF_EXEMPT = ("/healthz", "/readyz", "/webhooks/stripe", "/csp-report", "/static/")


def _template_user(context: Mapping[str, Any]) -> Any:
    request = context.get("request")
    return current_user(request) if request is not None else None


def _template_flashes(context: Mapping[str, Any]) -> list[dict[str, str]]:
    request = context.get("request")
    return pop_flashes(request) if request is not None else []


def end_streams_on_sigterm(stopping: asyncio.Event) -> None:
    """granian runs the app's shutdown only once every connection has closed, so an open live feed (an endless
    SSE response) held a SIGTERM up for the feed's whole lifetime. granian's worker handles SIGTERM through its
    event loop (``add_signal_handler``: the Python-level handler is the loop's, which hands the signal to
    granian's). Put ``stopping.set`` in front of it: the streams end within a
    second, and granian's own handling goes on unchanged. Anywhere else (a test's loop) nothing is touched."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        # asyncio's loop installs a module-level no-op, uvloop a method of the loop itself.
        if getattr(previous, "__name__", "") != "_sighandler_noop" and getattr(previous, "__self__", None) is not loop:
            continue

        def on_signal(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            stopping.set()
            previous(signum, frame)

        signal.signal(sig, on_signal)


def freeze_startup_objects() -> None:
    """Move everything alive after start-up (modules, templates, the ORM's mappings) out of the garbage collector's
    reach: a full collection then scans only what requests made. Measured (docs/benchmarks.md, catalog): a full
    collection took 93-103 ms in a signed-in /pricing loop and became ~0.3 ms; that pause was the tail."""
    gc.collect()
    gc.freeze()


class WorkersCommand(CLIPluginProtocol):
    """Registers our `cartwright workers run` over litestar-saq's (app/cli/workers.py says why). A plugin of its own
    placed after litestar-saq's, since the CLI takes the last command registered under a name."""

    def on_cli_init(self, cli: Group) -> None:
        from app.cli.workers import workers_group

        cli.add_command(workers_group)


class ApplicationCore(InitPluginProtocol, CLIPluginProtocol):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def on_cli_init(self, cli: Group) -> None:
        from advanced_alchemy.extensions.litestar.cli import database_group

        from app.cli.backup import backup_group
        from app.cli.commands import dev_command, seed_command, users_group
        from app.cli.migrations import add_dry_run
        from app.cli.plans import plans_group
        from app.cli.stripe_sync import stripe_group

        cli.add_command(users_group)
        cli.add_command(seed_command)
        cli.add_command(dev_command)
        cli.add_command(plans_group)
        cli.add_command(stripe_group)
        cli.add_command(backup_group)
        add_dry_run(database_group)

    def on_app_init(self, app_config: AppConfig) -> AppConfig:
        runtime = self.runtime
        settings = runtime.settings
        configure_logging(settings.log_level, settings.log_format)
        # Litestar's default sets the stdlib root logger to INFO whatever LOG_LEVEL says, in a format of its own;
        # the worker command re-applies this config, so SAQ's lines come out in our format there too.
        app_config.logging_config = LoggingConfig(
            configure_root_logger=True, **stdlib_logging_config(settings.log_level, settings.log_format)
        )
        app_config.debug = settings.debug
        saq = saq_config(runtime)
        # One queue object for the process, on app state: litestar-saq's own dependency is an async generator
        # (connect on every request, and a cleanup task group per request that asks for it).
        queue = saq.get_queues().get(queues.BACKGROUND)  # routes each job to its queue (app/lib/queues.py)
        app_config.state.update({"runtime": runtime, "queue": queue})
        app_config.on_startup.append(queue.connect)

        # The live dashboard: its own Redis client, without the socket timeout (a subscription waits for ever).
        # Channels are subscribed when the first stream opens, not at start-up: the web process must start (and
        # take webhooks) while Redis is down.
        channels_redis = Redis.from_url(runtime.redis_url, socket_connect_timeout=2)
        channels = ChannelsPlugin(
            backend=RedisChannelsPubSubBackend(redis=channels_redis),
            arbitrary_channels_allowed=True,
            create_ws_route_handlers=False,
        )
        app_config.plugins.extend(
            [
                SQLAlchemyPlugin(config=runtime.alchemy),
                saq_plugin(
                    saq, grace_seconds=settings.worker_shutdown_grace_seconds, redis_timeout=settings.redis_timeout
                ),
                WorkersCommand(),
                channels,
            ]
        )
        # Set first thing at shutdown: open Server-Sent Event streams end within a second (analytics/live.py).
        stopping = asyncio.Event()
        app_config.state.update({"analytics_stopping": stopping})
        app_config.on_startup.append(stopping.clear)
        app_config.on_startup.append(lambda: end_streams_on_sigterm(stopping))
        app_config.on_shutdown.insert(0, stopping.set)
        app_config.on_shutdown.append(channels_redis.aclose)
        # This worker's live gauges (requests in flight, pool use) stop counting when it stops.
        app_config.on_shutdown.append(lambda: metrics.mark_process_dead(os.getpid()))
        app_config.stores = StoreRegistry(
            default_factory=lambda name: RedisStore(runtime.redis, namespace=f"cartwright:{name}")
        )
        session = session_config(secure=settings.secure_cookies, default_ttl=settings.customer_session_seconds)
        compression = CompressionConfig(
            backend="brotli",
            gzip_fallback=True,
            # Fast settings: a 22 KB page shrinks to about a fifth either way, and the CPU is the bottleneck here.
            brotli_quality=4,
            gzip_compress_level=5,
            minimum_size=1024,
            # Static files come precompressed (app/server/static.py); the live feed is an endless stream that must
            # reach the browser event by event; downloads and covers are PDFs, archives and images (compressed).
            exclude=["^/static/", "^/admin/live", "^/downloads/", f"^{COVER_ROUTE}/"],
        )
        app_config.state.update({"csrf_cookie_name": cookie_name(secure=settings.secure_cookies)})
        app_config.middleware = [
            *([RequestMetricsMiddleware(runtime.alchemy.get_engine())] if settings.metrics_enabled else []),
            RequestLogMiddleware(settings.trusted_proxies),
            session.middleware,
            ShopSettingsMiddleware(runtime),
            CurrentUserMiddleware(runtime),
            UnsafeRequestLimitMiddleware(),
            # After the user is known (denials are logged with the account); tokens bound to the session.
            CSRFMiddleware(secure=settings.secure_cookies, exempt=CSRF_EXEMPT),
            # Compression outside the page cache, which keeps (and fills in) plain bodies: app_config's own
            # compression_config would sit inside every app middleware.
            DefineMiddleware(CompressionMiddleware, config=compression),
            PageCacheMiddleware(),
            *app_config.middleware,
        ]
        # Every response, the router's own 404/405 included, leaves with the security headers and the CSP.
        app_config.before_send.append(SecurityHeaders(settings))
        if settings.metrics_enabled:
            app_config.before_send.append(count_unrouted)
        app_config.before_send.append(request_id_header)

        environment = get_environment()
        # The domains' template globals are registered here, in the composition root: app/lib knows no domain.
        environment.globals["cover_src"] = cover_src
        engine = JinjaTemplateEngine.from_environment(environment)
        engine.register_template_callable("current_user", _template_user)
        engine.register_template_callable("flashes", _template_flashes)
        engine.register_template_callable("csrf_token", csrf_token)  # notes the use, see app.lib.templating
        app_config.template_config = TemplateConfig(instance=engine)

        app_config.route_handlers.extend(
            [
                CatalogController,
                CartController,
                AccountController,
                SelfServiceController,
                AdminController,
                AdminBookingController,
                AdminEmailController,
                AdminOrderController,
                AdminCustomerController,
                AdminSyncController,
                AdminSubscriptionController,
                AdminSubscriptionActionController,
                AdminRefundController,
                AdminUserController,
                AuditController,
                AdminProductController,
                AdminCategoryController,
                AdminPromoCodeController,
                AdminPlanController,
                AdminResourceController,
                AdminSettingsController,
                AnalyticsLiveController,
                AdminWebhookController,
                DownloadController,
                StripeWebhookController,
                CheckoutController,
                OrderController,
                InvoiceController,
                AdminInvoiceController,
                GuestInvoiceController,
                PlanController,
                SubscriptionController,
                BookingController,
                healthz,
                readyz,
                csp_report,
                *([metrics_endpoint] if settings.metrics_enabled else []),
                static_file,
            ]
        )
        app_config.dependencies.update(
            {
                "runtime": Provide(provide_runtime, sync_to_thread=False),
                "settings": Provide(provide_settings, sync_to_thread=False),
                "queue": Provide(provide_queue, sync_to_thread=False),
                "actor": Provide(provide_actor, sync_to_thread=False),
            }
        )
        app_config.exception_handlers.update(
            {
                ApplicationError: errors.application_error_handler,
                NotSignedInError: errors.not_signed_in_handler,
                HTTPException: errors.http_exception_handler,
                stripe.StripeError: errors.stripe_error_handler,
                RedisError: errors.redis_unavailable_handler,
                # The database down, hung or dropping connections (timeouts in app/lib/runtime.py): 503, not 500.
                sa_exc.OperationalError: errors.database_unavailable_handler,
                sa_exc.InterfaceError: errors.database_unavailable_handler,
                sa_exc.TimeoutError: errors.database_unavailable_handler,
                ConnectionError: errors.database_unavailable_handler,
                TimeoutError: errors.database_unavailable_handler,
                Exception: errors.internal_error_handler,
            }
        )
        app_config.on_startup.append(install_head_as_get)
        app_config.on_startup.append(freeze_startup_objects)  # last: after every other start-up hook
        static_assets()  # read and compress the static files now, not on the first request
        app_config.on_shutdown.append(runtime.close)
        return app_config
