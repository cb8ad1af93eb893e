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
#: how to block at an index, and how to read the current one
Blocking = tuple[Callable[[int], None], Callable[[], int]]


def _wake(query: Blocking, write: Callable[[str], None], value: str) -> float:
    """ms from sending a write to the answer of a query blocked at the current index."""
    block, index = query
    done: list[float] = []
    at = index()
    t = threading.Thread(target=lambda: (block(at), done.append(time.perf_counter())))
    t.start()
    time.sleep(0.05)  # parked
    sent = time.perf_counter()
    write(value)
    t.join(30)
    return (done[0] - sent) * 1e3


def metafs_poll(http: httpx.Client, key: str) -> Blocking:
    """metafs's own long poll on ``key``."""

    def block(at: int) -> None:
        http.get(f"/v1/kv/{key}", params={"index": at, "wait": "30s"})

    def index() -> int:
        return int(http.get(f"/v1/kv/{key}").headers["X-Metafs-Index"])

    return block, index


def race(report: Report, section: str, what: str, theirs: Blocking, http: httpx.Client, key: str) -> None:
    """``theirs`` woken by writes of ``key`` beside metafs's long poll on it, in turns;
    recorded as p50 (goal 1.2x) and p99. The key gets its example value back after."""

    def write(value: str) -> None:
        http.put(f"/v1/kv/{key}", content=value).raise_for_status()

    ours = metafs_poll(http, key)
    mine, other = [], []
    for i in range(10 if QUICK else 40):
        other.append(_wake(theirs, write, f"c{i}"))
        mine.append(_wake(ours, write, f"m{i}"))
    write("s4-1")
    for which, figure, goal in (
        ("p50", statistics.median, "<= 1.2x long poll"),
        ("p99", lambda v: pct(v, 99), ""),
    ):
        report.record(
            section,
            f"write -> {what} answered, {which}",
            (figure(other), (min(other), max(other))),
            "ms",
            ("metafs long poll", figure(mine)),
            goal=goal,
        )


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    print("a Consul blocking query's wake-up beside metafs's long poll (ms)")
    c = consul.Consul(host="127.0.0.1", port=srv.port, token=OPERATOR_TOKEN)

    def block(at: int) -> None:
        c.kv.get(KEY, index=at, wait="30s")

    with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=60) as http:
        race(report, "consul", "blocking query", (block, lambda: int(c.kv.get(KEY)[0])), http, KEY)
