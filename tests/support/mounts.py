"""Real `metafs mount` daemons on temporary mountpoints, always torn down."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .servers import ROOT, cli


def mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def daemon_pids(mountpoint: Path) -> list[int]:
    """The mount daemons serving ``mountpoint`` (found by their command line)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"metafs.cli" in cmd and b"mount" in cmd and os.fsencode(mountpoint) in cmd:
            pids.append(int(entry.name))
    return pids


@dataclass
class Mount:
    """A real `metafs mount` on a temporary mountpoint; always torn down."""

    path: Path
    server: str
    log: Path
    unit: str | None = None
    extra: tuple[str, ...] = ()

    def start(self) -> Mount:
        args = ["mount", str(self.path), "--server", self.server, "--log-file", str(self.log), *self.extra]
        if self.unit:
            args += ["--unit", self.unit]
        r = cli(*args)
        assert r.returncode == 0, (
            f"mount failed: {r.stderr}\n{self.log.read_text() if self.log.exists() else ''}"
        )
        assert mounted(self.path)
        return self

    @property
    def pids(self) -> list[int]:
        return daemon_pids(self.path)

    def stop(self) -> None:
        if mounted(self.path):
            r = cli("umount", str(self.path))
            if r.returncode != 0:
                subprocess.run(["fusermount3", "-uz", str(self.path)], check=False, capture_output=True)
        deadline = time.monotonic() + 10
        while self.pids and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.pids:  # a hung daemon: abort its FUSE connection so that nothing waits on it
            subprocess.run([str(ROOT / "tests" / "unmount-all.sh"), str(self.path)], check=False)
        for pid in self.pids:
            os.kill(pid, signal.SIGKILL)
        if mounted(self.path):
            subprocess.run(["fusermount3", "-uz", str(self.path)], check=False, capture_output=True)


#: the ``make_mount`` fixture: ``make_mount(server_url, unit=None, *extra, name="mnt")``
MakeMount = Callable[..., Mount]


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    """Seconds until ``predicate()`` holds (polled every millisecond); fails after ``timeout``."""
    t0 = time.monotonic()
    while not predicate():
        if time.monotonic() - t0 > timeout:
            raise AssertionError("condition not met in time")
        time.sleep(0.001)
    return time.monotonic() - t0
