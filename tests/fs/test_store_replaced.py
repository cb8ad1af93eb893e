"""A store that goes back in time under running clients: an older copy of the SQLite file
put back, or the store wiped and loaded again. The server answers with a new store
identity or a revision below what the client asked from; running mounts and
``metafs wait`` notice, refetch what they hold and show the next change."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.mounts import MakeMount, wait_for
from tests.support.servers import EXAMPLE, HEADERS, OPERATOR_TOKEN, ROOT, ZK1, ZK1_PATH, ServerProcess

pytestmark = pytest.mark.timeout(120)

#: the check allows this long from the server answering again to the change in the files
CATCH_UP = 3.0
STORE_HEADER = "x-metafs-store"


def put(server: ServerProcess, path: str, value: str) -> int:
    r = httpx.put(f"{server.url}/v1/kv/{path}", content=value, headers=HEADERS)
    assert r.status_code == 200, r.text
    return int(r.headers["x-metafs-revision"])


def load(server: ServerProcess) -> None:
    r = httpx.post(
        f"{server.url}/v1/load",
        content=EXAMPLE.read_bytes(),
        headers={**HEADERS, "Content-Type": "application/yaml"},
    )
    assert r.status_code == 200, r.text


def files_of(db: Path) -> list[Path]:
    return [db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")]


def copy_store(db: Path, to: Path) -> None:
    for f in files_of(db):
        if f.exists():
            shutil.copy2(f, to / f.name)


def put_back(db: Path, saved: Path) -> None:
    """An operator's restore by hand: the live files removed, the saved ones copied in."""
    for f in files_of(db):
        f.unlink(missing_ok=True)
    for f in files_of(db):
        if (saved / f.name).exists():
            shutil.copy2(saved / f.name, f)


def wipe(db: Path) -> None:
    for f in files_of(db):
        f.unlink(missing_ok=True)


def identity(server: ServerProcess) -> str:
    r = httpx.get(f"{server.url}/v1/units/", headers=HEADERS)
    assert r.status_code == 200, r.text
    return r.headers[STORE_HEADER]


def advance(server: ServerProcess, rounds: int) -> int:
    rev = 0
    for i in range(rounds):
        rev = put(server, f"{ZK1_PATH}/labels/round", str(i))
    return rev


@pytest.mark.parametrize("how", ["older-file", "wiped"])
@pytest.mark.parametrize("mode", ["host", "unit"])
def test_a_running_mount_catches_up_when_the_store_goes_back(
    server: ServerProcess, make_mount: MakeMount, tmp_path: Path, how: str, mode: str
) -> None:
    load(server)
    saved = tmp_path / "saved"
    saved.mkdir()
    server.stop()
    copy_store(server.db, saved)  # last night's copy, at revision ~2
    server.start()
    before = identity(server)
    reached = advance(server, 30)
    m = make_mount(server.url, ZK1 if mode == "unit" else None)
    hostname = m.path / ("self" if mode == "unit" else f"{ZK1}/self") / "hostname"
    label = hostname.parent / "labels" / "round"
    assert hostname.read_text() == "s4-1\n"
    assert label.read_text() == "29\n"
    time.sleep(0.3)  # the mount's long poll is parked at the store's revision (~32)

    server.stop()
    if how == "older-file":
        put_back(server.db, saved)
    else:
        wipe(server.db)
    server.start()
    if how == "wiped":
        load(server)
        assert identity(server) != before, "a new store must have a new identity"
    else:
        assert identity(server) == before  # the same store, gone back in time
    answering = time.monotonic()
    rev = put(server, f"{ZK1_PATH}/hostname", "after-restore")
    assert rev < reached, "the store did not go back: the test shows nothing"
    took = wait_for(lambda: hostname.read_text() == "after-restore\n", timeout=15)
    assert time.monotonic() - answering < CATCH_UP, f"the change showed {took:.2f}s after the put"
    # what the mount held is refetched whole: the label the old store had is gone (never
    # a false "not set" for what the new store holds: hostname read right above)
    wait_for(lambda: not label.exists(), timeout=CATCH_UP)
    log = m.log.read_text()
    assert log.count("refetching the") == 1, log
    said = "store replaced" if how == "wiped" else "is not in this store's history"
    assert said in log, log


def test_metafs_wait_catches_up_when_the_store_goes_back(server: ServerProcess, tmp_path: Path) -> None:
    load(server)
    saved = tmp_path / "saved"
    saved.mkdir()
    server.stop()
    copy_store(server.db, saved)
    server.start()
    advance(server, 20)
    waiter = subprocess.Popen(
        [sys.executable, "-m", "metafs.cli", "wait", f"{ZK1_PATH}/hostname", "--timeout", "60"],
        cwd=ROOT,
        env={"METAFS_TOKEN": OPERATOR_TOKEN, "METADATA_CONNECTION_URL": server.url, "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.0)  # parked on its long poll
        server.stop()
        put_back(server.db, saved)
        server.start()
        put(server, f"{ZK1_PATH}/hostname", "after-restore")
        out, err = waiter.communicate(timeout=15)
        assert waiter.returncode == 0, err
        assert out == "after-restore\n"
    finally:
        waiter.kill()
        waiter.wait()


def test_an_index_or_since_above_the_store_revision_is_answered_at_once_as_expired(
    server: ServerProcess,
) -> None:
    load(server)
    rev = int(httpx.get(f"{server.url}/v1/units/", headers=HEADERS).headers["x-metafs-revision"])
    store = identity(server)
    asks = [
        (f"/v1/view/{ZK1}/self/hostname", {"index": rev + 50, "wait": "10s"}),
        (f"/v1/view/{ZK1}/", {"format": "meta", "since": rev + 50}),
        (f"/v1/view/{ZK1}/", {"format": "meta", "peers": "changes", "since": rev + 9, "index": rev + 9}),
        ("/v1/watch", {"units": ZK1, "index": rev + 1, "wait": "10s"}),
    ]
    for path, params in asks:
        t0 = time.monotonic()
        r = httpx.get(f"{server.url}{path}", params=params, headers=HEADERS, timeout=15)
        assert time.monotonic() - t0 < 1.0, (path, params)
        assert r.status_code == 410, (path, params, r.text)
        assert f"revision {max(int(v) for k, v in params.items() if k in ('index', 'since'))}" in r.text
        assert r.headers[STORE_HEADER] == store
    # at the store's revision a poll waits, as before
    t0 = time.monotonic()
    r = httpx.get(
        f"{server.url}/v1/view/{ZK1}/self/hostname",
        params={"index": rev, "wait": "1s"},
        headers=HEADERS,
        timeout=15,
    )
    assert r.status_code == 200 and r.text == "s4-1\n"
    assert time.monotonic() - t0 >= 0.9
    # Consul's blocking queries keep Consul's rule: an index past the store's is answered
    # at once, with the data (its clients reset on an index that went back)
    r = httpx.get(
        f"{server.url}/v1/kv/{ZK1_PATH}/hostname",
        params={"index": rev + 50, "wait": "10s", "raw": ""},
        headers={"X-Consul-Token": OPERATOR_TOKEN},
        timeout=15,
    )
    assert r.status_code == 200 and r.text == "s4-1"
    assert int(r.headers["x-consul-index"]) <= rev
