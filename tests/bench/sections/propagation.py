"""How long a write takes to show through `cat` in a mount."""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path

import httpx

from tests.support.servers import HEADERS, ServerProcess

from ..fixtures import mount
from ..harness import QUICK, Report, pct
from ..workloads import read_file


def latencies(srv: ServerProcess, where: Path, n: int) -> list[float]:
    """Milliseconds from each of ``n`` writes of big-00007's hostname to the new value
    read through a host-mode mount of ``srv`` at ``where`` (the service ``big`` of at
    least 100 units loaded)."""
    with mount(srv, where) as m:
        for i in range(100):
            assert (m / f"big-{i:05d}" / "self" / "hostname").exists()
        target = m / "big-00007" / "self" / "hostname"
        seen: dict[bytes, float] = {}
        stop = threading.Event()

        def reader() -> None:  # a start script polling its file every half millisecond
            op = read_file(target)
            while not stop.is_set():
                data = op()
                if data not in seen:
                    seen[data] = time.perf_counter()
                time.sleep(0.0005)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        lat = []
        with httpx.Client(base_url=srv.url, headers=HEADERS, verify=srv.verify()) as c:
            tag = os.urandom(4).hex()  # values this call never saw (the file's may be one)
            for i in range(n):
                value = f"{tag}-{i}"
                t0 = time.perf_counter()
                c.put("/v1/kv/9/bench/big/big-00007/hostname", content=value)
                want = (value + "\n").encode()
                deadline = t0 + 5
                while want not in seen and time.perf_counter() < deadline:
                    time.sleep(0.0002)
                lat.append((seen.get(want, deadline) - t0) * 1e3)
        stop.set()
        for t in threads:
            t.join()
    return lat


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    print("change propagation, 100 units mounted in host mode, 2 readers polling every 0.5 ms (ms)")
    lat = latencies(srv, tmp / "prop", 30 if QUICK else 100)
    for which, took, goal in (
        ("p50", statistics.median(lat), "<= 20 ms"),
        ("p99", pct(lat, 99), "<= 100 ms"),
    ):
        downward_api = ("downwardAPI ~60 s", 60_000.0)
        span = (min(lat), max(lat))
        report.record(
            "propagation", f"write -> new value read, {which}", (took, span), "ms", downward_api, goal=goal
        )
