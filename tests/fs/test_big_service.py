"""A service bigger than the peers sent inline (metafs/catalog/peers.py): through a real
mount, a start script's reads of ``self/`` and ``service/`` scalars do not pull the
peers; the first listing of ``all_hosts/`` brings all of them in one fetch; a change
to one peer, and a deleted peer, reach the mount as they would for a small service."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from metafs.mount.status import MountStatus
from tests.support.churn import service
from tests.support.mounts import MakeMount, wait_for
from tests.support.servers import ServerProcess, cli

UNITS = 300
ME, PEER, GONE = "big-0000", "big-0007", "big-0150"


def status(mountpoint: Path) -> MountStatus:
    r = cli("status", str(mountpoint), "--json")
    assert r.returncode == 0, r.stderr
    return MountStatus.from_json(json.loads(r.stdout))


@pytest.fixture
def big(http: httpx.Client) -> httpx.Client:
    http.post("/v1/load", json=service("big", UNITS, {})).raise_for_status()
    return http


def read(path: Path) -> str:
    return path.read_text().rstrip("\n")


@pytest.mark.timeout(90)
def test_unit_mode_reads_its_own_data_first_and_the_peers_on_demand(
    big: httpx.Client, server: ServerProcess, make_mount: MakeMount
) -> None:
    m = make_mount(server.url, f"7/churn/big/{ME}")
    assert read(m.path / "self" / "cardinal_value") == "0"
    assert read(m.path / "service" / "scale") == str(UNITS)
    lazy = status(m.path)
    assert lazy.fetches == 1 and lazy.views_bytes < 20_000, lazy
    hosts = m.path / "service" / "all_hosts"
    assert sorted(os.listdir(hosts)) == [f"big-{i:04d}" for i in range(UNITS)]
    assert read(hosts / PEER / "hostname") == "big-7"
    loaded = status(m.path)
    assert loaded.fetches == 2 and loaded.views_bytes > 10 * lazy.views_bytes, loaded
    # one peer changes, another goes: both reach the mount, the rest stays as it was
    assert big.put(f"/v1/kv/7/churn/big/{PEER}/hostname", content="moved-on").status_code == 200
    assert big.delete(f"/v1/kv/7/churn/big/{GONE}").status_code == 200
    wait_for(lambda: read(hosts / PEER / "hostname") == "moved-on", timeout=10)
    wait_for(lambda: not (hosts / GONE).exists(), timeout=10)
    assert len(os.listdir(hosts)) == UNITS - 1
    assert read(hosts / "big-0299" / "hostname") == "big-299"
    assert read(m.path / "self" / "hostname") == "big-0"


@pytest.mark.timeout(90)
def test_host_mode_fetches_a_service_once_for_all_its_units(
    big: httpx.Client, server: ServerProcess, make_mount: MakeMount
) -> None:
    m = make_mount(server.url)
    wait_for(lambda: len(os.listdir(m.path)) == UNITS, timeout=10)
    assert read(m.path / ME / "self" / "hostname") == "big-0"
    first = status(m.path).fetches
    # every other unit of the service: one more fetch (the peers), not one per unit
    for i in range(1, UNITS, 7):
        assert read(m.path / f"big-{i:04d}" / "self" / "cardinal_value") == str(i)
    assert status(m.path).fetches - first <= 2
    assert big.put(f"/v1/kv/7/churn/big/{PEER}/hostname", content="moved-on").status_code == 200
    wait_for(lambda: read(m.path / PEER / "self" / "hostname") == "moved-on", timeout=10)
    seen_by_me = m.path / ME / "service" / "all_hosts" / PEER / "hostname"
    wait_for(lambda: read(seen_by_me) == "moved-on", timeout=10)


@pytest.mark.timeout(90)
def test_host_mode_with_a_few_units_of_a_big_service_fetches_each_on_its_own(
    http: httpx.Client, server: ServerProcess, make_mount: MakeMount
) -> None:
    """10 units of a 300-unit service on this host: 10 small fetches, not every peer (the
    bulk pays only for a service of at most 3 units per unit here); its peers still come
    in one fetch when listed, and changes reach every view."""
    local = [f"big-{i:04d}" for i in range(0, UNITS, 30)]
    elsewhere = {f"big-{i:04d}": "node-b" for i in range(UNITS)} | dict.fromkeys(local, "node-a")
    http.post("/v1/load", json=service("big", UNITS, elsewhere)).raise_for_status()
    token = http.post("/v1/tokens/", json={"kind": "host", "subject": "node-a"}).json()["token"]
    m = make_mount(server.url, None, "--token", token)
    wait_for(lambda: sorted(os.listdir(m.path)) == local, timeout=10)
    for uid in local:
        assert read(m.path / uid / "self" / "hostname") == f"big-{int(uid[4:])}"
    st = status(m.path)
    assert st.fetches == len(local) and st.views_bytes < 150_000, st
    hosts = m.path / local[0] / "service" / "all_hosts"
    assert len(os.listdir(hosts)) == UNITS
    assert status(m.path).fetches == len(local) + 1
    assert http.put(f"/v1/kv/7/churn/big/{local[3]}/hostname", content="moved-on").status_code == 200
    wait_for(lambda: read(m.path / local[3] / "self" / "hostname") == "moved-on", timeout=10)
    wait_for(lambda: read(hosts / local[3] / "hostname") == "moved-on", timeout=10)
    assert read(m.path / local[5] / "self" / "hostname") == "big-150"
