"""What the server keeps is bounded by its settings and dropped with what it describes:
the caches' gauges (metafs_cache_bytes, metafs_cache_entries) on a real server."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from tests.support.servers import HEADERS, ServerProcess


def gauges(http: httpx.Client) -> dict[tuple[str, str], float]:
    text = http.get("/metrics").text
    found = re.findall(r'^metafs_cache_(bytes|entries)\{cache="(\w+)"\} (\S+)$', text, re.M)
    return {(kind, cache): float(v) for kind, cache, v in found}


def services(n: int, units: int) -> dict[str, object]:
    made = {
        f"svc{s}": {
            "units": {
                f"m{s}-{u:03d}": {"cardinal_value": u, "hostname": f"m{s}-{u}", "labels": {"k": "v" * 40}}
                for u in range(units)
            }
        }
        for s in range(n)
    }
    return {"accounts": {"3": {"stacks": {"mem": {"services": made}}}}}


@pytest.mark.timeout(120)
def test_caches_stay_within_their_bounds_and_go_with_what_they_describe(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "m.db").start(
        "--view-cache-size", "1500000", "--render-cache-size", "400000", "--answer-cache-size", "300000"
    )
    try:
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=30) as http:
            assert http.post("/v1/load", json=services(10, 40)).status_code == 200
            for s in range(10):
                for u in range(40):
                    r = http.get(f"/v1/view/m{s}-{u:03d}/", params={"format": "meta"})
                    assert r.status_code == 200
                    assert r.json()["c"]["self"]["c"]["hostname"]["v"] == f"m{s}-{u}"
            g = gauges(http)
            assert 0 < g[("bytes", "rendered")] <= 400_000
            assert 0 < g[("bytes", "views")] <= 1_500_000
            assert 0 < g[("bytes", "answers")] <= 300_000
            assert g[("entries", "views")] < 10  # ~260 KB each: not all ten fit
            # one rendered body per unit and format, not one per revision
            for i in range(10):
                assert http.put("/v1/kv/3/mem/svc9/m9-000/labels/tick", content=str(i)).status_code == 200
                r = http.get("/v1/view/m9-001/", params={"format": "meta"})
                assert r.json()["c"]["self"]["c"]["hostname"]["v"] == "m9-1"
            assert gauges(http)[("entries", "rendered")] <= g[("entries", "rendered")] + 1
            # deleted: what described it goes at once
            assert http.delete("/v1/accounts/3").status_code == 200
            g = gauges(http)
            assert (g[("entries", "views")], g[("bytes", "views")]) == (0, 0)
            assert (g[("entries", "rendered")], g[("bytes", "rendered")]) == (0, 0)
            assert http.get("/v1/view/m9-001/").status_code == 404
    finally:
        srv.stop()
