"""A real runc container, running as uid 1000, with a unit's directory bind-mounted
read-only at /meta: what a start script inside sees and cannot do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .conftest import ZK1, ServerProcess
from .test_fs import MakeMount

SCRIPT = r"""
set -u
echo "uid=$(id -u)"
MYID=$(cat /meta/self/cardinal_value)
echo "myid=$MYID"
for peer in /meta/service/all_hosts/*/; do
  echo "server.$(cat "$peer/cardinal_value")=$(cat "$peer/hostname"):2888:3888"
done
if echo x > /meta/self/hostname 2>/dev/null; then echo "write: allowed"; else echo "write: refused"; fi
if mkdir /meta/x 2>/dev/null; then echo "mkdir: allowed"; else echo "mkdir: refused"; fi
echo "top: $(ls /meta | tr '\n' ' ')"
echo "foreign: $(find /meta | grep -c -e 3b1f2c9e -e 9d0e7a41)"
"""


def _runc_unusable() -> str | None:
    if shutil.which("runc") is None or not Path("/bin/busybox").exists():
        return "runc or busybox-static is not installed"
    if os.geteuid() != 0:
        return "runc needs root here"
    return None


def make_bundle(root: Path, meta: Path, script: str) -> Path:
    rootfs = root / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    for d in ("meta", "proc", "dev", "sys", "tmp", "etc"):
        (rootfs / d).mkdir()
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n")
    subprocess.run(["runc", "spec", "--bundle", str(root)], check=True)
    config = json.loads((root / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/sh", "-c", script]
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    config["process"]["cwd"] = "/tmp"
    config["root"] = {"path": "rootfs", "readonly": True}
    config["mounts"].append(
        {"destination": "/meta", "type": "bind", "source": str(meta), "options": ["rbind", "ro"]}
    )
    (root / "config.json").write_text(json.dumps(config, indent=2))
    return root


@pytest.fixture
def container(
    loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount, tmp_path: Path
) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Start a runc container running a script, with unit ZK1's directory of a host-mode
    mount at /meta; deleted afterwards."""
    if reason := _runc_unusable():
        pytest.skip(reason)
    m = make_mount(server.url)
    started: list[tuple[str, subprocess.Popen[str]]] = []

    def run(script: str) -> subprocess.Popen[str]:
        bundle = make_bundle(tmp_path / f"bundle{len(started)}", m.path / ZK1, script)
        cid = f"metafs-test-{uuid.uuid4().hex[:8]}"
        cmd = ["runc", "run", "--bundle", str(bundle), cid]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append((cid, proc))
        return proc

    try:
        yield run
    finally:
        for cid, proc in started:
            proc.kill()
            proc.wait()
            subprocess.run(["runc", "delete", "--force", cid], capture_output=True, check=False)


@pytest.mark.timeout(120)
def test_a_container_reads_its_metadata(container: Callable[[str], subprocess.Popen[str]]) -> None:
    proc = container(SCRIPT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0 and "cgroup" in err and "uid=" not in out:
        pytest.skip(f"runc cannot start a container here: {err.strip()[:300]}")
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert lines[:5] == [
        "uid=1000",
        "myid=1",
        "server.1=s4-1:2888:3888",
        "server.2=s4-2:2888:3888",
        "server.3=s4-3:2888:3888",
    ], out
    assert "write: refused" in lines and "mkdir: refused" in lines
    assert "top: revision self service stack " in lines
    assert "foreign: 0" in lines  # nothing of the other stack's units is reachable


WATCH = r"""
echo "start=$(cat /meta/self/hostname)"
i=0
while [ "$(cat /meta/self/hostname)" = s4-1 ] && [ $i -lt 1000 ]; do usleep 10000; i=$((i+1)); done
echo "now=$(cat /meta/self/hostname)"
"""


@pytest.mark.timeout(120)
def test_a_running_container_sees_changes(
    loaded: httpx.Client, container: Callable[[str], subprocess.Popen[str]]
) -> None:
    proc = container(WATCH)
    assert proc.stdout is not None
    assert proc.stdout.readline() == "start=s4-1\n"
    assert loaded.put(f"/v1/kv/5/test1/s4/{ZK1}/hostname", content="zk-live").status_code == 200
    out, _ = proc.communicate(timeout=30)
    assert out == "now=zk-live\n"
