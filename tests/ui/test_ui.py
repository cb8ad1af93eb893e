"""The /ui page in real headless Chromium, on the example world: lists, a unit's page as
its /meta, hash routes, values as text, a change shown without a reload, and what each
token sees. Screenshots are left in test-results/."""

from __future__ import annotations

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from tests.support.browser import ready_ms, screenshot, wait_for
from tests.support.servers import OPERATOR_TOKEN, ZK1, ZK1_PATH, ServerProcess, cli

pytestmark = pytest.mark.timeout(120)


def value_cell(driver: webdriver.Chrome, path: str) -> str:
    cells = driver.find_elements(By.CSS_SELECTOR, f'tr[data-path="{path}"] td')
    return cells[1].text if cells else ""


def column(driver: webdriver.Chrome, n: int) -> list[str]:
    return [td.text for td in driver.find_elements(By.CSS_SELECTOR, f"#view tbody tr td:nth-child({n})")]


def test_lists_a_units_page_and_a_change_without_a_reload(
    loaded: httpx.Client, server: ServerProcess, browser: webdriver.Chrome
) -> None:
    hostile = "<img src=x onerror=document.title='owned'>"
    assert loaded.put(f"/v1/kv/{ZK1_PATH}/labels/note", content=hostile).status_code == 200
    browser.get(f"{server.url}/ui#token={OPERATOR_TOKEN}")
    wait_for(
        browser, "the services", lambda d: d.find_element(By.ID, "state").text == "live" and column(d, 3)
    )
    assert "token" not in browser.current_url and browser.current_url.endswith("/ui#/services")
    assert column(browser, 3) == ["s4", "api", "web"] and column(browser, 4) == ["3", "1", "5"]
    browser.find_element(By.LINK_TEXT, "Hosts").click()
    wait_for(browser, "the hosts", lambda d: column(d, 1) == ["node-a", "node-b", "node-c"])
    assert column(browser, 4) == ["3", "3", "3"]
    browser.find_element(By.LINK_TEXT, "node-a").click()
    wait_for(browser, "node-a's units", lambda d: len(column(d, 1)) == 3)
    assert browser.current_url.endswith("#/host/node-a")
    browser.find_element(By.LINK_TEXT, ZK1).click()  # a unit's page: its /meta
    wait_for(browser, "the unit's files", lambda d: value_cell(d, "self/hostname") == "s4-1")
    assert browser.current_url.endswith(f"#/unit/{ZK1}")
    assert value_cell(browser, "self/labels/note") == hostile  # as text
    assert browser.find_elements(By.TAG_NAME, "img") == [] and browser.title == "metafs"
    assert value_cell(browser, "service/metadata/zk/client_port") == "2181"
    wait_for(browser, "all_hosts, with hostnames", lambda d: column(d, 2)[-3:] == ["s4-1", "s4-2", "s4-3"])
    screenshot(browser, "ui-unit.png")

    browser.execute_script("window.notReloaded = true")
    rev = loaded.put(f"/v1/kv/{ZK1_PATH}/hostname", content="s4-1-live").headers["X-Metafs-Revision"]
    wait_for(browser, "the change", lambda d: value_cell(d, "self/hostname") == "s4-1-live", timeout=5)
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-path="self/hostname"]')
    assert "changed" in (row.get_attribute("class") or "") and f"rev {rev}" in row.text
    assert browser.execute_script("return window.notReloaded") is True
    screenshot(browser, "ui-changed.png")

    browser.get(f"{server.url}/ui#/service/5/test1/s4")  # a shared link, straight in
    wait_for(browser, "the service's units", lambda d: column(d, 2) == ["s4-1-live", "s4-2", "s4-3"])


def test_search_by_hostname_and_ip(
    loaded: httpx.Client, server: ServerProcess, browser: webdriver.Chrome
) -> None:
    browser.get(f"{server.url}/ui#token={OPERATOR_TOKEN}")
    wait_for(browser, "the page", lambda d: column(d, 3))
    body = browser.find_element(By.TAG_NAME, "body")
    body.send_keys("/")  # focuses the search box
    box = browser.switch_to.active_element
    assert box.get_attribute("id") == "search" and box.get_attribute("type") == "search"
    box.send_keys("web-3")
    wait_for(browser, "a hit", lambda d: "web-3" in d.find_element(By.ID, "found").text)
    assert browser.execute_script("return window.metafsLastSearch.found") == 1
    box.clear()
    box.send_keys("10.42.0.6")
    wait_for(browser, "the unit at that address", lambda d: "s4-2" in d.find_element(By.ID, "found").text)
    browser.find_element(By.CSS_SELECTOR, "#found a").click()
    wait_for(browser, "its page", lambda d: value_cell(d, "self/virt_ip_address") == "10.42.0.6")


def test_each_token_sees_what_it_may_read(
    loaded: httpx.Client, server: ServerProcess, browser: webdriver.Chrome
) -> None:
    unit_token = cli(
        "token", "create", "--kind", "unit", "--subject", ZK1, "--server", server.url
    ).stdout.strip()
    browser.get(f"{server.url}/ui#token={unit_token}")
    wait_for(browser, "its own service", lambda d: column(d, 3) == ["s4"])
    browser.get(f"{server.url}/ui#/unit/3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001")  # another account's
    wait_for(browser, "the refusal", lambda d: "may not read" in d.find_element(By.ID, "view").text)
    reader = cli(
        "token", "create", "--kind", "reader", "--subject", "7", "--server", server.url
    ).stdout.strip()
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server.url}/ui#/hosts?token={reader}")  # the token in a shared link's fragment
    wait_for(browser, "account 7's hosts", lambda d: column(d, 4) == ["2", "2", "2"])
    assert "token" not in browser.current_url and browser.current_url.endswith("#/hosts")
    browser.execute_script("sessionStorage.clear()")
    browser.get(f"{server.url}/ui#token=mfs_operator_wrong")
    wait_for(
        browser, "the refusal", lambda d: d.find_element(By.ID, "error").text == "Invalid or revoked token."
    )
    assert browser.find_element(By.ID, "login").is_displayed() and column(browser, 1) == []
    assert httpx.get(f"{server.url}/ui/../v1/units/").status_code in (403, 404)  # nothing but the page
    assert httpx.get(f"{server.url}/ui/secret.txt").status_code == 404


def test_reloads_never_wait_for_the_last_pages_long_polls(
    loaded: httpx.Client, server: ServerProcess, browser: webdriver.Chrome
) -> None:
    """A page left with its long poll open kept that connection busy until the server
    answered (55 s); Chromium has six per server, so the sixth reload waited ~54 s. The
    page now aborts its requests when it goes; the bound is far from both."""
    browser.get(f"{server.url}/ui#/services?token={OPERATOR_TOKEN}")
    for _ in range(8):
        browser.get("about:blank")
        browser.get(f"{server.url}/ui#/services")
        took = ready_ms(browser)
        assert took < 20_000, f"a reload waited {took:.0f} ms"
