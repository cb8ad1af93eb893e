"""`make bench`: metafs measured side by side with its baselines, in one run.

Every figure is a median over repeated rounds with its spread (min..max of the round
medians), next to a baseline measured in the same run, and the ratio. Prints one table
and writes the figures as JSON (bench-results/bench.json). Real server, real mounts, real
etcd, real wrk; loopback only. Run from the checkout: ``python -m tests.bench.run``.
"""

from __future__ import annotations

import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import httpx

from tests.support.servers import EXAMPLE, HEADERS, ROOT

from .fixtures import server
from .harness import QUICK, Report
from .sections import (
    abuse,
    cold,
    consul,
    discovery,
    fanout,
    history,
    long_polls,
    memory,
    network,
    page_cache,
    propagation,
    restart,
    scale,
    throughput,
    ui,
    warm,
)
from .workloads import big_service


def wanted(section: ModuleType) -> bool:
    """Whether to run ``section``: all of them, or those named on the command line
    (``python -m tests.bench.run fanout scale``)."""
    names = sys.argv[1:]
    return not names or section.__name__.rsplit(".", 1)[1] in names


def main() -> int:
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    machine = (
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.release()}, Python {platform.python_version()}"
    )
    print(f"metafs bench on {machine}{' (quick)' if QUICK else ''}")
    report = Report()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="metafs-bench-") as d:
        tmp = Path(d)
        first = (warm, page_cache, cold, propagation, consul, discovery, throughput, restart, network)
        if any(wanted(s) for s in first):
            with server(tmp, "--log-level", "error") as srv:
                load = srv.url + "/v1/load"
                httpx.post(load, content=EXAMPLE.read_bytes(), headers=HEADERS).raise_for_status()
                httpx.post(load, json=big_service(100), headers=HEADERS).raise_for_status()
                for section in filter(wanted, first):
                    section.run(report, tmp, srv)
        for alone in filter(wanted, (abuse, long_polls, scale, fanout, history, ui)):
            alone.run(report, tmp)
    if wanted(memory):
        memory.run(report)
    took = time.perf_counter() - t_start
    report.write(out / "bench.json", machine, took)
    print()
    print(report.table())
    print(f"\n{len(report.figures)} figures in {took:.0f} s; JSON in {out / 'bench.json'}")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
