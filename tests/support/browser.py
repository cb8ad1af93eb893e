"""Headless Chromium (Debian's chromium + chromedriver, driven by selenium) for the /ui
tests and the bench: a browser kept off every network but loopback, and waits that
survive the page redrawing what they read."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.servers import ROOT

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
#: screenshots are left here for a person to look at
RESULTS = ROOT / "test-results"


@contextmanager
def chromium(profile: Path) -> Iterator[webdriver.Chrome]:
    assert CHROMIUM and DRIVER, "chromium and chromium-driver are installed by `make test`"
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # the flags that keep Chromium off the network it cannot reach here
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1300,1000",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, what: str, check: Any, timeout: float = 10) -> None:
    """Until ``check(driver)``; an element replaced by a re-render while being read counts
    as "not yet" (the page redraws what a long poll brings)."""
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    )
    wait.until(check, message=what)


def elements(driver: webdriver.Chrome) -> int:
    return int(driver.execute_script("return document.getElementsByTagName('*').length"))


def ready_ms(driver: webdriver.Chrome) -> float:
    """ms from the page's request to its first rows (the page's own mark)."""
    wait_for(driver, "the page to be ready", lambda d: d.execute_script("return document.body.dataset.ready"))
    return float(driver.execute_script("return performance.getEntriesByName('metafs-ready')[0].startTime"))


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / name
    assert driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path
