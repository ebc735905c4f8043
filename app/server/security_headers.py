"""Security headers on every response: a strict Content-Security-Policy with a per-request nonce, and the rest.

Installed by the core plugin as the app's ``before_send`` hook, Litestar's outermost ASGI send wrapper: unlike
app middleware, it also sees the router's own answers (404 for an unknown path, 405), so no response leaves
without the headers. The header values are built once per process from the settings; per request only the nonce
(app.lib.csp) is spliced into the pre-built bytes. docs/security.md explains each source of the policy.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from litestar.types import Message, Scope

from app.lib.csp import request_nonce
from app.lib.redact import SECRET_PATH_PREFIXES
from app.lib.settings import Settings

CSP_REPORT_PATH = "/csp-report"
REPORT_GROUP = "csp"

# Stripe's origins (https://docs.stripe.com/security/guide#content-security-policy): Stripe.js and its iframes,
# its API, its images, and the hosted pages a form of ours posts to and is redirected onto.
STRIPE_JS = ("https://js.stripe.com", "https://*.js.stripe.com")
STRIPE_FRAMES = (*STRIPE_JS, "https://hooks.stripe.com")
STRIPE_API = ("https://api.stripe.com",)
STRIPE_IMAGES = ("https://*.stripe.com",)
STRIPE_CHECKOUT = "https://checkout.stripe.com"  # hosted Checkout (SUBSCRIPTION_CHECKOUT=hosted|both)
STRIPE_PORTAL = "https://billing.stripe.com"  # the Billing Portal ("Manage billing in Stripe's portal")

# A stored HTML document of ours shown inside a page (the outbox's email preview): its inline styles may apply,
# nothing else may load or run, it is its own opaque origin (sandbox), and only our pages may frame it.
SANDBOXED_DOCUMENT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; sandbox; frame-ancestors 'self'"
)

# Pages whose URL is a secret (a download link, a password-reset link): their address must not leak to any page
# they link to or load from, not even as an origin.
NO_REFERRER_PREFIXES = SECRET_PATH_PREFIXES

# Powerful features nobody here needs are off for us and any frame; payment only for us and Stripe.
_DENIED_FEATURES = (
    "accelerometer",
    "camera",
    "display-capture",
    "geolocation",
    "gyroscope",
    "magnetometer",
    "microphone",
    "midi",
    "usb",
)


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def emulator_origins(settings: Settings) -> tuple[str, ...]:
    """The offline emulator's origins (its API and its Stripe.js stand-in), in place of Stripe's; none for Stripe."""
    if not settings.stripe.uses_emulator:
        return ()
    return tuple(dict.fromkeys([origin(settings.stripe.api_base), origin(settings.stripe.js_url)]))


def content_security_policy(settings: Settings, nonce: str) -> str:
    """The policy for one nonce. ``SecurityHeaders`` calls it once, with a placeholder, and splices nonces in."""
    emulator = emulator_origins(settings)
    if emulator:
        script, frames, connect, images = emulator, emulator, emulator, emulator
        hosted: tuple[str, ...] = emulator
    else:
        script, frames, connect, images = STRIPE_JS, STRIPE_FRAMES, STRIPE_API, STRIPE_IMAGES
        hosted = (STRIPE_CHECKOUT, STRIPE_PORTAL) if settings.offers_hosted_checkout else (STRIPE_PORTAL,)
    directives = {
        "default-src": ("'self'",),
        # 'strict-dynamic': only scripts carrying the nonce run (and what they load); the hosts are the fallback
        # for browsers without CSP level 3, which ignore the nonce's companions the other way round.
        "script-src": (f"'nonce-{nonce}'", "'strict-dynamic'", *script),
        "style-src": ("'self'",),
        # 'self': the outbox's email preview (SANDBOXED_DOCUMENT_CSP); every other page of ours refuses framing.
        "frame-src": ("'self'", *frames),
        "connect-src": ("'self'", *connect),
        "img-src": ("'self'", "data:", *images),
        "object-src": ("'none'",),
        "base-uri": ("'none'",),
        "frame-ancestors": ("'none'",),
        # Chrome checks form-action on the redirect after a post, too: the portal and hosted Checkout answer a
        # form of ours with a 303 to Stripe.
        "form-action": ("'self'", *hosted),
        "report-uri": (CSP_REPORT_PATH,),
        "report-to": (REPORT_GROUP,),
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def permissions_policy(settings: Settings) -> str:
    payment_origins = emulator_origins(settings) or STRIPE_JS[:1]
    payment = " ".join(["self", *(f'"{o}"' for o in payment_origins)])
    return ", ".join([*(f"{feature}=()" for feature in _DENIED_FEATURES), f"payment=({payment})"])


@dataclass(frozen=True)
class _Prebuilt:
    common: tuple[tuple[bytes, bytes], ...]
    csp_head: bytes
    csp_tail: bytes


_NONCE_MARK = "NONCE-MARK"


def _prebuild(settings: Settings) -> _Prebuilt:
    head, _, tail = content_security_policy(settings, _NONCE_MARK).partition(_NONCE_MARK)
    common: list[tuple[str, str]] = [
        ("x-content-type-options", "nosniff"),
        ("permissions-policy", permissions_policy(settings)),
        ("cross-origin-opener-policy", "same-origin"),
        ("reporting-endpoints", f'{REPORT_GROUP}="{settings.base_url}{CSP_REPORT_PATH}"'),
    ]
    if urlsplit(settings.base_url).scheme == "https":
        common.append(("strict-transport-security", "max-age=63072000; includeSubDomains"))
    return _Prebuilt(
        common=tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in common),
        csp_head=head.encode("latin-1"),
        csp_tail=tail.encode("latin-1"),
    )


class SecurityHeaders:
    """``before_send`` hook: adds the headers to each ``http.response.start``; everything else passes untouched."""

    def __init__(self, settings: Settings) -> None:
        self._built = _prebuild(settings)

    async def __call__(self, message: Message, scope: Scope) -> None:
        if message["type"] != "http.response.start":
            return
        built = self._built
        nonce = request_nonce(scope).encode("ascii")
        path: str = scope["path"]
        referrer = b"no-referrer" if path.startswith(NO_REFERRER_PREFIXES) else b"strict-origin-when-cross-origin"
        headers = list(message.get("headers") or ())
        ours = [
            *built.common,
            (b"content-security-policy", built.csp_head + nonce + built.csp_tail),
            (b"referrer-policy", referrer),
        ]
        # A handler that set one of these itself (a stricter policy for one response) keeps its own.
        present = {bytes(name).lower() for name, _ in headers}
        if message["status"] == 304:
            # The browser keeps the body it has, whose scripts carry the nonce of the policy it stored with it: a
            # 304's headers replace the stored ones, so a fresh nonce here would block every script on the page.
            present.add(b"content-security-policy")
        headers.extend(header for header in ours if header[0] not in present)
        message["headers"] = headers
