"""``/v1/fleet/...``: the lists behind the web page, over HTTP: pages, natural order,
counts, the search and its limit, what each token sees, bad input, and a list kept live
by a long poll."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.support.servers import HEADERS, ZK1, ServerProcess, metric

pytestmark = pytest.mark.timeout(60)


def token(srv: ServerProcess, kind: str, subject: str = "") -> dict[str, str]:
    r = httpx.post(srv.url + "/v1/tokens/", json={"kind": kind, "subject": subject}, headers=HEADERS)
    assert r.status_code == 201, r.text
    return {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {r.json()['token']}"}


def test_pages_in_natural_order_with_counts(loaded: httpx.Client) -> None:
    units = {f"u{i}": {"cardinal_value": i, "hostname": f"n-{i}", "host": f"h{i % 12}"} for i in range(1, 26)}
    doc = {"accounts": {"9": {"stacks": {"s": {"services": {"x2": {"units": units}, "x10": {}}}}}}}
    assert loaded.post("/v1/load", json=doc).status_code == 200
    svc = loaded.get("/v1/fleet/services").json()
    names = [(s["account"], s["service"], s["units"]) for s in svc["items"]]
    assert names == [("5", "s4", 3), ("7", "api", 1), ("7", "web", 5), ("9", "x2", 25), ("9", "x10", 0)]
    first = loaded.get("/v1/fleet/units", params={"service": "9/s/x2", "limit": 10}).json()
    assert first["total"] == 25 and [u["unit"] for u in first["items"]] == [f"u{i}" for i in range(1, 11)]
    last = loaded.get("/v1/fleet/units", params={"service": "9/s/x2", "offset": 20, "limit": 10}).json()
    assert [u["unit"] for u in last["items"]] == ["u21", "u22", "u23", "u24", "u25"]
    hosts = loaded.get("/v1/fleet/hosts").json()["items"]
    assert [h["host"] for h in hosts][:5] == ["h0", "h1", "h2", "h3", "h4"] and hosts[-1]["host"] == "node-c"
    assert {h["host"]: h["units"] for h in hosts}["h1"] == 3  # u1, u13, u25
    on = loaded.get("/v1/fleet/units", params={"host": "node-a"}).json()
    assert on["total"] == 3 and {u["service"] for u in on["items"]} == {"s4", "web"}


def test_search(loaded: httpx.Client) -> None:
    def search(q: str, **extra: str) -> dict:  # type: ignore[type-arg]
        r = loaded.get("/v1/fleet/search", params={"q": q, **extra})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    hit = search("S4-2")  # any case
    assert [(u["unit"], u["matched"]) for u in hit["items"]] == [
        ("f58ce48e-a4d5-4c1b-905f-ee3b15ccf117", "hostname")
    ]
    assert [u["hostname"] for u in search("10.42.0.7")["items"]] == ["s4-3"]
    assert search("node-c")["total"] == 3
    assert search("io.example/zone=b")["items"][0]["matched"] == "label io.example/zone"
    many = search("-", limit="2")
    assert many["total"] == 9 and len(many["items"]) == 2
    assert search("nothing-like-it") == {"total": 0, "offset": 0, "items": []}
    for params, why in (
        ({}, "q: what to look for"),
        ({"q": "x", "limit": "1000"}, "limit='1000'"),
        ({"q": "x", "bogus": "1"}, "unknown query parameter"),
    ):
        r = loaded.get("/v1/fleet/search", params=params)
        assert r.status_code == 400 and why in r.text, r.text
    assert loaded.get("/v1/fleet/units", params={"service": "5/test1"}).status_code == 400
    assert loaded.get("/v1/fleet/nope").status_code == 404


def test_each_token_sees_what_it_may_read(loaded: httpx.Client, server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, headers=token(server, "unit", ZK1)) as unit:
        assert [s["service"] for s in unit.get("/v1/fleet/services").json()["items"]] == ["s4"]
        assert unit.get("/v1/fleet/search", params={"q": "web"}).json()["total"] == 0
        assert [h["units"] for h in unit.get("/v1/fleet/hosts").json()["items"]] == [1, 1, 1]
    with httpx.Client(base_url=server.url, headers=token(server, "reader", "7")) as account:
        assert {s["account"] for s in account.get("/v1/fleet/services").json()["items"]} == {"7"}
    assert httpx.get(server.url + "/v1/fleet/services").status_code == 403  # no header, no token


def test_a_list_is_kept_live_by_a_long_poll(loaded: httpx.Client, server: ServerProcess) -> None:
    first = loaded.get("/v1/fleet/services")
    index = first.headers["x-metafs-index"]
    got: list[tuple[float, httpx.Response]] = []

    def poll() -> None:
        t0 = time.monotonic()
        r = httpx.get(
            server.url + "/v1/fleet/services", params={"index": index, "wait": "20s"}, headers=HEADERS
        )
        got.append((time.monotonic() - t0, r))

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    assert got == []  # parked
    assert loaded.put(f"/v1/kv/5/test1/s4/{ZK1}/hostname", content="moved").status_code == 200
    t.join(10)
    took, r = got[0]
    assert took < 5 and int(r.headers["x-metafs-index"]) > int(index)
    s4 = next(s for s in r.json()["items"] if s["service"] == "s4")
    assert s4["changed"] == int(r.headers["x-metafs-index"])


def test_what_the_lists_keep_goes_with_what_they_describe(
    loaded: httpx.Client, server: ServerProcess
) -> None:
    """Rounds of a 200-unit service loaded, listed by every reader of instances, and
    deleted: the kept instances come back to the example's three services each time."""
    entries = 'metafs_cache_entries{cache="instances"}'
    loaded.get("/v1/fleet/services")
    before = metric(server, entries)
    assert before == 3
    for r in range(10):
        units = {
            f"c{r}-{i}": {"cardinal_value": i, "hostname": f"c-{i}", "virt_ip_address": "10.9.9.9"}
            for i in range(200)
        }
        assert (
            loaded.post(
                "/v1/load",
                json={"accounts": {"9": {"stacks": {"s": {"services": {f"c{r}": {"units": units}}}}}}},
            ).status_code
            == 200
        )
        assert loaded.get("/v1/fleet/search", params={"q": f"c{r}-199"}).json()["total"] == 1
        assert len(loaded.get(f"/v1/health/service/c{r}--s--9").json()) == 200
        assert loaded.get("/v1/prometheus/targets").status_code == 200
        assert metric(server, entries) == before + 1
        assert loaded.delete("/v1/accounts/9").status_code == 200
        assert metric(server, entries) == before
    assert metric(server, 'metafs_cache_bytes{cache="instances"}') < 64 * 1024  # three small services
