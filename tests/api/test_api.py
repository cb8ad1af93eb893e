"""The HTTP API against a real `metafs serve` on loopback and a real SQLite file."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from tests.support.servers import EXAMPLE, HEADERS, ZK1, ZK1_PATH, ServerProcess

ZK2 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf117"
WEB1 = "7/shop/web/3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001"


def test_seed_layout_leaves_and_listings(loaded: httpx.Client) -> None:
    r = loaded.get(f"/v1/kv/{ZK1_PATH}/hostname")
    assert (r.status_code, r.text) == (200, "s4-1\n")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/cardinal_value").text == "1\n"
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/ports").text == "2181/tcp\n2888/tcp\n3888/tcp\n"
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/service_domain").text == "s4.test1.internal\n"
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/service_name").text == "s4\n"
    # the seed: leaving the unit id off lists the service's units
    units = loaded.get("/v1/kv/5/test1/s4/").text.splitlines()
    assert units == [f"{u}/" for u in (ZK1, ZK2, "f58ce48e-a4d5-4c1b-905f-ee3b15ccf118")]
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/all_hosts").text.splitlines() == [
        f"5/test1/s4/{u.rstrip('/')}" for u in units
    ]
    assert loaded.get("/v1/kv/").text == "5/\n7/\n"
    listing = loaded.get(f"/v1/kv/{ZK1_PATH}/").text.splitlines()
    assert {"cardinal_value", "hostname", "labels/", "host/", "sidekicks/", "all_hosts"} <= set(listing)


def test_json_is_the_whole_subtree(loaded: httpx.Client) -> None:
    r = loaded.get("/v1/kv/5/test1/s4/", headers={"Accept": "application/json"})
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    data = r.json()
    assert sorted(data) == sorted([ZK1, ZK2, "f58ce48e-a4d5-4c1b-905f-ee3b15ccf118"])
    assert data[ZK2]["hostname"] == "s4-2"
    assert data[ZK2]["host"] == {
        "name": "node-b",
        "hostname": "node-b.dc1.example.net",
        "agent_ip": "10.0.0.2",
        "labels": {"zone": "b", "disk": "ssd"},
    }
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/cardinal_value?format=json").json() == 1


def test_unit_view_is_the_file_layout(loaded: httpx.Client) -> None:
    v = loaded.get(f"/v1/view/{ZK1}/?format=json").json()
    assert sorted(v) == ["revision", "self", "service", "stack"]
    s = v["self"]
    assert s["deployment_unit_id"] == ZK1_PATH
    assert (s["unit_id"], s["cardinal_value"], s["hostname"], s["virt_ip_address"]) == (
        ZK1,
        1,
        "s4-1",
        "10.42.0.5",
    )
    assert (s["service_name"], s["stack_name"], s["account"]) == ("s4", "test1", "5")
    assert s["labels"] == {"io.example/zone": "a"}
    assert s["sidekicks"] == {"backup": {"image": "zk-backup:1", "ports": [], "labels": {}}}
    assert s["host"]["agent_ip"] == "10.0.0.1"
    svc = v["service"]
    assert (svc["name"], svc["service_domain"], svc["scale"]) == ("s4", "s4.test1.internal", 3)
    assert svc["metadata"]["zk"]["client_port"] == 2181
    assert sorted(svc["all_hosts"]) == sorted([ZK1, ZK2, "f58ce48e-a4d5-4c1b-905f-ee3b15ccf118"])
    assert svc["all_hosts"][ZK2]["cardinal_value"] == 2
    assert v["stack"]["name"] == "test1" and v["stack"]["labels"] == {"tier": "backend"}
    assert v["stack"]["services"] == {"s4": {"name": "s4", "scale": 3, "service_domain": "s4.test1.internal"}}
    assert v["revision"] == 1
    # text: names are file names (the '/' of a label key is percent-encoded)
    assert loaded.get(f"/v1/view/{ZK1}/self/labels/").text == "io.example%2Fzone\n"
    assert loaded.get(f"/v1/view/{ZK1}/self/labels/io.example%2Fzone").text == "a\n"
    assert loaded.get(f"/v1/view/{ZK1}/").text == "revision\nself/\nservice/\nstack/\n"
    meta = loaded.get(f"/v1/view/{ZK1}/self/hostname?format=meta").json()
    assert meta["v"] == "s4-1" and meta["r"] == 1 and meta["m"] > 0


def test_document_api_round_trips(loaded: httpx.Client) -> None:
    doc = loaded.get("/v1/?format=json")
    assert doc.status_code == 404  # the root of /v1 is not a resource
    svc = loaded.get("/v1/accounts/5/stacks/test1/services/s4?format=json").json()
    assert svc["service_domain"] == "s4.test1.internal" and ZK1 in svc["units"]
    everything = {
        "accounts": loaded.get("/v1/accounts/?format=json").json(),
        "hosts": loaded.get("/v1/hosts/?format=json").json(),
    }
    assert sorted(everything["accounts"]) == ["5", "7"]
    # what GET shows, load takes back: and it changes nothing
    r = loaded.post("/v1/load?format=json", json=everything)
    assert r.json()["changed"] == 0 and r.json()["revision"] == 1


def test_headers_etag_and_304(loaded: httpx.Client) -> None:
    r = loaded.get(f"/v1/view/{ZK1}/self/hostname")
    for h in ("etag", "x-metafs-index", "x-metafs-revision", "last-modified", "date", "content-type"):
        assert h in r.headers, h
    assert r.headers["x-metafs-index"] == "1"
    r2 = loaded.get(f"/v1/view/{ZK1}/self/hostname", headers={"If-None-Match": r.headers["etag"]})
    assert (r2.status_code, r2.content) == (304, b"")
    assert loaded.put(f"/v1/kv/{ZK1_PATH}/hostname", content="zk-1").status_code == 200
    r3 = loaded.get(f"/v1/view/{ZK1}/self/hostname", headers={"If-None-Match": r.headers["etag"]})
    assert (r3.status_code, r3.text, r3.headers["x-metafs-index"]) == (200, "zk-1\n", "2")
    # a write elsewhere does not change this subtree's ETag
    loaded.put(f"/v1/kv/{WEB1}/hostname", content="w1")
    r4 = loaded.get(f"/v1/view/{ZK1}/self/hostname", headers={"If-None-Match": r3.headers["etag"]})
    assert r4.status_code == 304
    assert loaded.head(f"/v1/view/{ZK1}/self/hostname").headers["etag"] == r3.headers["etag"]


def _poll(client: httpx.Client, url: str, out: list[tuple[float, httpx.Response]]) -> None:
    t0 = time.monotonic()
    r = client.get(url, timeout=20)
    out.append((time.monotonic() - t0, r))


def test_long_poll_wakes_on_its_subtree_not_on_others(loaded: httpx.Client) -> None:
    index = loaded.get(f"/v1/view/{ZK1}/self/hostname").headers["x-metafs-index"]
    out: list[tuple[float, httpx.Response]] = []
    t = threading.Thread(
        target=_poll, args=(loaded, f"/v1/view/{ZK1}/self/hostname?index={index}&wait=10s", out)
    )
    t.start()
    time.sleep(0.3)
    loaded.put(f"/v1/kv/{WEB1}/hostname", content="elsewhere")  # another account: no wake-up
    time.sleep(0.3)
    assert out == []
    t_write = time.monotonic()
    loaded.put(f"/v1/kv/{ZK1_PATH}/hostname", content="zk-one")
    t.join(15)
    delays = [time.monotonic() - t_write]
    assert out and out[0][1].text == "zk-one\n"
    assert int(out[0][1].headers["x-metafs-index"]) > int(index)
    for i in range(4):  # four more, each on a new index
        index = loaded.get(f"/v1/view/{ZK1}/self/hostname").headers["x-metafs-index"]
        more: list[tuple[float, httpx.Response]] = []
        url = f"/v1/view/{ZK1}/self/hostname?index={index}&wait=10s"
        t = threading.Thread(target=_poll, args=(loaded, url, more))
        t.start()
        time.sleep(0.2)
        t_write = time.monotonic()
        loaded.put(f"/v1/kv/{ZK1_PATH}/hostname", content=f"zk-{i}")
        t.join(15)
        delays.append(time.monotonic() - t_write)
        assert more and more[0][1].text == f"zk-{i}\n"
    # woken by the write, not by the 10 s wait (make bench measures how soon: goal 100 ms)
    assert max(delays) < 5, f"long polls answered {[round(d * 1000) for d in delays]} ms after the writes"


def test_long_poll_times_out_with_the_unchanged_answer(loaded: httpx.Client) -> None:
    index = loaded.get("/v1/kv/5/test1/s4/").headers["x-metafs-index"]
    t0 = time.monotonic()
    r = loaded.get(f"/v1/kv/5/test1/s4/?index={index}&wait=400ms")
    took = time.monotonic() - t0
    assert r.status_code == 200 and r.headers["x-metafs-index"] == index
    assert 0.35 < took < 3


def test_long_poll_on_a_missing_key_returns_when_it_appears(loaded: httpx.Client) -> None:
    r = loaded.get("/v1/kv/5/test1/s4/new-unit/hostname")
    assert r.status_code == 404
    out: list[tuple[float, httpx.Response]] = []
    url = f"/v1/kv/5/test1/s4/new-unit/hostname?index={r.headers['x-metafs-index']}&wait=10s"
    t = threading.Thread(target=_poll, args=(loaded, url, out))
    t.start()
    time.sleep(0.2)
    body = {"cardinal_value": 4, "hostname": "s4-4"}
    assert loaded.put("/v1/accounts/5/stacks/test1/services/s4/units/new-unit", json=body).status_code == 200
    t.join(15)
    assert out[0][1].status_code == 200 and out[0][1].text == "s4-4\n"
    assert out[0][0] < 5


def test_writes_answer_with_the_new_revision(loaded: httpx.Client) -> None:
    r = loaded.put(f"/v1/kv/{ZK1_PATH}/labels/rack", content="r7", headers={"Accept": "application/json"})
    assert r.json() == {"revision": 2, "changed": 1}
    assert loaded.get(f"/v1/view/{ZK1}/self/labels/rack").text == "r7\n"
    # a text value for a list field: one item per line, like the file shows it
    loaded.put(f"/v1/kv/{ZK1_PATH}/ports", content="1/tcp\n2/udp\n")
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/ports?format=json").json() == ["1/tcp", "2/udp"]
    # JSON values
    loaded.put(f"/v1/kv/{ZK1_PATH}/volumes", json=["/a:/b"])
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/volumes").text == "/a:/b\n"
    # a value that did not change writes nothing and keeps the revision
    r = loaded.put(f"/v1/kv/{ZK1_PATH}/labels/rack", content="r7", headers={"Accept": "application/json"})
    assert r.json()["changed"] == 0
    # a field's mtime is when *it* changed
    meta = loaded.get(f"/v1/view/{ZK1}/self?format=meta").json()["c"]
    assert meta["image"]["r"] == 1 and meta["labels"]["c"]["rack"]["r"] == 2
    # service-level writes show in every unit's view
    loaded.put("/v1/accounts/5/stacks/test1/services/s4/service_domain", content="zk.internal")
    assert loaded.get(f"/v1/view/{ZK2}/self/service_domain").text == "zk.internal\n"


def test_deletes(loaded: httpx.Client) -> None:
    assert loaded.delete(f"/v1/kv/{ZK1_PATH}/labels/io.example%2Fzone").status_code == 200
    assert loaded.get(f"/v1/view/{ZK1}/self/labels/").text == ""
    r = loaded.delete(f"/v1/kv/{ZK1_PATH}/hostname")
    assert r.status_code == 400 and "hostname: required field is missing" in r.text
    assert loaded.delete(f"/v1/kv/{ZK1_PATH}").status_code == 200
    assert loaded.get(f"/v1/view/{ZK1}/").status_code == 404
    assert ZK1 not in loaded.get(f"/v1/view/{ZK2}/service/all_hosts/").text
    assert loaded.delete("/v1/accounts/7").status_code == 200
    assert loaded.get("/v1/kv/").text == "5/\n"
    assert loaded.get("/v1/units/").text.count("\n") == 2
    assert loaded.delete("/v1/accounts/7").status_code == 404


def test_unit_ids_are_unique_server_wide(loaded: httpx.Client) -> None:
    r = loaded.put(
        f"/v1/accounts/7/stacks/shop/services/web/units/{ZK1}", json={"cardinal_value": 9, "hostname": "x"}
    )
    assert r.status_code == 409 and "already exists at accounts.5.stacks.test1.services.s4" in r.text
    assert loaded.get(f"/v1/view/{ZK1}/self/hostname").text == "s4-1\n"


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("GET", "/v1/kv/5/test1/s4/nope/hostname", None, 404, "not found"),
        ("GET", "/v1/kv/5/test1//s4", None, 400, "empty path segment"),
        ("GET", "/v1/kv/5/%2E%2E/s4", None, 400, "relative segments"),
        ("GET", "/v1/kv/5/a%00b", None, 400, "control character"),
        ("GET", "/v1/kv/" + "x" * 300, None, 400, "longer than"),
        ("GET", "/v1/kv/5/?index=abc", None, 400, "index='abc'"),
        ("GET", "/v1/kv/5/?index=1&wait=soon", None, 400, "wait='soon'"),
        ("GET", "/v1/kv/5/?bogus=1", None, 400, "unknown query parameter 'bogus'"),
        ("GET", "/v1/kv/5/?format=xml", None, 400, "format='xml'"),
        ("GET", "/v1/nothing/", None, 404, "no such route"),
        ("POST", "/v1/kv/5/", b"x", 405, "POST is not allowed"),
        ("PUT", "/v1/view/x/self/hostname", b"x", 405, "PUT is not allowed"),
        ("GET", "/v1/load", None, 405, ""),
        ("PUT", "/v1/accounts/9/stacks/x", b"{}", 404, "accounts.9 does not exist"),
        ("PUT", f"/v1/kv/{ZK1_PATH}/cardinal_value", b"one", 400, "cardinal_value: expected an integer"),
        ("PUT", f"/v1/kv/{ZK1_PATH}/service_domain", b"x", 400, "service_domain: unknown field"),
        ("PUT", f"/v1/kv/{ZK1_PATH}", b"{cardinal_value: [", 400, "cannot parse body"),
    ],
)
def test_errors(
    loaded: httpx.Client, method: str, path: str, body: bytes | None, status: int, message: str
) -> None:
    r = loaded.request(method, path, content=body)
    assert r.status_code == status, r.text
    assert message in r.text
    j = loaded.request(method, path, content=body, headers={"Accept": "application/json"})
    assert j.status_code == status
    if status != 405 or j.headers.get("content-type", "").startswith("application/json"):
        assert j.json()["error"]["status"] == status
    if status == 405:
        assert r.headers["allow"] and method not in r.headers["allow"]
    assert loaded.get("/healthz").headers["x-metafs-revision"] == "1"  # nothing changed


def test_malformed_load_changes_nothing_and_names_the_field(loaded: httpx.Client) -> None:
    before = loaded.get("/v1/accounts/?format=json").json()
    doc = (
        EXAMPLE.read_text()
        .replace("cardinal_value: 3\n", "cardinal_value: three\n")
        .replace("hostname: s4-1", "hostname: s4-renamed")
    )
    r = loaded.post("/v1/load", content=doc, headers={"Accept": "application/json"})
    assert r.status_code == 400
    details = r.json()["error"]["details"]
    assert details == [
        "accounts.5.stacks.test1.services.s4.units.f58ce48e-a4d5-4c1b-905f-ee3b15ccf118.cardinal_value:"
        " expected an integer"
    ]
    bad = {
        "accounts": {
            "8": {
                "stacks": {"x": {"services": {"y": {"units": {ZK1: {"cardinal_value": 1, "hostname": "a"}}}}}}
            }
        }
    }
    r = loaded.post("/v1/load", json=bad)
    assert r.status_code == 409 and "already exists" in r.text
    r = loaded.post("/v1/load", json={"accounts": {"8": {"stackz": {}}}})
    assert r.status_code == 400 and "accounts.8.stackz: unknown field" in r.text
    r = loaded.post(
        "/v1/load",
        content=b"!!python/object/apply:os.system ['true']",
        headers={"Content-Type": "application/yaml"},
    )
    assert r.status_code == 400
    assert loaded.get("/v1/accounts/?format=json").json() == before
    assert loaded.get("/healthz").headers["x-metafs-revision"] == "1"


def test_load_is_one_revision_and_upserts(loaded: httpx.Client) -> None:
    doc = {
        "hosts": {"node-d": {"hostname": "node-d"}},
        "accounts": {
            "5": {
                "labels": {"team": "data"},
                "stacks": {
                    "test1": {
                        "labels": {"tier": "backend"},
                        "services": {
                            "s5": {
                                "service_domain": "s5.internal",
                                "units": {
                                    f"u{i}": {"cardinal_value": i, "hostname": f"s5-{i}", "host": "node-d"}
                                    for i in range(20)
                                },
                            }
                        },
                    }
                },
            }
        },
    }
    r = loaded.post("/v1/load?format=json", json=doc)
    assert r.json() == {"revision": 2, "changed": 22}
    assert loaded.get("/v1/kv/5/test1/").text == "s4/\ns5/\n"  # s4 untouched
    assert loaded.get("/v1/view/u7/self/host/hostname").text == "node-d\n"


def test_health(http: httpx.Client) -> None:
    r = http.get("/healthz")
    assert r.status_code == 200 and r.text == "ok revision 0\n"


def test_sigterm_answers_open_long_polls_and_exits_0(loaded: httpx.Client, server: ServerProcess) -> None:
    out: list[tuple[float, httpx.Response]] = []
    t = threading.Thread(target=_poll, args=(loaded, "/v1/kv/5/?index=1&wait=60s", out))
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    assert server.stop() == 0
    t.join(10)
    assert time.monotonic() - t0 < 3
    assert out and out[0][1].status_code == 200 and out[0][1].text == "test1/\n"


@pytest.mark.timeout(60)
def test_many_long_polls_on_one_key_all_get_the_new_value(
    loaded: httpx.Client, server: ServerProcess
) -> None:
    """They wake together and share one re-read (the server's memo): every one must still
    get the new value and its index, and a poll for another key must not be disturbed."""
    key = f"/v1/kv/{ZK1_PATH}/hostname"
    index = loaded.get(key).headers["X-Metafs-Index"]
    other = loaded.get(f"/v1/kv/{WEB1}/hostname")

    async def polls() -> tuple[list[httpx.Response], httpx.Response]:
        limits = httpx.Limits(max_connections=200)  # the write must not queue behind the polls
        async with httpx.AsyncClient(base_url=server.url, headers=HEADERS, timeout=30, limits=limits) as c:
            waiting = [
                asyncio.ensure_future(c.get(key, params={"index": index, "wait": "20"})) for _ in range(100)
            ]
            bystander = asyncio.ensure_future(
                c.get(
                    f"/v1/kv/{WEB1}/hostname",
                    params={"index": other.headers["X-Metafs-Index"], "wait": "1.5"},
                )
            )
            await asyncio.sleep(1.0)
            assert not any(t.done() for t in waiting)
            await c.put(key, content="memo-new")
            return list(await asyncio.gather(*waiting)), await bystander

    answers, bystander = asyncio.run(polls())
    assert [a.text for a in answers] == ["memo-new\n"] * 100
    assert {int(a.headers["X-Metafs-Index"]) for a in answers} == {int(index) + 1}
    assert (
        bystander.text == other.text
        and bystander.headers["X-Metafs-Index"] == other.headers["X-Metafs-Index"]
    )


def test_view_since_sends_only_what_changed(loaded: httpx.Client) -> None:
    """``?format=meta&since=R``: the view with every subtree unchanged since R as
    ``{"k": 1}``; merged into the view as of R it is exactly the new view."""
    from metafs.tree import from_meta, merge_meta, to_meta

    view = f"/v1/view/{ZK1}/"
    before = loaded.get(view, params={"format": "meta"})
    seen = int(before.headers["X-Metafs-Revision"])
    assert loaded.put(f"/v1/kv/5/test1/s4/{ZK2}/hostname", content="zk2-new").status_code == 200
    full = loaded.get(view, params={"format": "meta"})
    delta = loaded.get(view, params={"format": "meta", "since": str(seen)})
    assert delta.status_code == 200 and len(delta.content) < len(full.content) / 2
    peers = delta.json()["c"]["service"]["c"]["all_hosts"]["c"]
    assert peers[ZK1] == {"k": 1} and peers[ZK2] != {"k": 1}
    merged = merge_meta(from_meta(before.json()), delta.json())
    assert to_meta(merged) == full.json()
    # deletions leave no revision behind: a removed label and a removed peer still show
    seen = int(full.headers["X-Metafs-Revision"])
    assert loaded.delete(f"/v1/kv/5/test1/s4/{ZK2}/labels/io.example%2Fzone").status_code == 200
    assert loaded.delete("/v1/kv/5/test1/s4/f58ce48e-a4d5-4c1b-905f-ee3b15ccf118").status_code == 200
    full2 = loaded.get(view, params={"format": "meta"})
    delta2 = loaded.get(view, params={"format": "meta", "since": str(seen)})
    assert to_meta(merge_meta(merged, delta2.json())) == full2.json()
    assert "f58ce48e-a4d5-4c1b-905f-ee3b15ccf118" not in delta2.json()["c"]["service"]["c"]["all_hosts"]["c"]
    assert loaded.get(view, params={"format": "json", "since": "1"}).status_code == 400
    assert loaded.get(view, params={"format": "meta", "since": "x"}).status_code == 400
    assert loaded.get(f"/v1/kv/{ZK1_PATH}/hostname", params={"since": "1"}).status_code == 400


def test_view_since_shows_a_deleted_host(loaded: httpx.Client) -> None:
    """A host deleted while units still name it: the delta must not keep its fields
    (the peer's ``self/host`` was built from a record that is gone, not unchanged)."""
    from metafs.tree import from_meta, merge_meta, to_meta

    view = f"/v1/view/{ZK1}/"
    before = loaded.get(view, params={"format": "meta"})
    seen = int(before.headers["X-Metafs-Revision"])
    assert "agent_ip" in before.json()["c"]["self"]["c"]["host"]["c"]
    assert loaded.delete("/v1/hosts/node-a").status_code == 200
    full = loaded.get(view, params={"format": "meta"}).json()
    delta = loaded.get(view, params={"format": "meta", "since": str(seen)}).json()
    merged = to_meta(merge_meta(from_meta(before.json()), delta))
    assert sorted(merged["c"]["self"]["c"]["host"]["c"]) == ["name"]
    assert merged == full
