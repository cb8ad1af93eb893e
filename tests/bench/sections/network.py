"""The server on a network: kept-alive small GETs over TLS beside plaintext (wrk), a new
TLS connection beside a new plain one, and gzip's bytes and server CPU for a 1,000- and
a 5,000-unit ``all_hosts/`` listing beside the same listing uncompressed."""

from __future__ import annotations

import os
import ssl
import statistics
import time
from pathlib import Path

import httpx

from tests.support.certs import CA, LOCAL
from tests.support.servers import EXAMPLE, HEADERS, ServerProcess

from ..harness import QUICK, Report
from ..workloads import big_service, wrk

KEY = "/v1/kv/5/test1/s4/f58ce48e-a4d5-4c1b-905f-ee3b15ccf115/hostname"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def new_connections(url: str, verify: ssl.SSLContext | bool, n: int) -> list[float]:
    """Milliseconds of ``n`` GETs of /healthz, each on a new connection."""
    took = []
    for _ in range(n):
        t0 = time.perf_counter()
        with httpx.Client(verify=verify) as c:
            c.get(url + "/healthz").raise_for_status()
        took.append((time.perf_counter() - t0) * 1e3)
    return took


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    base = tmp / "network-pki"
    base.mkdir(exist_ok=True)
    ca = CA.make(base)
    cert, key = ca.issue("server", LOCAL)
    secure = ServerProcess(tmp / "network-tls.db", ca=ca.cert)
    secure.start("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--log-level", "error")
    verify = ssl.create_default_context(cafile=ca.cert)
    try:
        httpx.post(
            secure.url + "/v1/load",
            content=EXAMPLE.read_bytes(),
            headers={**HEADERS, "Content-Type": "application/yaml"},
            verify=verify,
        ).raise_for_status()
        seconds = 2 if QUICK else 5
        plain = [wrk(srv.url + KEY, 16, HEADERS, seconds=seconds) for _ in range(3)]
        tls = [wrk(secure.url + KEY, 16, HEADERS, seconds=seconds) for _ in range(3)]
        p, t = statistics.median(plain), statistics.median(tls)
        report.record(
            "network", "kept-alive GETs of one key, wrk -c16, plain", (p, (min(plain), max(plain))), "req/s"
        )
        report.record(
            "network", "the same over TLS", (t, (min(tls), max(tls))), "req/s", ("plain", p), ">= 0.8x plain"
        )
        n = 20 if QUICK else 50
        # plain: a context with no CAs (loading the system's costs ~30 ms, which is not the wire's)
        bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        fresh_plain, fresh_tls = new_connections(srv.url, bare, n), new_connections(secure.url, verify, n)
        fp, ft = statistics.median(fresh_plain), statistics.median(fresh_tls)
        report.record(
            "network",
            "GET /healthz on a new connection, plain",
            (fp, (min(fresh_plain), max(fresh_plain))),
            "ms",
        )
        report.record(
            "network",
            "GET /healthz on a new TLS connection",
            (ft, (min(fresh_tls), max(fresh_tls))),
            "ms",
            ("plain", fp),
        )
    finally:
        secure.stop()
    assert srv.proc is not None
    for n in (1000, 5000):
        httpx.post(
            srv.url + "/v1/load", json=big_service(n, f"web{n}"), headers=HEADERS, timeout=120
        ).raise_for_status()
        url = srv.url + f"/v1/view/web{n}-00000/service/all_hosts/?format=json"
        sizes, cpu = {}, {}
        for enc in ("identity", "gzip"):
            rounds = 10 if QUICK else 30
            before = cpu_seconds(srv.proc.pid)
            with httpx.Client(headers={**HEADERS, "Accept-Encoding": enc}, timeout=60) as c:
                for i in range(rounds):
                    # a commit elsewhere first: no answer is kept (gzip is made each time)
                    c.put(srv.url + KEY.replace("hostname", "labels/tick"), content=str(i)).raise_for_status()
                    with c.stream("GET", url) as r:
                        sizes[enc] = len(b"".join(r.iter_raw()))
            cpu[enc] = (cpu_seconds(srv.proc.pid) - before) / rounds * 1e3
        report.record(
            "network",
            f"all_hosts/ of {n} units as JSON, gzip: bytes",
            (sizes["gzip"], (sizes["gzip"], sizes["gzip"])),
            "B",
            ("identity", sizes["identity"]),
        )
        report.record(
            "network",
            f"all_hosts/ of {n} units as JSON, gzip: server CPU per request",
            (cpu["gzip"], (cpu["gzip"], cpu["gzip"])),
            "ms",
            ("identity", cpu["identity"]),
        )
        httpx.delete(
            srv.url + f"/v1/accounts/9/stacks/bench/services/web{n}", headers=HEADERS, timeout=60
        ).raise_for_status()
