"""The server on a network: kept-alive small GETs over TLS beside plaintext (wrk), a new
TLS connection beside a new plain one, and gzip's bytes and server CPU for a 1,000- and
a 5,000-unit ``all_hosts/`` listing beside the same listing uncompressed, and a write's
way to a mount over TLS beside plaintext."""

from __future__ import annotations

import os
import ssl
import statistics
import time
from pathlib import Path

import httpx

from tests.support.certs import CA, LOCAL
from tests.support.servers import EXAMPLE, HEADERS, ServerProcess

from ..harness import QUICK, Report, pct, single, spread
from ..workloads import big_service, wrk
from .abuse import wrk_tail
from .propagation import latencies

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


def kept_alive_over_tls(
    report: Report, plain: ServerProcess, secure: ServerProcess, python_tls: ServerProcess
) -> None:
    """wrk against each in turns (plain, TLS, plain, ...: a slow spell of this shared VM
    falls on all), with the server's CPU per request: wrk's own TLS shares the two CPUs,
    so req/s moves with it, the server's CPU much less. ``secure`` is a TLS server as it
    starts by default (``--event-loop auto``: uvloop, whose TLS is compiled);
    ``python_tls`` the same on asyncio's own loop, whose TLS transport is Python."""
    seconds, turns = (2, 3) if QUICK else (4, 5)
    servers = {"plain": plain, "tls": secure, "asyncio": python_tls}
    rps: dict[str, list[float]] = {name: [] for name in servers}
    cpu: dict[str, list[float]] = {name: [] for name in servers}
    for _ in range(turns):
        for name, srv in servers.items():
            assert srv.proc is not None
            before = cpu_seconds(srv.proc.pid)
            got = wrk(srv.url + KEY, 16, HEADERS, seconds=seconds)
            rps[name].append(got)
            cpu[name].append((cpu_seconds(srv.proc.pid) - before) / (got * seconds) * 1e6)
    med = {name: statistics.median(v) for name, v in rps.items()}
    us = {name: statistics.median(v) for name, v in cpu.items()}

    report.record(
        "network",
        "kept-alive GETs of one key, wrk -c16, plain",
        spread(rps["plain"]),
        "req/s",
    )
    report.record(
        "network",
        "the same over TLS (--event-loop auto: uvloop)",
        spread(rps["tls"]),
        "req/s",
        ("plain", med["plain"]),
        ">= 0.8x plain",
    )
    report.record("network", "server CPU per kept-alive GET, plain", spread(cpu["plain"]), "us")
    report.record(
        "network",
        "server CPU per kept-alive GET over TLS",
        spread(cpu["tls"]),
        "us",
        ("plain", us["plain"]),
    )
    report.record(
        "network",
        "the same over TLS, serve --event-loop asyncio",
        spread(rps["asyncio"]),
        "req/s",
        ("plain", med["plain"]),
    )
    report.record(
        "network",
        "server CPU per kept-alive GET over TLS, asyncio",
        spread(cpu["asyncio"]),
        "us",
        ("plain", us["plain"]),
    )
    # why auto picks uvloop over TLS only: its tail under many busy clients
    seconds = 5 if QUICK else 10
    tails = {name: wrk_tail(srv.url, 500, seconds, KEY) for name, srv in servers.items()}
    for name, what in (("plain", "plain (asyncio)"), ("tls", "TLS (uvloop)"), ("asyncio", "TLS on asyncio")):
        tail, timeouts, got = tails[name]
        report.record(
            "network",
            f"wrk -c500, {what}: p99 ({timeouts} timeouts, {got:.0f} req/s)",
            single(tail),
            "ms",
            ("plain", tails["plain"][0]) if name != "plain" else None,
            "<= 1000 ms" if name == "tls" else "",
        )


def propagation_over_tls(report: Report, tmp: Path, plain: ServerProcess, secure: ServerProcess) -> None:
    """A write's way to a host-mode mount over TLS beside plaintext, in turns (the mount
    keeps one long poll open: TLS costs its wake-up one encrypted answer)."""
    httpx.post(
        secure.url + "/v1/load", json=big_service(100), headers=HEADERS, timeout=60, verify=secure.verify()
    ).raise_for_status()
    n = 30 if QUICK else 60
    took: dict[str, list[float]] = {"plain": [], "tls": []}
    for turn in range(2):  # plain, TLS, plain, TLS: a slow minute of the VM falls on both
        for name, srv in (("plain", plain), ("tls", secure)):
            took[name] += latencies(srv, tmp / f"prop-{name}-{turn}", n // 2)
    p50 = {name: statistics.median(lat) for name, lat in took.items()}
    p99 = {name: pct(lat, 99) for name, lat in took.items()}
    span = (min(took["tls"]), max(took["tls"]))
    report.record(
        "network",
        "write -> read in a mount over TLS, p50",
        (p50["tls"], span),
        "ms",
        ("plain", p50["plain"]),
        "the same within noise",
    )
    report.record(
        "network",
        "write -> read in a mount over TLS, p99",
        (p99["tls"], span),
        "ms",
        ("plain", p99["plain"]),
        "the same within noise",
    )


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    base = tmp / "network-pki"
    base.mkdir(exist_ok=True)
    ca = CA.make(base)
    cert, key = ca.issue("server", LOCAL)
    tls = ("--tls-cert-file", str(cert), "--tls-key-file", str(key), "--log-level", "error")
    secure = ServerProcess(tmp / "network-tls.db", ca=ca.cert).start(*tls)
    python_tls = ServerProcess(tmp / "network-asyncio.db", ca=ca.cert)
    verify = ssl.create_default_context(cafile=ca.cert)
    try:
        python_tls.start(*tls, "--event-loop", "asyncio")
        for each in (secure, python_tls):
            httpx.post(
                each.url + "/v1/load",
                content=EXAMPLE.read_bytes(),
                headers={**HEADERS, "Content-Type": "application/yaml"},
                verify=verify,
            ).raise_for_status()
        kept_alive_over_tls(report, srv, secure, python_tls)
        python_tls.stop()
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
        propagation_over_tls(report, tmp, srv, secure)
    finally:
        python_tls.stop()
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
