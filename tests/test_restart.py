"""Restart without restarting containers: a runc container reads /meta (an anchor) in a
loop while the mount daemon is killed with SIGKILL and started again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import ZK1, ServerProcess, mounted
from .test_container import _runc_unusable, make_bundle
from .test_fs import MakeMount, wait_for

LOOP = r"""
i=0
while [ $i -lt 600 ]; do echo "$(cat /meta/self/hostname 2>&1)"; usleep 50000; i=$((i+1)); done
"""


@pytest.fixture
def anchors(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "anchors"
    root.mkdir()
    try:
        yield root
    finally:  # binds and anchors are plain mounts: take down whatever is left under tmp_path
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(str(tmp_path))), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], check=False, capture_output=True)


@pytest.mark.timeout(120)
def test_a_container_survives_a_daemon_restart(
    loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount, anchors: Path, tmp_path: Path
) -> None:
    if reason := _runc_unusable():
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
        m.start()  # a new daemon on the same mountpoint and anchors; the container goes on
        restarted = time.monotonic()
        wait_for(lambda: lines[-1][1] == "after-restart", timeout=10)
        took = next(t for t, text in lines if text == "after-restart") - restarted
        assert took < 2, f"the running container read the new value {took:.2f}s after the restart"
        assert proc.poll() is None  # never restarted
    finally:
        for pid in m.pids:
            os.kill(pid, signal.SIGTERM)  # a clean stop releases the anchors first
        wait_for(lambda: not m.pids, timeout=10)
        proc.kill()
        proc.wait()
        reader.join(5)
        subprocess.run(["runc", "delete", "--force", cid], capture_output=True, check=False)
    assert not mounted(anchor / "self")
