"""History compaction (``--history-retention``): tombstones older than the retention go,
a delta or a long poll from below the compacted revision is answered 410 (never as if
nothing had been deleted), a mount paused across a compaction comes back right, and the
store stops growing under churn."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from tests.support.mounts import MakeMount, wait_for
from tests.support.servers import EXAMPLE, HEADERS, OPERATOR_TOKEN, ZK1, ZK1_PATH, ServerProcess, metric

pytestmark = pytest.mark.timeout(120)

ZK2 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf117"
ZK2_PATH = f"5/test1/s4/{ZK2}"
RETENTION = "2s"


@pytest.fixture
def short(tmp_path: Path) -> ServerProcess:
    srv = ServerProcess(tmp_path / "metafs.db")
    srv.start("--history-retention", RETENTION)
    try:
        r = httpx.post(
            f"{srv.url}/v1/load",
            content=EXAMPLE.read_bytes(),
            headers={**HEADERS, "Content-Type": "application/yaml"},
        )
        assert r.status_code == 200, r.text
        yield srv
    finally:
        srv.stop()


def compacted_past(srv: ServerProcess, rev: int) -> float:
    return wait_for(lambda: metric(srv, "metafs_store_compacted_revision") >= rev, timeout=20)


def test_a_delta_or_poll_from_below_the_compacted_revision_is_expired(short: ServerProcess) -> None:
    url = short.url
    before = int(httpx.get(f"{url}/v1/view/{ZK1}/", headers=HEADERS).headers["x-metafs-revision"])
    r = httpx.delete(f"{url}/v1/kv/{ZK2_PATH}", headers=HEADERS)
    assert r.status_code == 200
    gone = int(r.headers["x-metafs-revision"])
    # within the retention, a delta says the peer went away
    delta = {"format": "meta", "peers": "changes", "since": before}
    r = httpx.get(f"{url}/v1/view/{ZK1}/", params=delta, headers=HEADERS)
    assert r.status_code == 200 and f'"{ZK2}"' in r.text, r.text  # listed as deleted
    compacted_past(short, gone)
    assert metric(short, "metafs_store_compacted_tombstones_total") >= 1
    assert metric(short, 'metafs_store_compactions_total{result="ok"}') >= 1
    for params in ({"format": "meta", "since": before}, {"index": before, "wait": "10s"}):
        t0 = time.monotonic()
        r = httpx.get(f"{url}/v1/view/{ZK1}/", params=params, headers=HEADERS, timeout=15)
        assert r.status_code == 410 and time.monotonic() - t0 < 1, (params, r.text)
        assert "older than the history this store keeps" in r.text
    r = httpx.get(f"{url}/v1/watch", params={"units": ZK1, "index": before, "wait": "10s"}, headers=HEADERS)
    assert r.status_code == 410
    # whole, it is right: the peer is gone
    r = httpx.get(f"{url}/v1/view/{ZK1}/service/all_hosts/", headers=HEADERS)
    assert r.status_code == 200 and ZK2 not in r.text
    # Consul's blocking query from below it: answered at once, whole, with an index that
    # blocks next time (not below the compacted revision)
    consul = {"X-Consul-Token": OPERATOR_TOKEN}
    t0 = time.monotonic()
    r = httpx.get(f"{url}/v1/kv/{ZK1_PATH}/hostname", params={"index": before, "wait": "10s"}, headers=consul)
    assert r.status_code == 200 and time.monotonic() - t0 < 1
    assert int(r.headers["x-consul-index"]) >= gone
    # a unit token's revision is never below the compacted revision: polling on from it
    # is never expired (it would refetch forever)
    unit = httpx.post(f"{url}/v1/tokens/", json={"kind": "unit", "subject": ZK1}, headers=HEADERS).json()[
        "token"
    ]
    mine = {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {unit}"}
    r = httpx.get(f"{url}/v1/view/{ZK1}/self/hostname", headers=mine)
    seen = int(r.headers["x-metafs-revision"])
    assert seen >= gone
    t0 = time.monotonic()
    r = httpx.get(f"{url}/v1/view/{ZK1}/self/hostname", params={"index": seen, "wait": "1s"}, headers=mine)
    assert r.status_code == 200 and time.monotonic() - t0 >= 0.9


def test_a_mount_paused_across_a_compaction_comes_back_right(
    short: ServerProcess, make_mount: MakeMount
) -> None:
    m = make_mount(short.url)
    me, peer = m.path / ZK1, m.path / ZK1 / "service" / "all_hosts" / ZK2
    assert (me / "self" / "hostname").read_text() == "s4-1\n"
    assert (peer / "hostname").read_text() == "s4-2\n"
    (pid,) = m.pids
    os.kill(pid, signal.SIGSTOP)
    try:
        r = httpx.delete(f"{short.url}/v1/kv/{ZK2_PATH}", headers=HEADERS)
        assert r.status_code == 200
        gone = int(r.headers["x-metafs-revision"])
        r = httpx.put(f"{short.url}/v1/kv/{ZK1_PATH}/hostname", content="after-pause", headers=HEADERS)
        assert r.status_code == 200
        compacted_past(short, gone)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_for(lambda: (me / "self" / "hostname").read_text() == "after-pause\n", timeout=10)
    wait_for(lambda: ZK2 not in os.listdir(me / "service" / "all_hosts"), timeout=10)
    assert not (m.path / ZK2).exists()
    assert "older than the history this store keeps" in m.log.read_text()


def pages_in_use(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        (pages,) = c.execute("PRAGMA page_count").fetchone()
        (free,) = c.execute("PRAGMA freelist_count").fetchone()
    return int(pages - free)


def test_the_store_stops_growing_under_churn(tmp_path: Path) -> None:
    """Rounds of 200 new units loaded and deleted with a 1 s retention: the pages in use
    after round 12 are what they were after round 4 (5 and 5 here; with a retention of a
    day, 68 and 184)."""
    srv = ServerProcess(tmp_path / "metafs.db").start("--history-retention", "1s")
    try:
        sizes = []
        for round_ in range(12):
            units = {f"churn-{round_}-{i}": {"cardinal_value": i, "hostname": f"h{i}"} for i in range(200)}
            doc = {"accounts": {"9": {"stacks": {"s": {"services": {"web": {"units": units}}}}}}}
            assert httpx.post(f"{srv.url}/v1/load", json=doc, headers=HEADERS, timeout=30).status_code == 200
            assert httpx.delete(f"{srv.url}/v1/accounts/9", headers=HEADERS, timeout=30).status_code == 200
            time.sleep(1.2)  # past the retention, and a compaction run (every 1 s)
            if round_ in (3, 11):
                wait_for(lambda: metric(srv, "metafs_store_tombstones") == 0, timeout=10)
                sizes.append(pages_in_use(srv.db))
        assert sizes[1] <= sizes[0] * 1.1 + 2, sizes
    finally:
        srv.stop()


def test_an_answer_kept_from_before_a_compaction_is_not_sent_after_it(short: ServerProcess) -> None:
    """Answers are reused until the next commit, and a compaction is no commit: a unit
    token's answer kept from before it would carry a revision below the compacted one,
    and a client polling on from it would be expired again and again."""
    url = short.url
    unit = httpx.post(f"{url}/v1/tokens/", json={"kind": "unit", "subject": ZK1}, headers=HEADERS).json()[
        "token"
    ]
    mine = {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {unit}"}
    # a delete in another account: the unit's answer depends on nothing it touched
    r = httpx.delete(f"{url}/v1/kv/7/shop/web/3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001", headers=HEADERS)
    assert r.status_code == 200, r.text
    gone = int(r.headers["x-metafs-revision"])
    first = httpx.get(f"{url}/v1/view/{ZK1}/self/hostname", headers=mine)
    assert httpx.get(f"{url}/v1/view/{ZK1}/self/hostname", headers=mine).headers == first.headers
    assert int(first.headers["x-metafs-revision"]) < gone  # this unit's own last change
    compacted_past(short, gone)
    after = httpx.get(f"{url}/v1/view/{ZK1}/self/hostname", headers=mine)
    seen = int(after.headers["x-metafs-revision"])
    assert seen >= gone, (first.headers, after.headers)
    r = httpx.get(f"{url}/v1/view/{ZK1}/self/hostname", params={"index": seen, "wait": "500ms"}, headers=mine)
    assert r.status_code == 200


def test_one_accounts_reader_loses_a_unit_deleted_and_compacted_away(short: ServerProcess) -> None:
    """An account's units are kept for its readers while the account's records are
    unchanged. A unit deleted, its tombstone compacted away, leaves the account's last
    change where it was (the three units were loaded together): the kept scope must not
    be used then, or the unit id made again in another account is readable by this
    account's reader."""
    url = short.url
    tok = httpx.post(f"{url}/v1/tokens/", json={"kind": "reader", "subject": "5"}, headers=HEADERS)
    reader = {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {tok.json()['token']}"}
    assert httpx.get(f"{url}/v1/view/{ZK2}/self/hostname", headers=reader).status_code == 200
    r = httpx.delete(f"{url}/v1/kv/{ZK2_PATH}", headers=HEADERS)
    assert r.status_code == 200, r.text
    compacted_past(short, int(r.headers["x-metafs-revision"]))
    moved = {"cardinal_value": 1, "hostname": "elsewhere"}
    r = httpx.put(f"{url}/v1/accounts/7/stacks/shop/services/api/units/{ZK2}", json=moved, headers=HEADERS)
    assert r.status_code in (200, 201), r.text
    seen = httpx.get(f"{url}/v1/view/{ZK2}/self/hostname", headers=reader)
    assert seen.status_code == 403, seen.text
