"""`make lighthouse`: Lighthouse's four scores for the pages #15 names, against a running shop (`make run`).

Home, the product list, a product page, pricing, and checkout with a cart (a visitor who put a product in the cart:
its cookies are passed to Lighthouse). Lighthouse runs through `npx` (Node.js, npm's registry) with the Chromium
that `CHROME_PATH` names (default: Debian's /usr/bin/chromium), headless, its default mobile emulation and
simulated throttling. A table on stdout, the figures in ``bench/results/lighthouse.json``; exit 2 below 98 with
``--strict``.
"""

# ruff: noqa: T201 - printing the table is what this command is for

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CATEGORIES = ("performance", "accessibility", "best-practices", "seo")
TARGET = 98
LIGHTHOUSE = "lighthouse@12"


def cart_cookie(base_url: str) -> tuple[str, str]:
    """A visitor with one product in the cart: (the product page's path, the Cookie header)."""
    with httpx.Client(base_url=base_url) as client:
        listing = client.get("/products").text
        match = re.search(r'href="(/products/[a-z0-9-]+)"', listing)
        if not match:
            raise SystemExit(f"no product on {base_url}/products: is the demo catalog seeded (make run)?")
        page = client.get(match.group(1))
        product = re.search(r'name="product_id" value="([0-9a-f-]+)"', page.text)
        token = client.cookies.get("cartwright_csrf")
        if not product or not token:
            raise SystemExit(f"{match.group(1)} has no add-to-cart form or set no CSRF cookie")
        added = client.post("/cart/items", data={"product_id": product.group(1)}, headers={"x-csrftoken": token})
        if added.status_code != 303:
            raise SystemExit(f"adding to the cart answered {added.status_code}")
        return match.group(1), "; ".join(f"{k}={v}" for k, v in client.cookies.items())


def run(url: str, cookie: str, chrome: str) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        args = [
            shutil.which("npx") or "npx",
            "--yes",
            LIGHTHOUSE,
            url,
            "--quiet",
            f"--only-categories={','.join(CATEGORIES)}",
            "--chrome-flags=--headless=new --no-sandbox --disable-gpu",
            "--output=json",
            f"--output-path={report}",
        ]
        if cookie:
            args.append(f"--extra-headers={json.dumps({'Cookie': cookie})}")
        for _ in range(3):
            done = subprocess.run(args, env={**os.environ, "CHROME_PATH": chrome}, capture_output=True, check=False)  # noqa: S603
            # Headless Chromium now and then loses the trace (NO_NAVSTART): Lighthouse's own advice is to run again.
            if not (done.returncode and b"Please run Lighthouse again" in done.stderr):
                break
        if done.returncode or not report.exists():
            raise SystemExit(f"lighthouse {url} exited {done.returncode}:\n{done.stderr.decode()[-2000:]}")
        data = json.loads(report.read_text())
        if data.get("finalDisplayedUrl", url).rstrip("/") != url.rstrip("/"):
            raise SystemExit(f"{url} ended at {data.get('finalDisplayedUrl')}: measured the wrong page")
        return {name: round(float(data["categories"][name]["score"]) * 100) for name in CATEGORIES}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.lighthouse", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default=os.environ.get("BASE_URL") or "http://127.0.0.1:8000")
    parser.add_argument("--chrome", default=os.environ.get("CHROME_PATH") or "/usr/bin/chromium")
    parser.add_argument("--strict", action="store_true", help=f"exit 2 when a score is below {TARGET}")
    opts = parser.parse_args()
    if not shutil.which("npx"):
        raise SystemExit("npx (Node.js) is needed: Lighthouse is a Node tool")
    product, cookie = cart_cookie(opts.base_url)
    pages = [("/", ""), ("/products", ""), (product, ""), ("/pricing", ""), ("/checkout", cookie)]
    results = {}
    for path, with_cookie in pages:
        label = "checkout (with a cart)" if path == "/checkout" else path
        print(f"lighthouse {label} ...", flush=True)
        results[label] = run(opts.base_url + path, with_cookie, opts.chrome)
    width = max(len(p) for p in results)
    print("\n" + "page".ljust(width) + "".join(c.rjust(16) for c in CATEGORIES))
    for label, scores in results.items():
        print(label.ljust(width) + "".join(str(scores[c]).rjust(16) for c in CATEGORIES))
    low = [f"{p} {c} {s}" for p, scores in results.items() for c, s in scores.items() if s < TARGET]
    print("target (every score >= 98): " + ("met" if not low else "MISSED: " + ", ".join(low)))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "lighthouse.json").write_text(json.dumps(results, indent=2) + "\n")
    return 2 if opts.strict and low else 0


if __name__ == "__main__":
    sys.exit(main())
