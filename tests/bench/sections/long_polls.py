"""10,000 parked long polls: memory, and how long they take to be answered."""

from __future__ import annotations

import asyncio
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import uvloop

from tests.support.servers import HEADERS, free_port

from ..fixtures import rss_mb, server
from ..harness import QUICK, Report, spread
from ..workloads import big_service


async def _long_polls(url: str, n: int, index: int, write: Callable[[], None]) -> tuple[float, int]:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"GET /v1/view/big-00003/self/hostname?index={index}&wait=120s HTTP/1.1\r\nHost: {host}\r\n"
        f"Metadata-Flavor: metafs\r\nAuthorization: {HEADERS['Authorization']}\r\n\r\n"
    ).encode()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for i in range(0, n, 500):
        batch = await asyncio.gather(
            *(asyncio.open_connection(host, int(port)) for _ in range(min(500, n - i)))
        )
        for _, w in batch:
            w.write(request)
        conns.extend(batch)
        await asyncio.sleep(0.05)
    await asyncio.sleep(3)  # let the server park every one of them
    answered = 0

    async def wait_one(r: asyncio.StreamReader) -> None:
        nonlocal answered
        head = await r.readuntil(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):
            answered += 1

    t0 = time.perf_counter()
    await asyncio.to_thread(write)
    await asyncio.wait_for(asyncio.gather(*(wait_one(r) for r, _ in conns)), 60)
    took = time.perf_counter() - t0
    for _, w in conns:
        w.close()
    return took, answered


def run(report: Report, tmp: Path) -> None:
    n = 2_000 if QUICK else 10_000
    runs = 1 if QUICK else 3
    print(f"long polls: {n} waiting clients on one server ({runs} runs, a fresh server each)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * n + 1000)), hard))
    took, peaks, idles = [], [], []
    for _ in range(runs):
        with server(tmp, "--log-level", "error") as srv:
            httpx.post(srv.url + "/v1/load", json=big_service(10), headers=HEADERS).raise_for_status()
            assert srv.proc is not None
            idles.append(rss_mb(srv.proc.pid))
            index = int(
                httpx.get(f"{srv.url}/v1/view/big-00003/self/hostname", headers=HEADERS).headers[
                    "x-metafs-index"
                ]
            )

            def write() -> None:
                peaks.append(rss_mb(srv.proc.pid))  # type: ignore[union-attr]  # all parked now
                httpx.put(
                    f"{srv.url}/v1/kv/9/bench/big/big-00003/hostname", content="woken", headers=HEADERS
                ).raise_for_status()

            # the clients on uvloop too: the figure is the server's, not asyncio's parsing
            seconds, answered = uvloop.run(_long_polls(srv.url, n, index, write))
        assert answered == n, f"only {answered} of {n} long polls were answered"
        took.append(seconds * 1e3)
        print(f"    run: {seconds * 1e3:.0f} ms, {peaks[-1]:.1f} MB")
    floor, floor_rss = [], []
    for _ in range(runs):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        script = str(Path(__file__).parents[1] / "parked_floor.py")
        proc = subprocess.Popen([sys.executable, script, str(port)])
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    httpx.get(url + "/healthz", timeout=1).raise_for_status()
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, (
                        "parked_floor.py did not start"
                    )
                    time.sleep(0.05)

            def wake(proc: subprocess.Popen[bytes] = proc, url: str = url) -> None:
                floor_rss.append(rss_mb(proc.pid))
                httpx.put(url + "/", timeout=10).raise_for_status()

            seconds, answered = uvloop.run(_long_polls(url, n, 0, wake))
            assert answered == n, f"the floor app answered {answered} of {n}"
            floor.append(seconds * 1e3)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    report.record(
        "long polls",
        f"all {n} answered after one write",
        spread(took),
        "ms",
        ("bare uvicorn", statistics.median(floor)),
        goal="<= 1000 ms",
    )
    report.record(
        "long polls",
        f"the floor: a bare uvicorn app parking {n}, all answered",
        spread(floor),
        "ms",
        rss_mb=statistics.median(floor_rss),
    )
    report.record(
        "long polls",
        f"server RSS with {n} parked",
        spread(peaks),
        "MB",
        ("idle", statistics.median(idles)),
        goal="<= 300 MB",
    )
