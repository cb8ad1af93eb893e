"""A Consul blocking query's wake-up (py-consul, ``?index=`` with ``X-Consul-Index``)
beside metafs's own long poll on the same key, in turns: the time from sending a write
to the blocked reader's answer (which often comes before the write's own answer)."""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import consul
import httpx

from tests.support.servers import HEADERS, OPERATOR_TOKEN, ZK1_PATH, ServerProcess

from ..harness import QUICK, Report, pct

KEY = f"{ZK1_PATH}/hostname"


def _wake(
    block: Callable[[int], None], index: Callable[[], int], write: Callable[[str], None], value: str
) -> float:
    """ms from sending a write to the answer of a query blocked at the current index."""
    done: list[float] = []
    at = index()
    t = threading.Thread(target=lambda: (block(at), done.append(time.perf_counter())))
    t.start()
    time.sleep(0.05)  # parked
    sent = time.perf_counter()
    write(value)
    t.join(30)
    return (done[0] - sent) * 1e3


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    print("a Consul blocking query's wake-up beside metafs's long poll (ms)")
    c = consul.Consul(host="127.0.0.1", port=srv.port, token=OPERATOR_TOKEN)
    http = httpx.Client(base_url=srv.url, headers=HEADERS, timeout=60)

    def write(value: str) -> None:
        http.put(f"/v1/kv/{KEY}", content=value).raise_for_status()

    def consul_index() -> int:
        return int(c.kv.get(KEY)[0])

    def consul_block(at: int) -> None:
        c.kv.get(KEY, index=at, wait="30s")

    def metafs_index() -> int:
        return int(http.get(f"/v1/kv/{KEY}").headers["X-Metafs-Index"])

    def metafs_block(at: int) -> None:
        http.get(f"/v1/kv/{KEY}", params={"index": at, "wait": "30s"})

    ours, theirs = [], []
    for i in range(10 if QUICK else 40):
        theirs.append(_wake(consul_block, consul_index, write, f"c{i}"))
        ours.append(_wake(metafs_block, metafs_index, write, f"m{i}"))
    write("s4-1")
    http.close()
    base = statistics.median(ours)
    for which, figure, goal in (
        ("p50", statistics.median, "<= 1.2x long poll"),
        ("p99", lambda v: pct(v, 99), ""),
    ):
        report.record(
            "consul",
            f"write -> blocking query answered, {which}",
            (figure(theirs), (min(theirs), max(theirs))),
            "ms",
            ("metafs long poll", figure(ours) if which == "p99" else base),
            goal=goal,
        )
