"""Benchmark the web console's first paint in Debian's Chromium (headless), beside a floor
served by the same server in the same run.

Run: ``.venv/bin/python bench/console.py [--loads 20]`` (needs ``apt-get install chromium
chromium-driver``; as root it runs Chromium with ``--no-sandbox``).

One ``lamina serve --admin-key test:test`` on 127.0.0.1 with a fresh data dir, one headless
Chromium (`tests/_browser.py`: no network but the server's) with its HTTP cache disabled, so
every load fetches the page and all its assets again. Pages, loaded ``--loads`` times each,
interleaved so a busy machine weighs on each alike:

* floor: ``GET /health``, a small JSON document from the same server that Chromium renders as
  text: a round trip to this server and a paint, nothing more;
* sign-in: ``/console`` before signing in (what a new user first sees);
* functions: ``/console#/functions`` signed in (the shell paints before its data arrives).

Each load's time to first paint is the Performance API's ``first-contentful-paint`` entry.
Printed: p50 and p90 per page, each page's p50 as a ratio to the floor's, and the target (issue
25: first paint under 1 s on loopback) as met/missed. Exit status 0 unless a page did not paint
or the server failed (1), 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

# This file runs as a script, so bench/ is sys.path[0], and bench/websocket.py (a benchmark)
# would shadow websocket-client, which selenium imports: selenium is imported without it.
sys.path.remove(str(Path(__file__).resolve().parent))
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (
    HOST,
    BenchError,
    Server,
    free_port,
    guarded,
    http_ok,
    log,
    start_server,
    stop_server,
    unbroken_cleanup,
    wait_ready,
)
from signing import ADMIN_KEY, admin_key_args

# The browser the console's tests drive, imported from the repo.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from tests import _browser

TARGET_MS = 1000.0
PAINT_TIMEOUT_S = 10.0
_FCP = (
    "const e = performance.getEntriesByName('first-contentful-paint')[0];"
    " return e ? e.startTime : null;"
)


def start_lamina(stack: contextlib.ExitStack, tmp: Path) -> str:
    data_dir = tmp / "lamina-data"
    port = free_port()
    argv = [sys.executable, "-m", "lamina", "serve", "--host", HOST, "--port", str(port)]
    argv += ["--data-dir", str(data_dir), "--log-level", "warning", *admin_key_args()]
    server: Server = start_server("lamina", argv, tmp, tmp / "lamina.log")
    stack.callback(stop_server, server)
    endpoint = f"http://{HOST}:{port}"
    wait_ready(server, lambda: http_ok(f"{endpoint}/health", expect_json_ok=True))
    return endpoint


def first_paint_ms(driver: WebDriver, url: str) -> float:
    """Load `url` in a fresh document; its first-contentful-paint time in ms."""
    driver.get("about:blank")
    driver.get(url)
    deadline = time.monotonic() + PAINT_TIMEOUT_S
    while time.monotonic() < deadline:
        value = driver.execute_script(_FCP)
        if value is not None:
            return float(value)
        time.sleep(0.02)
    raise BenchError(f"{url} did not paint within {PAINT_TIMEOUT_S:.0f} s")


def sign_in(driver: WebDriver, endpoint: str) -> None:
    driver.get(f"{endpoint}/console")
    wait = WebDriverWait(driver, PAINT_TIMEOUT_S)
    wait.until(ec.visibility_of_element_located((By.ID, "key-id"))).send_keys(ADMIN_KEY[0])
    driver.find_element(By.ID, "secret").send_keys(ADMIN_KEY[1])
    driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()
    wait.until(ec.visibility_of_element_located((By.ID, "sign-out")))


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(endpoint: str, loads: int) -> dict[str, list[float]]:
    driver = _browser.chromium()
    try:
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        pages = {"floor": f"{endpoint}/health", "sign-in": f"{endpoint}/console"}
        found: dict[str, list[float]] = {name: [] for name in (*pages, "functions")}
        for _ in range(loads):
            for name, url in pages.items():
                found[name].append(first_paint_ms(driver, url))
        sign_in(driver, endpoint)
        for _ in range(loads):
            found["floor"].append(first_paint_ms(driver, pages["floor"]))
            found["functions"].append(first_paint_ms(driver, f"{endpoint}/console#/functions"))
        elsewhere = [u for u in _browser.requested_urls(driver) if not u.startswith(endpoint)]
        if elsewhere:
            raise BenchError(f"the browser asked other hosts: {elsewhere[:5]}")
        return found
    finally:
        driver.quit()


def report(found: dict[str, list[float]]) -> None:
    floor = statistics.median(found["floor"])
    print(f"{'page':<10} {'loads':>5} {'p50 ms':>8} {'p90 ms':>8} {'x floor':>8}")
    for name, values in found.items():
        p50 = statistics.median(values)
        print(
            f"{name:<10} {len(values):>5} {p50:>8.1f} {pct(values, 90):>8.1f} {p50 / floor:>8.2f}"
        )
    for name in ("sign-in", "functions"):
        worst = pct(found[name], 90)
        verdict = "met" if worst < TARGET_MS else "missed"
        print(f"target: {name} first paint p90 < {TARGET_MS:.0f} ms: {verdict} ({worst:.1f} ms)")


def run(args: argparse.Namespace) -> None:
    reason = _browser.missing()
    if reason is not None:
        raise BenchError(reason)
    tmp_dir = tempfile.TemporaryDirectory(prefix="bench-console-", ignore_cleanup_errors=True)
    with tmp_dir as tmp_name, unbroken_cleanup(), contextlib.ExitStack() as stack:
        endpoint = start_lamina(stack, Path(tmp_name))
        log(f"loading each page {args.loads} times")
        report(measure(endpoint, args.loads))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loads", type=int, default=20, help="loads of each page")
    args = parser.parse_args()
    guarded(lambda: run(args))


if __name__ == "__main__":
    main()
