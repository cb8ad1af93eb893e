"""``metafs backup`` while writers go on, and ``metafs restore`` into SQLite and into etcd
(the way from one machine to several servers): every pair written together is intact,
tokens keep working, the copies serve the same views; a cut, changed or foreign file and
a store that holds data are refused, writing nothing."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import httpx
import pytest

from tests.support.etcd_cluster import EtcdCluster
from tests.support.servers import HEADERS, ZK1, ServerProcess, cli

pytestmark = pytest.mark.timeout(180)
WRITERS = 4


def pair_doc(writer: int, n: int) -> dict[str, object]:
    """Two units written together, with the same hostname: one load, one transaction."""
    units = {
        f"pair-{writer}-{side}": {"cardinal_value": i, "hostname": f"h{n}"} for i, side in enumerate("ab")
    }
    return {"accounts": {f"w{writer}": {"stacks": {"s": {"services": {"pair": {"units": units}}}}}}}


def pairs_of(url: str) -> dict[int, tuple[str, str]]:
    seen = {}
    for w in range(WRITERS):
        got = [
            httpx.get(f"{url}/v1/kv/w{w}/s/pair/pair-{w}-{side}/hostname", headers=HEADERS).text
            for side in "ab"
        ]
        seen[w] = (got[0], got[1])
    return seen


def test_backup_under_writers_restores_into_sqlite_and_etcd(
    loaded: httpx.Client, server: ServerProcess, tmp_path: Path, etcd: EtcdCluster
) -> None:
    unit_token = httpx.post(
        f"{server.url}/v1/tokens/", json={"kind": "unit", "subject": ZK1}, headers=HEADERS
    ).json()["token"]
    stop, written = threading.Event(), [0] * WRITERS

    def writer(w: int) -> None:
        with httpx.Client(base_url=server.url, headers=HEADERS, timeout=30) as c:
            while not stop.is_set():
                assert c.post("/v1/load", json=pair_doc(w, written[w])).status_code == 200
                written[w] += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    try:
        while min(written) < 5:
            stop.wait(0.05)
        file = tmp_path / "backup.jsonl"
        r = cli("backup", str(file), "--server", server.url)
        during = list(written)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert r.returncode == 0, r.stderr
    # the example's 9 units and 4 writers' pairs; the unit token
    assert r.stdout.startswith("backup of store ") and "records (17 units, 1 tokens)" in r.stdout, r.stdout
    lines = file.read_bytes().splitlines()
    head = json.loads(lines[0])
    assert head["metafs_backup"] == 1 and head["store_format"] == 1 and head["revision"] > 5
    assert min(during) >= 5

    restored = {}
    for name, url in (("sqlite", f"sqlite://{tmp_path / 'restored.db'}"), ("etcd", etcd.url())):
        r = cli("restore", str(file), "--store", url)
        assert r.returncode == 0, r.stderr
        assert "a new store" in r.stdout
        srv = ServerProcess(tmp_path / f"{name}.db", store=url).start()
        try:
            pairs = pairs_of(srv.url)
            assert all(a == b and a.startswith("h") for a, b in pairs.values()), pairs
            mine = {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {unit_token}"}
            r = httpx.get(f"{srv.url}/v1/view/{ZK1}/self/hostname", headers=mine)
            assert r.status_code == 200 and r.text == "s4-1\n"  # a token made before the backup
            assert r.headers["x-metafs-store"] != head["identity"]  # a new store to every client
            view = httpx.get(f"{srv.url}/v1/view/{ZK1}/", params={"format": "json"}, headers=HEADERS)
            same = {k: v for k, v in view.json().items() if k != "revision"}  # each store counts its own
            restored[name] = (pairs, same)
        finally:
            srv.stop()
    diff = {
        k: (restored["sqlite"][1].get(k), restored["etcd"][1].get(k))
        for k in restored["sqlite"][1]
        if restored["sqlite"][1].get(k) != restored["etcd"][1].get(k)
    }
    assert restored["sqlite"][0] == restored["etcd"][0] and not diff, json.dumps(diff)[:3000]
    # a store that holds data is refused, naming what is there
    r = cli("restore", str(file), "--store", f"sqlite://{tmp_path / 'restored.db'}")
    assert r.returncode == 1 and "already holds records (the first: a/5/)" in r.stderr


def test_a_cut_changed_or_foreign_file_is_refused_and_nothing_written(
    loaded: httpx.Client, server: ServerProcess, tmp_path: Path
) -> None:
    good = tmp_path / "good.jsonl"
    assert cli("backup", str(good), "--server", server.url).returncode == 0
    data = good.read_bytes()
    cases = {
        "cut": (data[: len(data) // 2], "cut short"),
        "no end": (data[: data.rindex(b'{"end"')], "no end line"),
        "changed": (data.replace(b"s4-1", b"s4-X", 1), "checksum does not match"),
        "not json": (data.replace(b'{"k"', b'{"k" oops', 1), "line 2 (byte "),
        "foreign": (b'{"hello": 1}\n', "not a metafs backup"),
    }
    for name, (content, said) in cases.items():
        bad = tmp_path / f"{name}.jsonl"
        bad.write_bytes(content)
        db = tmp_path / f"{name}.db"
        r = cli("restore", str(bad), "--store", f"sqlite://{db}")
        assert r.returncode == 1 and said in r.stderr and "nothing was written" in r.stderr, (name, r.stderr)
        assert not db.exists(), name
    # a backup needs an operator token
    unit = httpx.post(
        f"{server.url}/v1/tokens/", json={"kind": "unit", "subject": ZK1}, headers=HEADERS
    ).json()
    r = cli("backup", str(tmp_path / "x.jsonl"), "--server", server.url, env={"METAFS_TOKEN": unit["token"]})
    assert r.returncode == 1 and "needs an operator token" in r.stderr
    assert not (tmp_path / "x.jsonl").exists() and not list(tmp_path.glob(".metafs-backup-*"))
