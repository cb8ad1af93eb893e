"""Metrics, status and logs: the server's /metrics, the mount daemon's /metrics and
`metafs status`, JSON-lines logs that never carry a token."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from metafs import logs
from tests.support.mounts import Mount
from tests.support.servers import (
    EXAMPLE,
    HEADERS,
    OPERATOR_TOKEN,
    ROOT,
    ZK1_PATH,
    ServerProcess,
    cli,
    free_port,
)

MakeMount = Callable[..., Mount]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, parsed by Prometheus' own text parser."""
    r = httpx.get(url, timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[s.name, tuple(sorted(s.labels.items()))] = s.value
    return samples


def requests_total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], **labels: str) -> float:
    return samples.get(("metafs_http_requests_total", tuple(sorted(labels.items()))), 0.0)


@pytest.mark.timeout(60)
def test_server_metrics_count_requests_long_polls_and_revision(
    loaded: httpx.Client, server: ServerProcess
) -> None:
    before = scrape(server.url + "/metrics")
    for _ in range(3):
        assert loaded.get(f"/v1/kv/{ZK1_PATH}/hostname").status_code == 200
    assert loaded.get("/v1/kv/5/nope").status_code == 404
    rev = int(loaded.put(f"/v1/kv/{ZK1_PATH}/labels/m", content="1").headers["X-Metafs-Revision"])
    after = scrape(server.url + "/metrics")
    get200 = {"route": "kv", "method": "GET", "status": "200"}
    assert requests_total(after, **get200) - requests_total(before, **get200) == 3
    assert (
        requests_total(after, route="kv", method="GET", status="404")
        - requests_total(before, route="kv", method="GET", status="404")
        == 1
    )
    assert after["metafs_store_revision", ()] == rev
    assert after["metafs_http_request_duration_seconds_count", (("route", "kv"),)] >= 5
    assert after["process_resident_memory_bytes", ()] > 10e6
    assert not any("5/test1" in str(labels) for _, labels in after)  # no ids in labels

    # a long poll is counted while it waits, and ends when its client goes away
    index = loaded.get(f"/v1/kv/{ZK1_PATH}/hostname").headers["X-Metafs-Index"]

    def poll() -> None:
        with pytest.raises(httpx.ReadTimeout):
            httpx.get(
                f"{server.url}/v1/kv/{ZK1_PATH}/hostname",
                params={"index": index, "wait": "60"},
                headers=HEADERS,
                timeout=1.0,
            )

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    assert scrape(server.url + "/metrics")["metafs_long_polls_open", ()] == 1
    t.join(5)
    deadline = time.monotonic() + 5
    while scrape(server.url + "/metrics")["metafs_long_polls_open", ()] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    final = scrape(server.url + "/metrics")
    assert final["metafs_long_polls_open", ()] == 0, "an abandoned long poll was still waiting"
    assert requests_total(final, route="kv", method="GET", status="499") == 1


@pytest.mark.timeout(90)
def test_mount_status_and_metrics(loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount) -> None:
    port = free_port()
    m = make_mount(server.url, None, "--metrics-listen", f"127.0.0.1:{port}")
    assert (m.path / ZK1_PATH.rsplit("/", 1)[1] / "self" / "hostname").read_text().strip() == "s4-1"
    r = cli("status", str(m.path))
    assert r.returncode == 0, r.stderr
    assert "(host mode)" in r.stdout and f"server      {server.url}" in r.stdout
    assert "state       fresh" in r.stdout
    st = json.loads(cli("status", str(m.path), "--json").stdout)
    listed = st["units_listed"]
    assert listed == 9 and st["views_cached"] >= 1 and not st["stale"]
    # the revision of the first answers, not 0 until the first watch answer
    assert st["revision"] == int(loaded.get("/v1/kv/5/").headers["X-Metafs-Revision"]) > 0

    before = scrape(f"http://127.0.0.1:{port}/metrics")
    assert before["metafs_mount_units_listed", ()] == listed
    assert before["metafs_mount_server", (("url", server.url),)] == 1
    rev = int(loaded.put(f"/v1/kv/{ZK1_PATH}/hostname", content="changed").headers["X-Metafs-Revision"])
    deadline = time.monotonic() + 5
    while scrape(f"http://127.0.0.1:{port}/metrics")["metafs_mount_revision", ()] < rev:
        assert time.monotonic() < deadline, "the mount's revision did not follow the write"
        time.sleep(0.05)
    after = scrape(f"http://127.0.0.1:{port}/metrics")
    assert after["metafs_mount_invalidations_total", ()] > before["metafs_mount_invalidations_total", ()]
    assert after["metafs_mount_view_fetches_total", ()] > before["metafs_mount_view_fetches_total", ()]

    server.stop(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while (r := cli("status", str(m.path))).returncode != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert r.returncode == 2 and "STALE" in r.stdout, r.stdout
    assert scrape(f"http://127.0.0.1:{port}/metrics")["metafs_mount_stale", ()] == 1
    server.start()


@pytest.mark.timeout(60)
def test_a_mount_long_polls_from_its_views_revision_and_misses_nothing(
    loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount
) -> None:
    """The first read of a unit-mode mount costs one view fetch and one parked long poll
    of that view from its revision (no poll from 0 that answers at once); a write landing
    at once after the view joined, before the watcher polls again, still arrives, as the
    poll's answer (a unit-mode mount long-polls its view itself, not /v1/watch)."""
    before = scrape(server.url + "/metrics")
    m = make_mount(server.url, ZK1_PATH)
    hostname = m.path / "self" / "hostname"
    assert hostname.read_text() == "s4-1\n"
    r = loaded.put(f"/v1/kv/{ZK1_PATH}/hostname", content="joined")
    assert r.status_code == 200
    deadline = time.monotonic() + 10
    while hostname.read_text() != "joined\n":
        assert time.monotonic() < deadline, "a write right after the view joined never arrived"
        time.sleep(0.005)
    while scrape(server.url + "/metrics")["metafs_long_polls_open", ()] < 1:
        assert time.monotonic() < deadline, "the mount never parked a long poll"
        time.sleep(0.01)
    after = scrape(server.url + "/metrics")
    watch = {"route": "watch", "method": "GET", "status": "200"}
    view = {"route": "view", "method": "GET", "status": "200"}
    assert requests_total(after, **watch) - requests_total(before, **watch) == 0
    # the first fetch, and the one answered poll: the write's delta (none answered at once)
    assert requests_total(after, **view) - requests_total(before, **view) == 2


def test_status_of_a_path_without_a_daemon_is_a_clear_error(tmp_path: Path) -> None:
    r = cli("status", str(tmp_path))
    assert r.returncode == 1
    assert "no metafs mount daemon status socket" in r.stderr


@pytest.mark.timeout(90)
def test_json_logs_of_server_and_mount_never_carry_a_token(tmp_path: Path, make_mount: MakeMount) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    env = {**os.environ, "METAFS_OPERATOR_TOKEN": OPERATOR_TOKEN}
    cmd = [sys.executable, "-m", "metafs.cli", "serve", "--listen", f"127.0.0.1:{port}"]
    cmd += ["--store", f"sqlite://{tmp_path / 'x.db'}", "--log-format", "json", "--log-level", "debug"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        headers = {**HEADERS, "Content-Type": "application/yaml"}
        assert httpx.post(url + "/v1/load", content=EXAMPLE.read_bytes(), headers=headers).status_code == 200
        host_token = cli(
            "token", "create", "--kind", "host", "--subject", "node-a", "--server", url
        ).stdout.strip()
        assert host_token.startswith("mfs_host_")
        bad = "mfs_unit_this-is-not-a-real-token-but-looks-like-one"
        assert (
            httpx.get(url + "/v1/units/", headers={**HEADERS, "Authorization": f"Bearer {bad}"}).status_code
            == 401
        )
        m = make_mount(url, None, "--log-format", "json", "--log-level", "debug", "--token", host_token)
        assert len(os.listdir(m.path)) >= 1
        m.stop()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    for path in (log, m.log):
        lines = path.read_text().splitlines()
        assert lines, f"{path} is empty"
        for line in lines:
            entry = json.loads(line)  # every line is one JSON object
            assert {"time", "level", "logger", "message"} <= entry.keys()
        text = path.read_text()
        for secret in (OPERATOR_TOKEN, host_token, bad):
            assert secret not in text and secret.split("_", 2)[2] not in text, f"a token in {path}"
    assert any("mounted" in json.loads(line)["message"] for line in m.log.read_text().splitlines())


def test_redaction_catches_tokens_anywhere_in_a_record() -> None:
    record = logging.LogRecord(
        "t",
        logging.ERROR,
        __file__,
        1,
        "failed for %s with Bearer %s",
        ("mfs_host_SeCrEt-1_x", "abc.def"),
        None,
    )
    for fmt in ("text", "json"):
        line = logs.formatter(fmt).format(record)
        assert "SeCrEt" not in line and "abc.def" not in line
        assert "mfs_host_***" in line and "Bearer ***" in line
