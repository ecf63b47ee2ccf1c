"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver: the web
console's browser tests and `bench/console.py` share it.

Both binaries come from apt (`chromium`, `chromium-driver`) and are named by path, so Selenium
Manager never looks for, or downloads, a driver or a browser (`SE_OFFLINE` makes sure).
Chromium's own background traffic (component updates, sync, first-run pings) is switched off:
the only requests a test's page makes are to the server under test, which `requested_urls`
lets a test check.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")

_ARGS = (
    "--headless=new",
    # the tests run as root in CI, where Chromium's sandbox refuses to start
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--window-size=1280,1000",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-features=OptimizationHints,MediaRouter,Translate",
)


def missing() -> str | None:
    """Why the browser cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is missing (apt-get install {package})"
    return None


def chromium() -> webdriver.Chrome:
    """A headless Chromium whose network requests are logged (see `requested_urls`)."""
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in _ARGS:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    """The URLs the page asked for since the last call (DevTools' Network.requestWillBeSent
    events, from the performance log)."""
    urls = []
    # selenium leaves get_log untyped
    entries: list[dict[str, Any]] = driver.get_log("performance")  # type: ignore[no-untyped-call]
    for entry in entries:
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(str(message["params"]["request"]["url"]))
    return urls
