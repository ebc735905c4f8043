"""Browser fixtures for the Stripe.js stand-in: an emulator, a headless Chromium, and a fake shop.

The shop is a tiny HTTP server on ``localhost`` (a different origin from the emulator on ``127.0.0.1``, so CORS
is exercised; a real loopback server because Chromium's local-network-access rules block pages with no address
space, such as intercepted ones, from calling loopback). The app's own e2e harness is not involved.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import stripe
from playwright.sync_api import Browser, Page, Playwright

from app.stripe_emulator.server import EmulatorServer, run_emulator

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]

SHOP_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Checkout</title></head><body>
<h1>Checkout</h1>
<form id="pay"><div id="payment-element"></div><button type="submit">Pay</button></form>
<p id="result" aria-live="polite"></p><p id="changes"></p>
<script src="__EMULATOR__/v3/"></script>
<script>
const config = __CONFIG__;
const stripe = Stripe("pk_test_shop");
const elements = stripe.elements({clientSecret: config.clientSecret, appearance: {theme: "stripe"}});
const element = elements.create(config.elementType);
element.on("ready", () => { document.body.dataset.ready = "1"; });
element.on("change", (e) => {
  document.getElementById("changes").textContent = e.complete ? "complete" : "incomplete";
});
element.mount("#payment-element");
document.getElementById("pay").addEventListener("submit", async (event) => {
  event.preventDefault();
  const result = document.getElementById("result");
  const submitted = await elements.submit();
  if (submitted.error) { result.textContent = "invalid:" + submitted.error.message; return; }
  const confirm = config.setup ? stripe.confirmSetup.bind(stripe) : stripe.confirmPayment.bind(stripe);
  const {error, paymentIntent, setupIntent} = await confirm({
    elements, redirect: config.redirect,
    confirmParams: {return_url: location.origin + "/return?order=7"},
  });
  result.textContent = error
    ? "error:" + error.type + ":" + error.code + ":" + (error.decline_code || "") + ":" + error.message
    : "ok:" + (paymentIntent || setupIntent).status;
});
window.shopStripe = stripe;
window.shopElements = elements;
</script></body></html>"""


@pytest.fixture(scope="session")
def stripe_emulator() -> Iterator[EmulatorServer]:
    with run_emulator() as emu:
        yield emu


@pytest.fixture
def secret_client(stripe_emulator: EmulatorServer) -> stripe.StripeClient:
    url = stripe_emulator.url
    return stripe.StripeClient(
        api_key="sk_test_e2e", base_addresses={"api": url, "files": url, "connect": url, "meter_events": url}
    )


@pytest.fixture(scope="session")
def emulator_browser(playwright: Playwright) -> Iterator[Browser]:
    # pytest-playwright's session ``playwright`` fixture: one Playwright per process, shared with the app's e2e
    # tests (a second sync_playwright() in the same run would fail). Our own browser avoids their base_url setup.
    browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


class ShopServer:
    """Serves the checkout page (configured per test) and a return page."""

    def __init__(self, emulator_url: str) -> None:
        self.config: dict[str, Any] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/return"):
                    body = "<!doctype html><title>Thanks</title><h1>Thanks</h1>"
                else:
                    body = SHOP_PAGE.replace("__EMULATOR__", emulator_url).replace(
                        "__CONFIG__", json.dumps(outer.config)
                    )
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://localhost:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Shop:
    """Opens the fake shop's checkout page for a given PaymentIntent client secret."""

    def __init__(self, page: Page, server: ShopServer) -> None:
        self.page = page
        self.server = server
        self.url = server.url

    def open(self, client_secret: str, *, redirect: str = "always", element_type: str = "payment") -> Page:
        self.server.config = {
            "clientSecret": client_secret,
            "redirect": redirect,
            "elementType": element_type,
            "setup": client_secret.startswith("seti_"),
        }
        self.page.goto(f"{self.url}/checkout")
        self.page.wait_for_selector("body[data-ready='1']", state="attached")
        return self.page

    def fill_card(self, number: str, expiry: str = "12 / 34", cvc: str = "123", postal: str = "94107") -> None:
        self.page.get_by_label("Card number").fill(number)
        self.page.get_by_label("Expiration").fill(expiry)
        self.page.get_by_label("CVC").fill(cvc)
        self.page.get_by_label("Postal code").fill(postal)


@pytest.fixture(scope="session")
def shop_server(stripe_emulator: EmulatorServer) -> Iterator[ShopServer]:
    server = ShopServer(stripe_emulator.url)
    yield server
    server.close()


@pytest.fixture
def shop(emulator_browser: Browser, shop_server: ShopServer) -> Iterator[Shop]:
    context = emulator_browser.new_context()
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield Shop(page, shop_server)
    context.close()
