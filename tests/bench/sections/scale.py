"""Big services and many views: latencies, server and daemon memory."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import HEADERS

from ..fixtures import daemon_pid, mount, rss_mb, server
from ..harness import QUICK, Report, Sample, rounds, single, spread
from ..workloads import big_service


def scale_document(
    accounts: int = 10, services: int = 1000, per_service: int = 100, hosts: int = 100
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "hosts": {
            f"h{i:03d}": {"hostname": f"h{i:03d}.dc", "agent_ip": f"10.1.{i // 250}.{i % 250}"}
            for i in range(hosts)
        },
        "accounts": {},
    }
    n = 0
    for s in range(services):
        acc = doc["accounts"].setdefault(f"a{s % accounts}", {"stacks": {}})
        stack = acc["stacks"].setdefault(f"st{(s // accounts) % 10}", {"services": {}})
        units = {}
        for u in range(per_service):
            units[f"u{n:06d}"] = {
                "cardinal_value": u,
                "hostname": f"s{s}-{u}",
                "virt_ip_address": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
                "ports": ["8080/tcp"],
                "image": "app:1",
                "host": f"h{n % hosts:03d}",
                "labels": {"zone": f"z{n % 3}"},
            }
            n += 1
        stack["services"][f"svc{s}"] = {
            "service_domain": f"svc{s}.internal",
            "scale": per_service,
            "units": units,
        }
    return doc


def read_all_views(url: str, units: int, fmt: str = "text", step: int = 1, clients: int = 8) -> None:
    """GET ``/v1/view/<unit>/?format=FMT`` of ``units`` units, ``u000000`` and every
    ``step``-th after it, from ``clients`` threads."""

    def part(k: int) -> None:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=60) as c:
            for n in range(k, units, clients):
                c.get(f"/v1/view/u{n * step:06d}/", params={"format": fmt}).raise_for_status()

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(part, range(clients)))


def run(report: Report, tmp: Path) -> None:
    services = 100 if QUICK else 1000
    print(f"scale: {services * 100} units ({services} services x 100, 100 hosts, 10 accounts)")
    doc = scale_document(services=services)
    body = json.dumps(doc).encode()
    with server(tmp, "--max-body", str(len(body) + 1024), "--log-level", "error") as srv:
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=600) as c:
            t0 = time.perf_counter()
            r = c.post("/v1/load", content=body, headers={"Content-Type": "application/json"})
            load_s = time.perf_counter() - t0
            assert r.status_code == 200, r.text[:500]
            c.post(
                "/v1/load", json=big_service(1000, "thousand"), headers={"Content-Type": "application/json"}
            ).raise_for_status()
            assert srv.proc is not None
            rss = rss_mb(srv.proc.pid)

            def after_a_commit(url: str, n: int = 15) -> Sample:
                """A GET right after a commit elsewhere (no answer kept), in ms."""
                took = []
                for i in range(n):
                    c.put("/v1/kv/a0/st0/svc0/u000000/labels/tick", content=str(i)).raise_for_status()
                    t0 = time.perf_counter()
                    c.get(url).raise_for_status()
                    took.append((time.perf_counter() - t0) * 1e3)
                return spread(took)

            view_url, listing_url = "/v1/view/u000100/?format=json", "/v1/kv/9/bench/thousand/"
            view = after_a_commit(view_url)
            listing = after_a_commit(listing_url)
            view_again = rounds(lambda: c.get(view_url).raise_for_status(), 20, 5)
            assert len(c.get(listing_url).text.splitlines()) == 1000
        size = sum(p.stat().st_size for p in srv.db.parent.glob(srv.db.name + "*")) / 2**20
        report.record("scale", f"load {services * 100} units in one document", single(load_s), "s")
        report.record("scale", "store size on disk", single(size), "MB")
        report.record("scale", "server RSS after the load", single(rss), "MB")
        report.record("scale", "GET a unit view (JSON, 100 peers), after a commit", view, "ms")
        report.record("scale", "GET a 1,000-unit service listing, after a commit", listing, "ms")
        report.record(
            "scale",
            "the same unit view again (answer reused)",
            (view_again[0] / 1000, (view_again[1][0] / 1000, view_again[1][1] / 1000)),
            "ms",
        )
        # every unit's view read once (what a fleet of fresh mounts does): what the server
        # keeps must stay within its bounds, not grow with the number of units
        # (as text: it builds every view, and their service views; the JSON of all
        # 100,000 views of 100 peers would be 12 GB, so 2,000 of them, past the bound)
        t0 = time.perf_counter()
        read_all_views(srv.url, services * 100)
        read_all_views(srv.url, 2000, "meta", step=services * 100 // 2000)
        all_s = time.perf_counter() - t0
        rss_all = rss_mb(srv.proc.pid)
        what = f"read all {services * 100} unit views (text) and 2,000 as JSON, 8 clients"
        report.record("scale", what, single(all_s), "s")
        report.record(
            "scale",
            "server RSS after every view was read once",
            single(rss_all),
            "MB",
            baseline=("after the load", rss),
            goal="<= 150 MB",
        )
        with mount(srv, tmp / "scale-mnt") as m:
            step = services * 100 // 100
            for i in range(100):
                assert (m / f"u{i * step:06d}" / "self" / "hostname").read_text()
            pid = daemon_pid(m)
            d = rss_mb(pid)
            report.record("scale", "mount daemon RSS, 100 views cached (operator token)", single(d), "MB")
        # a host's own mount: its token lists the host's 1,000 units, one in each of 1,000
        # services; 100 of them read are 100 views of 100 different 100-unit services
        r = httpx.post(f"{srv.url}/v1/tokens/", json={"kind": "host", "subject": "h000"}, headers=HEADERS)
        r.raise_for_status()
        with mount(srv, tmp / "scale-host-mnt", token=r.json()["token"]) as m:
            listed = os.listdir(m)
            assert len(listed) == services * 100 // 100, len(listed)
            pid = daemon_pid(m)
            idle = rss_mb(pid)
            for unit in sorted(listed)[:100]:
                assert (m / unit / "self" / "hostname").read_text()
            d = rss_mb(pid)
            report.record(
                "scale",
                "mount daemon RSS, 100 views of 100-unit services (host token)",
                single(d),
                "MB",
                baseline=("its units listed, no view", idle),
                goal="<= 50 MB",
            )
