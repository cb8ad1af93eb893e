"""The first read of a fresh mount beside a direct HTTP GET taken after the same pause."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from tests.support.servers import HEADERS, ServerProcess

from ..fixtures import mount
from ..harness import QUICK, Report, spread
from ..workloads import read_file


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    """The first read through a fresh mount, and a direct GET of the same key, each after
    the same pause, in turns: both then start with idle processes (a GET right after
    another costs a third of one after a pause on this VM; the back-to-back figure is
    shown too)."""
    print("cold reads (ms)")
    import requests

    n = 5 if QUICK else 15
    pause = 0.25
    first, direct = [], []
    zk = ["f58ce48e-a4d5-4c1b-905f-ee3b15ccf115", "f58ce48e-a4d5-4c1b-905f-ee3b15ccf117"]
    url = f"{srv.url}/v1/kv/5/test1/s4/{zk[0]}/hostname"

    def get() -> float:
        t0 = time.perf_counter()
        assert requests.get(url, headers=HEADERS, timeout=5).text == "s4-1\n"
        return (time.perf_counter() - t0) * 1e3

    for i in range(n):  # the example's ZooKeeper units: a service of 3
        with mount(srv, tmp / f"cold{i}", f"5/test1/s4/{zk[i % 2]}") as m:
            time.sleep(pause)
            t0 = time.perf_counter()
            data = read_file(m / "self" / "hostname")()
            first.append((time.perf_counter() - t0) * 1e3)
            assert data == f"s4-{i % 2 + 1}\n".encode()
            time.sleep(pause)
            direct.append(get())
    hot = [get() for _ in range(n * 3)]
    base = statistics.median(direct)
    report.record(
        "cold read",
        "first open+read+close of self/hostname after mount",
        spread(first),
        "ms",
        ("HTTP GET", base),
        goal="<= 2x HTTP GET",
    )
    report.record(
        "cold read", "direct HTTP GET (requests, new connection)", (base, (min(direct), max(direct))), "ms"
    )
    report.record(
        "cold read",
        "the same GET, back to back",
        spread(hot),
        "ms",
    )
