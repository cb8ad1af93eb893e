"""The HTTP front under hostile and heavy clients, each figure beside the same on a quiet
server: a GET while 2,000 half-open sockets are held, a GET while a 15 MB document loads,
and wrk with 500 keep-alive clients (p99 and timeouts, on both event loops)."""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import httpx

from tests.support.servers import HEADERS, ZK1_PATH, cli

from ..fixtures import server
from ..harness import QUICK, Report, Sample, single

KEY = f"/v1/kv/{ZK1_PATH}/hostname"


def gets(url: str, seconds: float, every: float = 0.0) -> list[float]:
    """GET ``KEY`` for ``seconds`` (``every``: one per that many seconds), each in ms."""
    took = []
    with httpx.Client(base_url=url, headers=HEADERS, timeout=30) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t0 = time.perf_counter()
            c.get(KEY).raise_for_status()
            took.append((time.perf_counter() - t0) * 1e3)
            if every:
                time.sleep(every)
    return took


def p99(took: list[float]) -> Sample:
    took = sorted(took)
    return took[min(len(took) - 1, round(0.99 * (len(took) - 1)))], (took[0], took[-1])


def half_open_figure(url: str, port: int, n: int) -> tuple[list[float], int]:
    """GETs, one each 50 ms for 3 s, while ``n`` sockets that never finish their headers
    are held; and how many of those the server closed with 408 afterwards."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"GET /v1/kv/ HTTP/1.1\r\nHost: x\r\n")
        socks.append(s)
    try:
        took = gets(url, 3.0, every=0.05)
        closed = 0
        for s in socks:
            s.settimeout(15)
            with contextlib.suppress(OSError):
                closed += s.recv(64).startswith(b"HTTP/1.1 408")
        return took, closed
    finally:
        for s in socks:
            s.close()


def big_document(units: int) -> bytes:
    return json.dumps(
        {
            "accounts": {
                "9": {
                    "stacks": {
                        "abuse": {
                            "services": {
                                "big": {
                                    "units": {
                                        f"ab-{i:06d}": {
                                            "cardinal_value": i,
                                            "hostname": f"abuse-{i}.example",
                                            "virt_ip_address": f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}",
                                            "labels": {"zone": f"z{i % 3}", "tier": "web" * 20},
                                            "ports": ["80/tcp", "443/tcp"],
                                        }
                                        for i in range(units)
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    ).encode()


def beside_a_load(url: str, body: bytes) -> tuple[list[float], float]:
    """GETs back to back while ``body`` loads; and the load's seconds."""
    took: list[float] = []
    stop = threading.Event()

    def reader() -> None:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as c:
            while not stop.is_set():
                t0 = time.perf_counter()
                c.get(KEY).raise_for_status()
                took.append((time.perf_counter() - t0) * 1e3)

    t = threading.Thread(target=reader)
    t.start()
    try:
        time.sleep(0.2)
        t0 = time.perf_counter()
        r = httpx.post(
            url + "/v1/load",
            content=body,
            headers={**HEADERS, "Content-Type": "application/json"},
            timeout=300,
        )
        load_s = time.perf_counter() - t0
        r.raise_for_status()
        time.sleep(0.2)
    finally:
        stop.set()
        t.join(60)
    return took, load_s


def wrk_tail(url: str, conns: int, seconds: int, key: str = KEY) -> tuple[float, int, float]:
    """p99 (ms), timeouts and requests/s of wrk on ``key`` with ``conns`` keep-alive clients."""
    cmd = ["wrk", "-t2", f"-c{conns}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for k, v in HEADERS.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url + key], capture_output=True, text=True, check=True).stdout
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", out)
    assert m, out
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    timeouts = re.search(r"timeout (\d+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert rps, out
    return float(m.group(1)) * scale, int(timeouts.group(1)) if timeouts else 0, float(rps.group(1))


def run(report: Report, tmp: Path) -> None:
    print("abuse: half-open sockets, a big load beside a reader, 500 keep-alive clients")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4096)), hard))  # for the 2,000
    example = Path(__file__).parents[3] / "contrib" / "examples" / "cluster.yaml"
    with server(tmp, "--log-level", "error") as srv:
        assert cli("load", str(example), "--server", srv.url).returncode == 0
        quiet = gets(srv.url, 2.0, every=0.05)
        quiet_p99 = p99(quiet)[0]
        held, closed = half_open_figure(srv.url, srv.port, 2000)
        report.record(
            "abuse",
            "GET p99 while 2,000 half-open sockets are held",
            p99(held),
            "ms",
            ("quiet", quiet_p99),
            goal="<= 100 ms",
            answered=len(held),
            closed_408=closed,
        )
        body = big_document(8_000 if QUICK else 66_000)
        busy, load_s = beside_a_load(srv.url, body)
        report.record(
            "abuse",
            f"GET, the slowest, while a {len(body) / 2**20:.0f} MB document loads ({load_s:.1f} s)",
            (max(busy), (statistics.median(busy), max(busy))),
            "ms",
            ("quiet", max(quiet)),
            goal="<= 100 ms",
            reads=len(busy),
        )
        seconds = 5 if QUICK else 20
        calm, _, _ = wrk_tail(srv.url, 16, seconds)
        tail, timeouts, rps = wrk_tail(srv.url, 500, seconds)
        report.record(
            "abuse", "wrk -c500 on one key: p99", single(tail), "ms", ("-c16", calm), goal="<= 250 ms"
        )
        report.record("abuse", "wrk -c500 on one key: timeouts (5 s)", single(timeouts), "", goal="0")
        report.record("abuse", "wrk -c500 on one key: throughput", single(rps), "req/s")
    with server(tmp, "--log-level", "error", "--event-loop", "uvloop") as srv:
        assert cli("load", str(example), "--server", srv.url).returncode == 0
        tail, timeouts, rps = wrk_tail(srv.url, 500, seconds)
        what = f"the same on --event-loop uvloop: p99 {tail:.0f} ms, {timeouts} timeouts"
        report.record("abuse", what, single(rps), "req/s")
