"""Service discovery with the real clients: Debian's Prometheus (2.42, HTTP SD with a
reader token) finds every unit and follows a unit added and one deleted; the npm
``consul`` client reads agent, catalog and health and its watch sees a change."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import HEADERS, ROOT, ServerProcess, ended, example_server, free_port

pytestmark = pytest.mark.timeout(120)

NODE_CLIENT = ROOT / "tests" / "clients" / "node"
WEB1 = "3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001"


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[ServerProcess]:
    with example_server(tmp_path / "metafs.db") as s:
        yield s


def reader_token(srv: ServerProcess) -> str:
    r = httpx.post(srv.url + "/v1/tokens/", json={"kind": "reader"}, headers=HEADERS)
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.fixture
def prometheus(srv: ServerProcess, tmp_path: Path) -> Iterator[str]:
    """Prometheus on loopback with one HTTP SD job against ``srv`` whose relabelling drops
    every target: nothing is scraped, and each target's discovered labels are listed."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is installed by make test"
    credentials = tmp_path / "reader.token"
    credentials.write_text(reader_token(srv))
    config = tmp_path / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1m"},
                "scrape_configs": [
                    {
                        "job_name": "metafs",
                        "http_sd_configs": [
                            {
                                "url": f"{srv.url}/v1/prometheus/targets",
                                "refresh_interval": "1s",
                                "authorization": {"credentials_file": str(credentials)},
                            }
                        ],
                        "relabel_configs": [
                            {"action": "drop", "source_labels": ["__address__"], "regex": ".+"}
                        ],
                    }
                ],
            }
        )
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.2)
        else:
            pytest.fail("prometheus did not get ready within 30 s")
        yield url
    finally:
        ended(proc)
        log.close()


def dropped(prom: str) -> dict[str, dict[str, str]]:
    """The discovered labels of each dropped target, by unit id."""
    r = httpx.get(prom + "/api/v1/targets", params={"state": "dropped"}, timeout=5)
    r.raise_for_status()
    found = r.json()["data"]["droppedTargets"]
    return {t["discoveredLabels"]["__meta_metafs_unit_id"]: t["discoveredLabels"] for t in found}


def until(what: Any, timeout: float) -> float:
    """Seconds until ``what()`` is true, or fail after ``timeout``."""
    t0 = time.monotonic()
    while not what():
        assert time.monotonic() - t0 < timeout, f"not within {timeout} s"
        time.sleep(0.2)
    return time.monotonic() - t0


def test_prometheus_discovers_every_unit_and_follows_changes(srv: ServerProcess, prometheus: str) -> None:
    until(lambda: len(dropped(prometheus)) == 9, 15)
    labels = dropped(prometheus)[WEB1]
    assert labels["__address__"] == "10.42.1.11:8080", labels
    assert labels["job"] == "metafs"
    expected = {
        "__meta_metafs_account": "7",
        "__meta_metafs_stack": "shop",
        "__meta_metafs_service": "web",
        "__meta_metafs_host": "node-a",
        "__meta_metafs_hostname": "web-1",
        "__meta_metafs_cardinal_value": "1",
        "__meta_metafs_service_label_io_example_role": "http",
    }
    assert {k: labels[k] for k in expected} == expected
    with httpx.Client(base_url=srv.url, headers=HEADERS) as op:
        unit = {
            "cardinal_value": 9,
            "hostname": "web-9",
            "virt_ip_address": "10.42.1.99",
            "ports": ["8080/tcp"],
        }
        r = op.put("/v1/accounts/7/stacks/shop/services/web/units/web-new", json=unit)
        assert r.status_code == 200, r.text
        came = until(lambda: "web-new" in dropped(prometheus), 10)
        assert dropped(prometheus)["web-new"]["__address__"] == "10.42.1.99:8080"
        assert op.delete(f"/v1/accounts/7/stacks/shop/services/web/units/{WEB1}").status_code == 200
        went = until(lambda: WEB1 not in dropped(prometheus), 10)
    print(f"a new unit seen by Prometheus in {came:.1f} s, a deleted one gone in {went:.1f} s")


def test_the_npm_consul_client(srv: ServerProcess) -> None:
    node = shutil.which("node")
    assert node and (NODE_CLIENT / "node_modules" / "consul").is_dir(), "make test runs npm ci there"
    proc = subprocess.Popen(
        [node, str(NODE_CLIENT / "check.js"), str(srv.port), reader_token(srv), "web--shop--7"],
        stdout=subprocess.PIPE,
        text=True,
    )
    seen: dict[str, Any] = {}
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            said = json.loads(line)
            seen[said["what"]] = said["data"]
            if said["what"] == "watching":
                time.sleep(0.3)
                r = httpx.put(
                    f"{srv.url}/v1/kv/7/shop/web/{WEB1}/hostname", content="web-1b", headers=HEADERS
                )
                assert r.status_code == 200
        assert proc.wait(30) == 0, seen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert seen["agent.self"]["Config"]["Datacenter"] == "dc1"
    assert set(seen["catalog.service.list"]) == {"s4--test1--5", "web--shop--7", "api--shop--7"}
    assert len(seen["health.service"]) == 5
    assert int(seen["changed"]["index"]) > int(seen["watching"]["index"])
    names = {e["Service"]["ID"]: e["Service"]["Meta"]["hostname"] for e in seen["changed"]["data"]}
    assert names[WEB1] == "web-1b"


def test_the_documented_prometheus_job_is_a_valid_config(tmp_path: Path) -> None:
    """docs/service-discovery.md's job, checked by Prometheus' own promtool."""
    promtool = shutil.which("promtool")
    assert promtool, "Debian's prometheus package brings promtool"
    doc = (ROOT / "docs" / "service-discovery.md").read_text()
    job = doc.split("```yaml\n", 1)[1].split("```", 1)[0]
    secret = tmp_path / "secret"
    secret.write_text("mfs_reader_x")
    for path in ("/etc/prometheus/metafs.token", "/etc/prometheus/metafs-ca.pem"):
        assert path in job
        job = job.replace(path, str(secret))
    (tmp_path / "job.yml").write_text(job)
    r = subprocess.run(
        [promtool, "check", "config", str(tmp_path / "job.yml")], capture_output=True, text=True
    )
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
