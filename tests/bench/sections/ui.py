"""The web page at fleet size, in headless Chromium with a reader token: 5,000 units
(and 50,000): time from the page's request to its first rows, a search from the keystroke
to the results on screen (beside the same search fetched bare from the page), and a
change made through the API until it is on screen."""

from __future__ import annotations

import statistics
from pathlib import Path

import httpx

from tests.support.browser import chromium, elements, ready_ms
from tests.support.servers import HEADERS, OPERATOR_TOKEN, ServerProcess

from ..harness import QUICK, Report, single, spread
from ..workloads import fleet

#: in the page: PUT a new hostname, then wait until the unit's page shows it (ms)
CHANGE = """
const [value, done] = arguments;
const cell = () => document.querySelector('tr[data-path="self/hostname"] td:nth-child(2)');
const t0 = performance.now();
const seen = new MutationObserver(() => {
  if (cell() && cell().textContent === value) { seen.disconnect(); done(performance.now() - t0); }
});
seen.observe(document.getElementById("view"), {subtree: true, childList: true, characterData: true});
fetch("/v1/kv/acct4/prod/svc19/a4-s19-49/hostname", {method: "PUT", body: value,
  headers: {"Metadata-Flavor": "metafs", "Authorization": "Bearer %s"}});
"""
#: in the page: until the search for arguments[0] is on screen
ANSWERED = """
const [q, done] = arguments;
const t = setInterval(() => {
  const s = window.metafsLastSearch;
  if (s && s.q === q) { clearInterval(t); done(); }
}, 5);
"""
#: in the page: until the unit's files are on screen
SHOWN = """
const done = arguments[0];
const t = setInterval(() => {
  if (document.querySelector('tr[data-path="self/hostname"]')) { clearInterval(t); done(); }
}, 5);
"""
#: in the page: the bare search request's time (ms), without the page's debounce and drawing
BARE = """
const [q, done] = arguments;
const t0 = performance.now();
fetch("/v1/fleet/search?limit=20&q=" + encodeURIComponent(q), {cache: "no-store",
  headers: {"Metadata-Flavor": "metafs",
            "Authorization": "Bearer " + sessionStorage.getItem("metafs-token")}})
  .then((r) => r.json()).then(() => done(performance.now() - t0));
"""


def measure(report: Report, tmp: Path, size: str, doc: dict[str, object], queries: list[str]) -> None:
    srv = ServerProcess(tmp / f"ui-{size}.db").start("--log-level", "error")
    try:
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=600) as op:
            op.post("/v1/load", json=doc).raise_for_status()
            reader = op.post("/v1/tokens/", json={"kind": "reader"}).json()["token"]
        with chromium(tmp / f"chromium-{size}") as browser:
            browser.set_script_timeout(30)
            loads = []
            for i in range(3 if QUICK else 7):
                browser.get("about:blank")
                browser.get(f"{srv.url}/ui#/services?token={reader}" if i == 0 else f"{srv.url}/ui#/services")
                loads.append(ready_ms(browser))
            size_n = elements(browser)
            cold, warm = loads[0], loads[1:]
            goal = "<= 1000 ms" if size == "5,000" else ""
            report.record(
                "ui",
                f"{size} units: first load (fresh browser, server caches cold)",
                single(cold),
                "ms",
            )
            report.record(
                "ui",
                f"{size} units: request -> search box and first rows",
                spread(warm),
                "ms",
                goal=goal,
            )
            report.record(
                "ui",
                f"{size} units: elements on the services page",
                single(size_n),
                "elements",
                goal="<= 5000",
            )
            box = browser.find_element("id", "search")
            typed, bare = [], []
            for q in queries:
                box.clear()
                browser.execute_script("window.metafsLastSearch = null")
                box.send_keys(q)
                browser.execute_async_script(ANSWERED, q)
                typed.append(float(browser.execute_script("return window.metafsLastSearch.ms")))
                bare.append(float(browser.execute_async_script(BARE, q)))
            report.record(
                "ui",
                f"{size} units: keystroke -> search results on screen (80 ms of it the page's debounce)",
                spread(typed),
                "ms",
                ("the search fetched bare", statistics.median(bare)),
                "<= 200 ms" if size == "5,000" else "",
            )
            if size == "5,000":
                browser.get(f"{srv.url}/ui#/unit/a4-s19-49")
                browser.execute_async_script(SHOWN)
                shown = [
                    float(browser.execute_async_script(CHANGE % OPERATOR_TOKEN, f"renamed-{i}"))
                    for i in range(5 if QUICK else 15)
                ]
                report.record(
                    "ui",
                    f"{size} units: a change through the API -> on screen",
                    spread(shown),
                    "ms",
                    goal="<= 1000 ms",
                )
    finally:
        srv.stop()


def run(report: Report, tmp: Path) -> None:
    print("the web page in headless Chromium: 5,000 and 50,000 units")
    queries = ["s7-12.a3", "10.4.19.50", "a2-s5-33", "node-17", "s13-2.a0", "10.1.1.1"]
    measure(report, tmp, "5,000", fleet(), queries)
    if not QUICK:
        measure(report, tmp, "50,000", fleet(10, 100, 50, 500), queries)
