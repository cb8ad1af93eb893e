"""The store over time: a backup and a restore of the 100,000-unit store beside loading the
same document, a reader's worst wait beside the compaction of a big delete's tombstones
beside the same reader without it, and the store's pages in use over 100 churn rounds."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.support.servers import HEADERS, OPERATOR_TOKEN, ROOT

from ..fixtures import server
from ..harness import QUICK, Report, single
from .scale import scale_document


def pages_in_use(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        (pages,) = c.execute("PRAGMA page_count").fetchone()
        (free,) = c.execute("PRAGMA freelist_count").fetchone()
    return int(pages - free)


def worst_read(url: str, seconds: float) -> float:
    """A reader's slowest GET (ms) of a small view over ``seconds``, one every 5 ms."""
    worst = 0.0
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            c.get("/v1/view/u000001/self/hostname").raise_for_status()
            worst = max(worst, (time.perf_counter() - t0) * 1e3)
            time.sleep(0.005)
    return worst


def metric(url: str, name: str) -> float:
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def timed_cli(*args: str) -> float:
    """Seconds one `metafs` command took (its Python start included); it must succeed."""
    t0 = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-m", "metafs.cli", *args],
        env={"METAFS_TOKEN": OPERATOR_TOKEN, "PATH": "/usr/bin:/bin"},
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    return time.perf_counter() - t0


def run(report: Report, tmp: Path) -> None:
    services = 100 if QUICK else 1000
    doc = scale_document(services=services)
    body = json.dumps(doc).encode()
    print(f"history: backup, restore and compaction of {services * 100} units")
    # reads go to the store (no answer kept): what a compaction could hold up
    with server(
        tmp, "--max-body", str(len(body) + 1024), "--answer-cache", "0", "--log-level", "error"
    ) as srv:
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=600) as c:
            t0 = time.perf_counter()
            c.post("/v1/load", content=body, headers={"Content-Type": "application/json"}).raise_for_status()
            load_s = time.perf_counter() - t0
        file = tmp / "history-backup.jsonl"
        backup_s = timed_cli("backup", str(file), "--server", srv.url)
        restore_s = timed_cli("restore", str(file), "--store", f"sqlite://{tmp / 'restored.db'}")
        quiet = worst_read(srv.url, 3.0)
        # every account but one deleted: ~3 tombstones a unit, compacted once the server
        # restarts with a retention of 1 s (its first run, 1 s after the start)
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=600) as c:
            for a in range(1, 10):
                c.delete(f"/v1/accounts/a{a}").raise_for_status()
        srv.stop()
        srv.start("--answer-cache", "0", "--history-retention", "1s", "--log-level", "error")
        result: list[float] = []
        reader = threading.Thread(target=lambda: result.append(worst_read(srv.url, 6.0)))
        reader.start()
        reader.join()
        removed = metric(srv.url, "metafs_store_compacted_tombstones_total")
        took = metric(srv.url, "metafs_store_compaction_duration_seconds_sum")
    mb = len(body) / 2**20
    report.record("history", f"load {services * 100} units ({mb:.0f} MB)", single(load_s), "s")
    report.record(
        "history",
        "metafs backup of that store",
        single(backup_s),
        "s",
        ("load", load_s),
        "<= 1x load",
    )
    report.record(
        "history",
        "metafs restore of it into a new SQLite file",
        single(restore_s),
        "s",
        ("load", load_s),
        "<= 1.5x load",
    )
    report.record(
        "history",
        f"a reader's worst GET beside compacting {removed:.0f} tombstones ({took:.1f} s)",
        (result[0], (result[0], result[0])),
        "ms",
        ("no compaction", quiet),
        "<= 50 ms",
    )
    churn(report, tmp)


def churn(report: Report, tmp: Path) -> None:
    """Rounds of 300 new units loaded and deleted, with a 1 s retention and with a day's:
    the pages in use after round 100 beside after round 10."""
    rounds = 30 if QUICK else 100
    for retention in ("1s", "1d"):
        with server(tmp, "--history-retention", retention, "--log-level", "error") as srv:
            sizes = {}
            with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=60) as c:
                for n in range(1, rounds + 1):
                    units = {f"r{n}-{i}": {"cardinal_value": i, "hostname": f"h{i}"} for i in range(300)}
                    c.post(
                        "/v1/load",
                        json={"accounts": {"c": {"stacks": {"s": {"services": {"w": {"units": units}}}}}}},
                    )
                    c.delete("/v1/accounts/c").raise_for_status()
                    if n in (10, rounds):
                        time.sleep(2.5)  # past the retention and the next compaction run
                        sizes[n] = pages_in_use(srv.db)
            first, last = sizes[10], sizes[rounds]
            report.record(
                "history",
                f"pages in use after {rounds} churn rounds, retention {retention}",
                single(last),
                "pages",
                ("after 10", first),
                "flat after the retention" if retention == "1s" else "",
            )
