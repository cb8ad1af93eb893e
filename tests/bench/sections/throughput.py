"""Requests per second of the server beside the gateway of etcd (wrk)."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import httpx

from tests.support.servers import HEADERS, ServerProcess

from ..fixtures import etcd, server
from ..harness import QUICK, Report, Sample, spread
from ..workloads import big_service, wrk


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    """wrk against metafs and etcd's JSON gateway, in turns, several runs each."""
    print("server throughput (requests/s, wrk)")
    if shutil.which("wrk") is None or shutil.which("etcd") is None:
        print("  skipped: wrk or etcd is not installed")
        return
    seconds, runs = (1, 2) if QUICK else (2, 3)

    def median_of(url: str, conns: int, headers: dict[str, str], script: Path | None = None) -> Sample:
        rates = [wrk(url, conns, headers, script, seconds) for _ in range(runs)]
        return spread(rates)

    with etcd(tmp) as etcd_url:
        key = base64.b64encode(b"/metafs/9/bench/big/big-00000/hostname").decode()
        httpx.post(
            etcd_url + "/v3/kv/put", json={"key": key, "value": base64.b64encode(b"big-0\n").decode()}
        ).raise_for_status()
        lua = tmp / "range.lua"
        body = json.dumps({"key": key})
        lua.write_text(
            f"wrk.method = 'POST'\nwrk.body = '{body}'\nwrk.headers['Content-Type'] = 'application/json'\n"
        )
        leaf_url = f"{srv.url}/v1/kv/9/bench/big/big-00000/hostname"
        for conns in (1, 16, 64):
            base = median_of(etcd_url + "/v3/kv/range", conns, {}, lua)
            report.record("throughput", f"etcd 3.4 gateway range, c={conns}", base, "req/s")
            targets = {
                "GET one key": leaf_url,
                "GET unit view (text, 100 peers)": f"{srv.url}/v1/view/big-00000/",
                "GET unit view (JSON, 100 peers)": f"{srv.url}/v1/view/big-00000/?format=json",
            }
            for name, url in targets.items():
                goal = ">= 1.0x etcd" if name == "GET one key" else ""
                report.record(
                    "throughput",
                    f"{name}, c={conns}",
                    median_of(url, conns, HEADERS),
                    "req/s",
                    ("etcd", base[0]),
                    goal=goal,
                )
        # every answer made anew: what the first read after each commit costs
        with server(tmp, "--log-level", "error", "--answer-cache", "0") as cold:
            httpx.post(cold.url + "/v1/load", json=big_service(100), headers=HEADERS).raise_for_status()
            report.record(
                "throughput",
                "GET one key, answers not reused (--answer-cache 0), c=16",
                median_of(leaf_url.replace(srv.url, cold.url), 16, HEADERS),
                "req/s",
                ("etcd", median_of(etcd_url + "/v3/kv/range", 16, {}, lua)[0]),
            )
