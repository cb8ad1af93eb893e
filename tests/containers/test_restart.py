"""Restart without restarting containers: a runc container reads /meta (an anchor) every
10 ms while the mount daemon is killed with SIGKILL and started again: the old value,
then "not connected" while no daemon runs, then the new value; never a missing file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.containers import make_bundle, runc_unusable
from tests.support.mounts import MakeMount, mounted, wait_for
from tests.support.servers import HEADERS, ZK1, ZK1_PATH, ServerProcess

LOOP = r"""
i=0
while [ $i -lt 3000 ]; do echo "$(cat /meta/self/hostname 2>&1)"; usleep 10000; i=$((i+1)); done
"""


@pytest.mark.timeout(120)
def test_a_container_survives_a_daemon_restart(
    loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount, anchors: Path, tmp_path: Path
) -> None:
    if reason := runc_unusable():
        pytest.skip(reason)
    m = make_mount(server.url, None, "--anchors", str(anchors))
    anchor = anchors / ZK1
    assert (anchor / "self" / "hostname").read_text() == "s4-1\n"
    assert sorted(os.listdir(anchors)) == sorted(os.listdir(m.path))  # every unit anchored

    bundle = make_bundle(tmp_path / "bundle", anchor, LOOP)
    config = json.loads((bundle / "config.json").read_text())
    config["mounts"][-1]["options"] = ["rbind", "ro", "rslave"]
    (bundle / "config.json").write_text(json.dumps(config))
    cid = f"metafs-restart-{uuid.uuid4().hex[:8]}"
    proc = subprocess.Popen(["runc", "run", "--bundle", str(bundle), cid], stdout=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def collect() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), line.strip()))

    reader = threading.Thread(target=collect)
    reader.start()
    try:
        wait_for(lambda: len(lines) > 5, timeout=10)
        assert all(text == "s4-1" for _, text in lines)
        (pid,) = m.pids
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not m.pids)
        wait_for(lambda: lines[-1][1] != "s4-1", timeout=5)  # the container sees the outage
        r = loaded.put(f"/v1/kv/5/test1/s4/{ZK1}/hostname", content="after-restart")
        assert r.status_code == 200
        restarted = time.monotonic()
        m.start()  # a new daemon on the same mountpoint and anchors; the container goes on
        wait_for(lambda: lines[-1][1] == "after-restart", timeout=10)
        took = next(t for t, text in lines if text == "after-restart") - restarted
        assert took < 2, f"the running container read the new value {took:.2f}s after the restart"
        assert proc.poll() is None  # never restarted
        seen = {text for _, text in lines}
        outage = {text for text in seen if text not in ("s4-1", "after-restart")}
        assert all("Transport endpoint is not connected" in text for text in outage), outage
        print(f"restart -> first good read in the container: {took * 1e3:.0f} ms; {len(lines)} reads")
    finally:
        for pid in m.pids:
            os.kill(pid, signal.SIGTERM)  # a clean stop releases the anchors first
        wait_for(lambda: not m.pids, timeout=10)
        proc.kill()
        proc.wait()
        reader.join(5)
        subprocess.run(["runc", "delete", "--force", cid], capture_output=True, check=False)
    assert not mounted(anchor / "self")


OUTAGE = float(os.environ.get("METAFS_OUTAGE_SECONDS", "30"))


@pytest.mark.timeout(OUTAGE + 90)
def test_a_long_server_outage(loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount) -> None:
    """The server gone for 30 s while containers read: cached views keep serving, no read
    hangs, and after recovery the long poll resumes and every change reaches the files."""
    m = make_mount(server.url, None, "--fetch-timeout", "1")
    files = [m.path / u / "self" / "hostname" for u in (ZK1, "3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001")]
    expected = {f: f.read_text() for f in files}
    errors: list[str] = []
    slowest = [0.0]
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for f in files:
                t0 = time.monotonic()
                try:
                    value = f.read_text()
                except OSError as exc:
                    errors.append(f"{f}: {exc}")
                    continue
                slowest[0] = max(slowest[0], time.monotonic() - t0)
                if value != expected[f]:
                    errors.append(f"{f}: {value!r}")
            time.sleep(0.01)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        server.stop(signal.SIGKILL)
        time.sleep(OUTAGE)
        assert not errors and slowest[0] < 1, (errors[:3], slowest[0])
        server.start()
        stop.set()
        for t in readers:
            t.join(10)
        for i, value in enumerate(["back-1", "back-2"]):  # the long poll resumed: both arrive
            r = httpx.put(f"{server.url}/v1/kv/{ZK1_PATH}/hostname", content=value, headers=HEADERS)
            assert r.status_code == 200
            wait_for(lambda v=value: files[0].read_text() == v + "\n", timeout=15 if i == 0 else 5)  # type: ignore[misc]
    finally:
        stop.set()
        for t in readers:
            t.join(10)
    assert "stale" in m.log.read_text() and "reachable again" in m.log.read_text()
