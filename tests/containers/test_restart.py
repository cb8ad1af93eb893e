"""Restart without restarting containers: a runc container reads /meta (an anchor) every
10 ms while the mount daemon is killed with SIGKILL and started again: the old value,
then "not connected" while no daemon runs, then the new value; never a missing file."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.support.containers import make_bundle, runc_unusable
from tests.support.mounts import MakeMount, mounted, wait_for
from tests.support.servers import HEADERS, OPERATOR_TOKEN, ROOT, ZK1, ZK1_PATH, ServerProcess

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


def helpers() -> list[int]:
    """The anchor helpers (``python -I -S .../metafs/mount/binds.py``) running now."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and b"metafs/mount/binds.py" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def read_error(path: Path, timeout: float = 5.0) -> OSError | None:
    """What listing ``path`` raises, from a thread given ``timeout`` seconds (a hang fails)."""
    errors: list[OSError] = []

    def read() -> None:
        try:
            os.listdir(path)
        except OSError as exc:
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout)
    assert not reader.is_alive(), f"listing {path} hung"
    return errors[0] if errors else None


@pytest.mark.timeout(120)
def test_a_daemon_killed_while_binding_anchors_dies_at_once(
    server: ServerProcess, anchors: Path, tmp_path: Path
) -> None:
    """SIGKILL while the anchors of 300 units are being bound: the daemon is gone at once
    and its mount answers "not connected", not a hang. (When the binds ran in threads of
    the daemon, a thread waiting on the daemon's own mount kept the dying process alive
    for ever, and every reader of the mount hung in D state.)"""
    from tests.bench.workloads import big_service

    r = httpx.post(f"{server.url}/v1/load", json=big_service(300), headers=HEADERS, timeout=60)
    assert r.status_code == 200, r.text
    mnt = tmp_path / "units"
    mnt.mkdir()
    cmd = [sys.executable, "-m", "metafs.cli", "mount", str(mnt), "--server", server.url]
    cmd += ["--anchors", str(anchors), "--foreground", "--log-file", str(tmp_path / "kill.log")]
    env = {**os.environ, "METAFS_TOKEN": OPERATOR_TOKEN}
    try:
        for attempt in range(3):  # killed at a few points of the binding
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
            wait_for(lambda: any(mounted(a / "self") for a in anchors.iterdir()), timeout=20)
            time.sleep(0.02 * attempt)
            proc.kill()
            proc.wait(5)  # reaped: no thread of it left waiting on its own mount
            error = read_error(mnt)
            assert error is not None and error.errno in (errno.ENOTCONN, errno.ECONNABORTED), error
            wait_for(lambda: not helpers(), timeout=10)  # its mount helper stops too
    finally:
        subprocess.run([str(ROOT / "tests" / "unmount-all.sh"), str(mnt)], check=False)
