"""The /ui page in real headless Chromium (Debian's chromium + chromedriver, driven by
selenium): it shows accounts -> stacks -> services -> units with values and revisions,
follows a change without a reload, shows values as text, and needs an operator token.
A screenshot is left in test-results/ui.png."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.servers import OPERATOR_TOKEN, ROOT, ZK1, ZK1_PATH, ServerProcess, cli

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
RESULTS = ROOT / "test-results"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
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
        "--window-size=1200,1000",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: webdriver.Chrome, what: str, check: object, timeout: float = 10) -> None:
    """Until ``check(driver)``; an element replaced by a re-render while being read counts
    as "not yet" (the page redraws its tree when a long poll answers)."""
    wait = WebDriverWait(
        driver, timeout, poll_frequency=0.05, ignored_exceptions=(StaleElementReferenceException,)
    )
    wait.until(check, message=what)  # type: ignore[arg-type]


def value_cell(driver: webdriver.Chrome, path: str) -> str:
    cells = driver.find_elements(By.CSS_SELECTOR, f'tr[data-path="{path}"] td')
    return cells[1].text if cells else ""


@pytest.mark.timeout(120)
def test_the_page_shows_the_tree_live(
    loaded: httpx.Client, server: ServerProcess, browser: webdriver.Chrome
) -> None:
    hostile = "<img src=x onerror=document.title='owned'>"
    assert loaded.put(f"/v1/kv/{ZK1_PATH}/labels/note", content=hostile).status_code == 200
    browser.get(f"{server.url}/ui#token={OPERATOR_TOKEN}")
    wait_for(browser, "the page to go live", lambda d: d.find_element(By.ID, "state").text == "live")
    assert "token" not in browser.current_url  # taken out of the address bar and history
    accounts = [
        e.get_attribute("data-name")
        for e in browser.find_elements(By.CSS_SELECTOR, "details[data-kind=account]")
    ]
    assert accounts == ["5", "7"]
    units = browser.find_elements(By.CSS_SELECTOR, "details[data-kind=unit]")
    assert len(units) == 9
    hostname = f"/5/stacks/test1/services/s4/units/{ZK1}/hostname"
    assert value_cell(browser, hostname) == "s4-1"
    assert value_cell(browser, f"/5/stacks/test1/services/s4/units/{ZK1}/labels/note") == hostile
    assert browser.find_elements(By.TAG_NAME, "img") == [] and browser.title == "metafs"

    rev = loaded.put(f"/v1/kv/{ZK1_PATH}/hostname", content="s4-1-live").headers["X-Metafs-Revision"]
    wait_for(browser, "the change to show", lambda d: value_cell(d, hostname) == "s4-1-live", timeout=5)
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-path="{hostname}"]')
    assert row.get_attribute("class") == "changed" and f"rev {rev}" in row.text
    assert browser.find_element(By.ID, "revision").text == f"revision {rev}"
    RESULTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(RESULTS / "ui.png"))
    print(f"screenshot: {RESULTS / 'ui.png'}")


@pytest.mark.timeout(120)
def test_the_page_needs_an_operator_or_reader_token(
    loaded: httpx.Client, server: ServerProcess, browser: webdriver.Chrome
) -> None:
    unit_token = cli(
        "token", "create", "--kind", "unit", "--subject", ZK1, "--server", server.url
    ).stdout.strip()
    assert unit_token.startswith("mfs_unit_")
    browser.get(f"{server.url}/ui#token={unit_token}")
    wait_for(browser, "the refusal", lambda d: d.find_element(By.ID, "error").text != "")
    assert browser.find_element(By.ID, "error").text == "An operator or reader token is required."
    assert browser.find_element(By.ID, "login").is_displayed()
    assert browser.find_elements(By.CSS_SELECTOR, "details") == []
    reader = cli("token", "create", "--kind", "reader", "--server", server.url).stdout.strip()
    assert reader.startswith("mfs_reader_")
    browser.get(f"{server.url}/ui#token={reader}")  # a reader sees the page
    wait_for(browser, "the tree, to a reader", lambda d: len(d.find_elements(By.CSS_SELECTOR, "details")) > 0)
    assert browser.find_element(By.ID, "error").text == ""
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server.url}/ui#token=mfs_operator_wrong")
    wait_for(
        browser, "the refusal", lambda d: d.find_element(By.ID, "error").text == "Invalid or revoked token."
    )
    assert browser.find_elements(By.CSS_SELECTOR, "details") == []
    assert httpx.get(f"{server.url}/ui/../v1/units/").status_code in (403, 404)  # nothing but the page
    assert httpx.get(f"{server.url}/ui/secret.txt").status_code == 404
