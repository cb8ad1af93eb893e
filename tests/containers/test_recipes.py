"""The bootstrap recipes of contrib/recipes, each run in a runc container (busybox, uid
1000) against a real mount: the configs they write, and a start script that waits for its
peers by poll() on /meta/revision instead of sleeping."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.support.servers import ROOT

RECIPES = ROOT / "contrib" / "recipes"
Container = Callable[..., subprocess.Popen[str]]
ZK3 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf118"


@pytest.fixture
def tools(tmp_path: Path) -> list[dict[str, object]]:
    """The recipes and a static metafs-waitrev, at /opt/metafs (ro); a tmpfs at /work."""
    opt = tmp_path / "opt"
    opt.mkdir()
    for recipe in RECIPES.glob("*.sh"):
        (opt / recipe.name).write_text(recipe.read_text())
    cc = ["gcc", "-O2", "-static", "-Wall", "-Werror", "-o", str(opt / "metafs-waitrev")]
    subprocess.run([*cc, str(RECIPES / "metafs-waitrev.c")], check=True, capture_output=True, timeout=120)
    return [
        {"destination": "/opt/metafs", "type": "bind", "source": str(opt), "options": ["rbind", "ro"]},
        {"destination": "/work", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=1777"]},
    ]


CONFIGS = r"""
set -e
export PATH=/opt/metafs:$PATH
sh /opt/metafs/zookeeper.sh /work/zk /work/conf/zoo.cfg
echo "myid=$(cat /work/zk/myid)"
cat /work/conf/zoo.cfg
echo "etcd: $(sh /opt/metafs/etcd-initial-cluster.sh)"
sh /opt/metafs/kafka.sh /work/kafka/server.properties
cat /work/kafka/server.properties
"""


@pytest.mark.timeout(180)
def test_recipes_write_the_right_configs(container: Container, tools: list[dict[str, object]]) -> None:
    proc = container(CONFIGS, tools)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == [
        "myid=1",
        "tickTime=2000",
        "dataDir=/work/zk",
        "clientPort=2181",
        "initLimit=10",
        "syncLimit=5",
        "server.1=s4-1:2888:3888",
        "server.2=s4-2:2888:3888",
        "server.3=s4-3:2888:3888",
        "etcd: --name s4-1 --initial-advertise-peer-urls http://s4-1:2380 --initial-cluster"
        " s4-1=http://s4-1:2380,s4-2=http://s4-2:2380,s4-3=http://s4-3:2380 --initial-cluster-state new"
        " --initial-cluster-token s4-test1",
        "broker.id=1",
        "advertised.listeners=PLAINTEXT://s4-1:9092",
        "broker.rack=a",
    ], out


WAIT = r"""
export PATH=/opt/metafs:$PATH
sh /opt/metafs/wait-for-peers.sh 60 -- sh -c 'echo "peers: $(ls /meta/service/all_hosts | wc -l)"'
"""


@pytest.mark.timeout(180)
def test_a_start_script_waits_for_its_peers_without_sleeping(
    loaded: httpx.Client, container: Container, tools: list[dict[str, object]]
) -> None:
    unit = loaded.get(f"/v1/accounts/5/stacks/test1/services/s4/units/{ZK3}", params={"format": "json"})
    assert unit.status_code == 200
    assert loaded.delete(f"/v1/kv/5/test1/s4/{ZK3}").status_code == 200  # 2 of 3 units left
    proc = container(WAIT, tools)
    assert proc.stderr is not None and proc.stdout is not None
    assert proc.stderr.readline() == "wait-for-peers: 2 of 3 peers; waiting for a change\n"
    time.sleep(1.0)
    assert proc.poll() is None, "it gave up or went on before the third peer existed"
    put = loaded.put(
        f"/v1/accounts/5/stacks/test1/services/s4/units/{ZK3}",
        content=unit.content,
        headers={"Content-Type": "application/json"},
    )
    assert put.status_code == 200, put.text
    added = time.monotonic()
    out, err = proc.communicate(timeout=30)
    took = time.monotonic() - added
    assert proc.returncode == 0, err
    assert out == "peers: 3\n"
    assert err == "wait-for-peers: all 3 peers are here\n", err  # one wait, no polling loop
    assert took < 5, f"the script went on {took:.1f}s after the third peer was added"
