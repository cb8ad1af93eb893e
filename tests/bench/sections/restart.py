"""A mount daemon's restart: from a new foreground daemon's start (as systemd starts it)
after a SIGKILL to the first good read through an anchor, beside the bare start of the
same Python importing the same modules (the floor no restart can go under)."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.servers import HEADERS, OPERATOR_TOKEN, ROOT, ZK1, ZK1_PATH, ServerProcess

from ..harness import QUICK, Report, spread


def _start(srv: ServerProcess, mnt: Path, anchors: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "metafs.cli", "mount", str(mnt), "--server", srv.url]
    cmd += ["--anchors", str(anchors), "--foreground", "--log-file", str(log)]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "METAFS_TOKEN": OPERATOR_TOKEN})


def _until(path: Path, value: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if path.read_text() == value:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{path} never read {value!r}")
        time.sleep(0.002)


def run(report: Report, tmp: Path, srv: ServerProcess) -> None:
    print("restart of the mount daemon (ms)")
    mnt, anchors = tmp / "restart-units", tmp / "restart-anchors"
    mnt.mkdir()
    hostname = anchors / ZK1 / "self" / "hostname"
    proc = _start(srv, mnt, anchors, tmp / "restart.log")
    took: list[float] = []
    try:
        _until(hostname, "s4-1\n")
        for i in range(3 if QUICK else 8):
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            value = f"restart-{i}"
            r = httpx.put(f"{srv.url}/v1/kv/{ZK1_PATH}/hostname", content=value, headers=HEADERS)
            r.raise_for_status()
            t0 = time.perf_counter()
            proc = _start(srv, mnt, anchors, tmp / "restart.log")
            _until(hostname, value + "\n")
            took.append((time.perf_counter() - t0) * 1e3)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        httpx.put(f"{srv.url}/v1/kv/{ZK1_PATH}/hostname", content="s4-1", headers=HEADERS)
        with open("/proc/self/mountinfo") as f:  # the anchors: each a mount of itself
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(str(anchors))), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    bare = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import metafs.cli.main, metafs.mount.daemon"], cwd=ROOT, check=True
        )
        bare.append((time.perf_counter() - t0) * 1e3)
    floor = statistics.median(bare)
    units = len(httpx.get(f"{srv.url}/v1/units/", headers=HEADERS).text.splitlines())
    report.record(
        "restart",
        f"SIGKILL, new daemon -> first good read ({units} units on the host)",
        spread(took),
        "ms",
        ("python + imports", floor),
        goal="<= 300 ms",
    )
