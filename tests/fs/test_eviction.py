"""The mount keeps what is shown, not what was ever read: idle views go after --view-ttl,
whole services go when the views pass --cache-size, inodes go when the kernel forgets
them, and whatever was dropped reads right again (changes made meanwhile included)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from metafs.mount.status import MountStatus
from tests.support.mounts import MakeMount, wait_for
from tests.support.servers import HEADERS, ZK1, ZK1_PATH, ServerProcess, cli

WEB1 = "3b1f2c9e-0001-4a6e-9d2b-5c1e8f000001"  # another service than ZK1's


def status(mountpoint: Path) -> MountStatus:
    r = cli("status", str(mountpoint), "--json")
    assert r.returncode == 0, r.stderr
    return MountStatus.from_json(json.loads(r.stdout))


def in_use(mountpoint: Path) -> int:
    st = os.statvfs(mountpoint)
    return st.f_files - st.f_ffree


@pytest.mark.timeout(60)
def test_idle_views_go_and_come_back_fresh(
    loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount
) -> None:
    m = make_mount(server.url, None, "--view-ttl", "2")  # past one `metafs status` (~0.35 s)
    hostname = m.path / ZK1 / "self" / "hostname"
    assert hostname.read_text() == "s4-1\n"
    assert status(m.path).views_cached >= 1
    wait_for(lambda: status(m.path).views_cached == 0, timeout=8)
    st = status(m.path)
    assert st.evictions >= 1 and st.views_bytes == 0
    # changed while nobody held the view: the next read fetches it, with the change
    r = httpx.put(f"{server.url}/v1/kv/{ZK1_PATH}/hostname", content="while-evicted", headers=HEADERS)
    assert r.status_code == 200
    assert hostname.read_text() == "while-evicted\n"
    assert status(m.path).views_cached >= 1


@pytest.mark.timeout(60)
def test_views_over_the_cache_size_go_a_service_at_a_time(
    loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount
) -> None:
    m = make_mount(server.url, None, "--cache-size", "1")  # room for the service used last only
    assert (m.path / ZK1 / "self" / "hostname").read_text() == "s4-1\n"
    assert (m.path / WEB1 / "self" / "hostname").read_text() == "web-1\n"
    st = status(m.path)
    assert st.views_cached == 1 and st.evictions == 1
    assert (m.path / ZK1 / "self" / "hostname").read_text() == "s4-1\n"  # back, right
    assert status(m.path).evictions == 2


@pytest.mark.timeout(60)
def test_inodes_are_what_the_kernel_holds(
    loaded: httpx.Client, server: ServerProcess, make_mount: MakeMount
) -> None:
    m = make_mount(server.url)
    start = in_use(m.path)
    hostname = m.path / ZK1 / "self" / "hostname"
    fd = os.open(hostname, os.O_RDONLY)  # held by the kernel while open
    try:
        ino = os.fstat(fd).st_ino
        r = httpx.put(f"{server.url}/v1/kv/{ZK1_PATH}/hostname", content="renamed", headers=HEADERS)
        assert r.status_code == 200
        wait_for(lambda: hostname.read_text() == "renamed\n")
        # the value changed, its attributes were invalidated: the number stays
        assert hostname.stat().st_ino == ino == os.fstat(fd).st_ino
    finally:
        os.close(fd)
    for unit in os.listdir(m.path):
        for name in os.listdir(m.path / unit / "self"):
            (m.path / unit / "self" / name).stat()
    held = in_use(m.path)
    assert held > start + 9 * 10
    assert status(m.path).inodes == held
    Path("/proc/sys/vm/drop_caches").write_text("2")  # the kernel forgets what it can
    wait_for(lambda: in_use(m.path) <= start + 2, timeout=5)
    assert hostname.read_text() == "renamed\n"  # looked up again after the forget: right
