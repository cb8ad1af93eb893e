"""Consul's KV protocol on /v1/kv, tried with the clients people use: py-consul (from
PyPI) for get, recurse, keys, blocking gets woken by a write, put/delete with cas and
its errors; the prototype's curl script; a consul-template-style blocking loop over
1,000 changes. metafs's own answers stay as they were."""

from __future__ import annotations

import base64
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import consul
import consul.exceptions
import httpx
import pytest

from tests.support.servers import (
    HEADERS,
    OPERATOR_TOKEN,
    ZK1,
    ZK1_PATH,
    ServerProcess,
    example_server,
)

ZK2 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf117"
WEB1_PATH = "7/shop/web/3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with example_server(tmp_path_factory.mktemp("consul") / "metafs.db") as s:
        yield s


def client(srv: ServerProcess, token: str = OPERATOR_TOKEN) -> consul.Consul:
    return consul.Consul(host="127.0.0.1", port=srv.port, token=token)


def unit_token(srv: ServerProcess, unit: str = ZK1) -> str:
    r = httpx.post(srv.url + "/v1/tokens/", json={"kind": "unit", "subject": unit}, headers=HEADERS)
    assert r.status_code == 201, r.text
    token: str = r.json()["token"]
    return token


@pytest.mark.timeout(60)
def test_py_consul_reads(srv: ServerProcess) -> None:
    c = client(srv)
    index, entry = c.kv.get(f"{ZK1_PATH}/hostname")
    assert entry["Key"] == f"{ZK1_PATH}/hostname" and entry["Value"] == b"s4-1"  # no trailing newline
    assert entry["LockIndex"] == 0 and entry["Flags"] == 0
    assert 0 < entry["CreateIndex"] <= entry["ModifyIndex"] <= int(index)
    assert c.kv.get(f"{ZK1_PATH}/cardinal_value")[1]["Value"] == b"1"
    assert c.kv.get(f"{ZK1_PATH}/ports")[1]["Value"] == b"2181/tcp\n2888/tcp\n3888/tcp"  # a list: its lines
    index, missing = c.kv.get(f"{ZK1_PATH}/no-such-key")
    assert missing is None and int(index) >= 1  # 404 with an index: a blocking loop can wait on it
    assert c.kv.get(ZK1_PATH)[1] is None  # a directory is no key (Consul's keys are flat)

    _, labels = c.kv.get(f"{ZK1_PATH}/labels/", recurse=True)
    assert [(e["Key"], e["Value"]) for e in labels] == [(f"{ZK1_PATH}/labels/io.example%2Fzone", b"a")]
    _, entries = c.kv.get(f"{ZK1_PATH}/host", recurse=True)  # a prefix of names, as Consul matches
    keys = [e["Key"] for e in entries]
    assert f"{ZK1_PATH}/host/name" in keys and f"{ZK1_PATH}/hostname" in keys and keys == sorted(keys)
    _, one = c.kv.get(f"{ZK1_PATH}/labels/io.example%2Fzone")  # the key as recurse named it
    assert one["Value"] == b"a"

    _, units = c.kv.get("5/test1/s4/", keys=True, separator="/")
    assert units == [
        f"5/test1/s4/{ZK1}/",
        f"5/test1/s4/{ZK2}/",
        "5/test1/s4/f58ce48e-a4d5-4c1b-905f-ee3b15ccf118/",
    ]
    _, under = c.kv.get(f"{ZK1_PATH}/", keys=True)
    assert f"{ZK1_PATH}/hostname" in under and f"{ZK1_PATH}/labels/io.example%2Fzone" in under
    assert c.kv.get(f"{ZK1_PATH}/zz", keys=True)[1] is None
    for consistency in ("consistent", "stale"):
        assert (
            consul.Consul(port=srv.port, token=OPERATOR_TOKEN, consistency=consistency).kv.get(
                f"{ZK1_PATH}/hostname", dc="dc1"
            )[1]["Value"]
            == b"s4-1"
        )


@pytest.mark.timeout(60)
def test_py_consul_writes_with_cas(srv: ServerProcess) -> None:
    c = client(srv)
    key = f"5/test1/s4/{ZK2}/hostname"
    assert c.kv.put(key, "cas-1") is True
    _, entry = c.kv.get(key)
    assert entry["Value"] == b"cas-1"
    assert c.kv.put(key, "stale", cas=entry["ModifyIndex"] - 1) is False
    assert c.kv.put(key, "new", cas=0) is False  # it exists
    assert c.kv.get(key)[1]["Value"] == b"cas-1"  # neither changed it
    assert c.kv.put(key, "cas-2", cas=entry["ModifyIndex"]) is True
    assert c.kv.get(key)[1]["Value"] == b"cas-2"
    assert c.kv.put(f"5/test1/s4/{ZK2}/cardinal_value", "7") is True  # typed by the model
    assert (
        httpx.get(f"{srv.url}/v1/kv/5/test1/s4/{ZK2}/?format=json", headers=HEADERS).json()["cardinal_value"]
        == 7
    )

    label = f"5/test1/s4/{ZK2}/labels/io.example%2Fzone"
    _, entry = c.kv.get(label)
    assert entry["Value"] == b"b"
    assert c.kv.delete(label, cas=entry["ModifyIndex"] + 1000) is False
    assert c.kv.delete(label, cas=entry["ModifyIndex"]) is True and c.kv.get(label)[1] is None
    assert c.kv.delete(label) is True  # not there: done, as Consul answers

    with pytest.raises(consul.exceptions.ConsulException, match="nofield: unknown field"):
        c.kv.put(f"5/test1/s4/{ZK2}/nofield", "x")
    with pytest.raises(consul.exceptions.ConsulException, match="cardinal_value"):
        c.kv.put(f"5/test1/s4/{ZK2}/cardinal_value", "not-a-number")
    with pytest.raises(consul.exceptions.ConsulException, match="flags"):
        c.kv.put(key, "x", flags=3)
    with pytest.raises(consul.exceptions.ConsulException, match="unknown query parameter 'acquire'"):
        c.kv.put(key, "x", acquire="session-id")
    assert c.kv.get(key)[1]["Value"] == b"cas-2"  # none of them changed anything

    # a whole unit with recurse, and only with it
    r = httpx.put(
        f"{srv.url}/v1/kv/5/test1/s4/zk-extra", json={"cardinal_value": 9, "hostname": "x"}, headers=HEADERS
    )
    assert r.status_code == 200
    assert c.kv.delete("5/test1/s4/zk-extra") is True  # the key of that name: there is none
    assert c.kv.get("5/test1/s4/zk-extra/hostname")[1]["Value"] == b"x"
    assert c.kv.delete("5/test1/s4/zk-extra", recurse=True) is True
    assert c.kv.get("5/test1/s4/zk-extra/hostname")[1] is None


@pytest.mark.timeout(60)
def test_tokens_and_the_guard(srv: ServerProcess) -> None:
    url = f"{srv.url}/v1/kv/{ZK1_PATH}/hostname"
    assert httpx.get(url, headers={"X-Consul-Token": OPERATOR_TOKEN}).status_code == 200  # no Metadata-Flavor
    # a token in the URL can be put there by an SSRF: it needs the header
    assert httpx.get(url, params={"token": OPERATOR_TOKEN}).status_code == 403
    r = httpx.get(url, params={"token": OPERATOR_TOKEN, "raw": ""}, headers={"Metadata-Flavor": "metafs"})
    assert r.status_code == 200 and r.text == "s4-1"
    both = [("X-Consul-Token", OPERATOR_TOKEN), ("X-Consul-Token", OPERATOR_TOKEN)]
    assert httpx.get(url, headers=both).status_code == 400
    assert (
        httpx.get(url, headers={"X-Consul-Token": OPERATOR_TOKEN, "Forwarded": "for=1.2.3.4"}).status_code
        == 403
    )
    assert httpx.get(url, headers={"X-Consul-Token": "mfs_unit_wrong"}).status_code == 401

    mine = client(srv, unit_token(srv))
    assert mine.kv.get(f"{ZK1_PATH}/hostname")[1]["Value"] in (b"s4-1", b"woken")
    _, peers = mine.kv.get("5/test1/s4/", keys=True, separator="/")  # its own service's keys
    assert len(peers) == 3
    for denied in (f"{WEB1_PATH}/hostname", "7/", "5/other/"):  # not on the way to its service
        with pytest.raises(consul.exceptions.ACLPermissionDenied):
            mine.kv.get(denied, recurse=True)
    _, everything = mine.kv.get("", keys=True)  # above it: only what it may read
    assert everything and all(k.startswith("5/test1/s4/") for k in everything)
    with pytest.raises(consul.exceptions.ACLPermissionDenied):
        mine.kv.put(f"{ZK1_PATH}/hostname", "mine")


@pytest.mark.timeout(60)
def test_an_answer_to_one_token_is_never_reused_for_another(srv: ServerProcess) -> None:
    """Between two commits the server reuses answers by path, query and the headers that
    carry a token: a unit token's answer must not reach another account's token."""
    mine, theirs = unit_token(srv), unit_token(srv, "3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001")
    url = f"{srv.url}/v1/kv/{ZK1_PATH}/hostname"
    for _ in range(3):  # the second and third would be reused answers
        assert httpx.get(url, headers={"X-Consul-Token": mine}).status_code == 200
    for _ in range(3):
        r = httpx.get(url, headers={"X-Consul-Token": theirs})
        assert r.status_code == 403 and "X-Consul-Index" not in r.headers, r.text


@pytest.mark.timeout(60)
def test_blocking_queries(srv: ServerProcess) -> None:
    c = client(srv)
    key = f"{ZK1_PATH}/hostname"
    index, _ = c.kv.get(key)

    def write() -> None:
        time.sleep(0.5)
        c.kv.put(key, "woken")

    t = threading.Thread(target=write)
    t.start()
    t0 = time.monotonic()
    woke, entry = c.kv.get(key, index=index, wait="20s")
    took = time.monotonic() - t0
    t.join()
    assert entry["Value"] == b"woken" and int(woke) > int(index) and 0.4 < took < 15  # woken by the commit
    # a missing key's blocking get wakes when it is created
    missing = f"5/test1/s4/{ZK2}/labels/role"
    index, none = c.kv.get(missing)
    assert none is None
    threading.Timer(0.3, lambda: c.kv.put(missing, "leader")).start()
    woke, entry = c.kv.get(missing, index=index, wait="20s")
    assert entry["Value"] == b"leader"
    # Consul's rules: an index from the future (a reset) and index=0 answer at once
    head = int(c.kv.get(key)[0])
    for index in (head + 1000, 0):
        t0 = time.monotonic()
        r = httpx.get(
            f"{srv.url}/v1/kv/{key}",
            params={"index": index, "wait": "10s"},
            headers={"X-Consul-Token": OPERATOR_TOKEN},
        )
        assert r.status_code == 200 and time.monotonic() - t0 < 5
    t0 = time.monotonic()
    same, _ = c.kv.get(key, index=head, wait="1s")  # nothing changes: back after the wait
    assert same == str(head) and 0.9 < time.monotonic() - t0 < 5


@pytest.mark.timeout(120)
def test_a_consul_template_loop_sees_every_change_once(srv: ServerProcess) -> None:
    """Blocking queries with X-Consul-Index over 1,000 changes written one at a time: each
    value seen, in order, once; no answer without a change (no spinning)."""
    key = f"5/test1/s4/{ZK2}/hostname"
    c = client(srv)
    index, _ = c.kv.get(key)
    seen: list[bytes] = []
    answers = [0]
    stop = threading.Event()

    def loop() -> None:
        last = index
        while not stop.is_set():
            new, entry = c.kv.get(key, index=last, wait="10s")
            answers[0] += 1
            if new != last:
                seen.append(entry["Value"])
            last = new

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        for i in range(1000):
            value = f"v{i}".encode()
            assert c.kv.put(key, value) is True
            deadline = time.monotonic() + 10
            while not seen or seen[-1] != value:
                assert time.monotonic() < deadline, f"change {i} never reached the loop"
                time.sleep(0.001)
    finally:
        stop.set()
        c.kv.put(key, "end")
        t.join(15)
    assert seen[:1000] == [f"v{i}".encode() for i in range(1000)]
    assert answers[0] <= 1001 + 1  # one answer per change (and the last one that stops it)


PROTOTYPE = r"""
get() { curl -sf -H "X-Consul-Token: $TOKEN" "${METADATA_CONNECTION_URL}$1?raw"; }
MYID=$(get "$DEPLOYMENT_UNIT_ID/cardinal_value") || exit 1
echo "myid=$MYID"
for peer in $(get "$DEPLOYMENT_UNIT_ID/all_hosts"); do
  echo "server.$(get "$peer/cardinal_value")=$(get "$peer/hostname"):2888:3888"
done
"""


@pytest.mark.timeout(60)
def test_the_prototype_curl_script(srv: ServerProcess, tmp_path: Path) -> None:
    """How the original design's scripts read: METADATA_CONNECTION_URL, a unit id, ?raw."""
    script = tmp_path / "start.sh"
    script.write_text(PROTOTYPE)
    env = {
        "METADATA_CONNECTION_URL": f"{srv.url}/v1/kv/",
        "DEPLOYMENT_UNIT_ID": ZK1_PATH,
        "TOKEN": unit_token(srv),
    }
    r = subprocess.run(
        ["sh", str(script)], capture_output=True, text=True, env={**env, "PATH": "/usr/bin:/bin"}, timeout=30
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "myid=1" and len(lines) == 4 and lines[1].startswith("server.1=")


@pytest.mark.timeout(30)
def test_metafs_answers_are_unchanged(srv: ServerProcess) -> None:
    h = httpx.get(
        f"{srv.url}/v1/kv/5/test1/s4/f58ce48e-a4d5-4c1b-905f-ee3b15ccf118/hostname", headers=HEADERS
    )
    assert h.text == "s4-3\n" and "X-Consul-Index" not in h.headers and h.headers["X-Metafs-Index"]
    j = httpx.get(f"{srv.url}/v1/kv/5/test1/s4/", params={"format": "json"}, headers=HEADERS)
    assert isinstance(j.json(), dict) and len(j.json()) == 3
    r = httpx.get(f"{srv.url}/v1/kv/5/test1/s4/", params={"recurse": "", "format": "json"}, headers=HEADERS)
    assert r.status_code == 400 and "format" in r.text  # the two protocols do not mix
    consul_shape = httpx.get(
        f"{srv.url}/v1/kv/{ZK1_PATH}/cardinal_value", headers={"X-Consul-Token": OPERATOR_TOKEN}
    )
    assert base64.b64decode(consul_shape.json()[0]["Value"]) == b"1"
    bad = httpx.get(f"{srv.url}/v1/kv/{ZK1_PATH}/", params={"recurse": "", "nope": "1"}, headers=HEADERS)
    assert bad.status_code == 400 and "unknown query parameter 'nope'" in bad.text
