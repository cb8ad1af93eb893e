"""Service discovery: a blocking ``health/service`` query's wake-up (py-consul) beside
metafs's own long poll on a key of the same service, in turns; and the Prometheus HTTP SD
answer for 5,000 units: its time (made after a change in the service, and kept until
the next commit) and its bytes, gzip beside identity."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import consul
import httpx

from tests.support.servers import HEADERS, OPERATOR_TOKEN, ZK1_PATH, ServerProcess

from ..harness import QUICK, Report, spread
from ..workloads import big_service
from .consul import race

KEY = f"{ZK1_PATH}/hostname"
SERVICE = "s4--test1--5"
TARGETS = "/v1/prometheus/targets"


def wake_ups(report: Report, srv: ServerProcess) -> None:
    c = consul.Consul(host="127.0.0.1", port=srv.port, token=OPERATOR_TOKEN)

    def block(at: int) -> None:
        c.health.service(SERVICE, index=at, wait="30s")

    def index() -> int:
        return int(c.health.service(SERVICE)[0])

    with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=60) as http:
        race(report, "discovery", "blocking health/service", (block, index), http, KEY)


def http_sd(report: Report, srv: ServerProcess) -> None:
    n = 5000
    op = httpx.Client(base_url=srv.url, headers=HEADERS, timeout=120)
    op.post("/v1/load", json=big_service(n, "sd")).raise_for_status()
    tick = "/v1/kv/9/bench/sd/sd-00000/labels/tick"
    took: dict[str, list[float]] = {"identity": [], "gzip": []}
    sizes: dict[str, int] = {}
    try:
        for i in range(5 if QUICK else 15):
            for enc in ("identity", "gzip"):
                # a change in the service first: its 5,000 units decoded again, nothing kept
                op.put(tick, content=f"{enc}{i}").raise_for_status()
                t0 = time.perf_counter()
                with op.stream("GET", TARGETS, headers={"Accept-Encoding": enc}) as r:
                    body = b"".join(r.iter_raw())
                took[enc].append((time.perf_counter() - t0) * 1e3)
                sizes[enc] = len(body)
        # the same answer again before any commit: kept
        again = []
        for _ in range(20):
            t0 = time.perf_counter()
            op.get(TARGETS, headers={"Accept-Encoding": "identity"}).raise_for_status()
            again.append((time.perf_counter() - t0) * 1e3)
        groups = len(op.get(TARGETS).json())
        assert groups >= n, groups
    finally:
        op.delete("/v1/accounts/9/stacks/bench/services/sd").raise_for_status()
        op.close()
    made, packed = took["identity"], took["gzip"]
    p50 = statistics.median(made)
    report.record(
        "discovery", f"HTTP SD of {n} units, made after a change", (p50, (min(made), max(made))), "ms"
    )
    report.record(
        "discovery",
        f"HTTP SD of {n} units, gzip, made after a change",
        spread(packed),
        "ms",
        ("identity", p50),
    )
    report.record(
        "discovery",
        f"HTTP SD of {n} units, again before the next commit",
        spread(again),
        "ms",
        ("made", p50),
    )
    report.record(
        "discovery",
        f"HTTP SD of {n} units, gzip: bytes",
        (sizes["gzip"], (sizes["gzip"], sizes["gzip"])),
        "B",
        ("identity", sizes["identity"]),
    )


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    print("service discovery: health/service's wake-up; HTTP SD of 5,000 units")
    wake_ups(report, srv)
    http_sd(report, srv)
