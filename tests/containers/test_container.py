"""A real runc container, running as uid 1000, with a unit's directory bind-mounted
read-only at /meta: what a start script inside sees and cannot do."""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import httpx
import pytest

from tests.support.servers import ZK1

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


@pytest.mark.timeout(120)
def test_a_container_reads_its_metadata(container: Callable[[str], subprocess.Popen[str]]) -> None:
    proc = container(SCRIPT)
    out, err = proc.communicate(timeout=60)
    if proc.returncode != 0 and "cgroup" in err and "uid=" not in out:
        pytest.skip(f"runc cannot start a container here: {err.strip()[:300]}")
    assert proc.returncode == 0, err
    check_start(out.splitlines())


def check_start(lines: list[str]) -> None:
    """What SCRIPT prints in a container given unit ZK1's /meta (runc, Docker, Podman)."""
    assert lines[:5] == [
        "uid=1000",
        "myid=1",
        "server.1=s4-1:2888:3888",
        "server.2=s4-2:2888:3888",
        "server.3=s4-3:2888:3888",
    ], lines
    assert "write: refused" in lines and "mkdir: refused" in lines
    assert "top: revision self service stack " in lines
    assert "foreign: 0" in lines  # nothing of the other stack's or account's units is reachable


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
