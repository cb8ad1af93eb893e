"""Fixtures: real `metafs serve` processes on loopback over real SQLite files, real
mounts, a real etcd cluster, real runc containers; every one torn down. The helpers they
are made of live in ``tests/support/``. Each test directory is a pytest marker
(``pytest -m fs``, ``-m "not containers"``)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.support.containers import make_bundle, runc_unusable
from tests.support.mounts import Mount, mounted
from tests.support.servers import EXAMPLE, HEADERS, ZK1, ServerProcess

if TYPE_CHECKING:
    from tests.support.etcd_cluster import EtcdCluster

#: the test directories, each a marker of its own
AREAS = ("unit", "api", "fs", "cluster", "containers", "docs", "ui")


def pytest_configure(config: pytest.Config) -> None:
    for area in AREAS:
        config.addinivalue_line("markers", f"{area}: the tests in tests/{area}/")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        area = item.path.parent.name
        if area in AREAS:
            item.add_marker(getattr(pytest.mark, area))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp_path / "metafs.db").start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers=HEADERS, timeout=10) as c:
        yield c


@pytest.fixture
def loaded(http: httpx.Client) -> httpx.Client:
    r = http.post("/v1/load", content=EXAMPLE.read_bytes(), headers={"Content-Type": "application/yaml"})
    assert r.status_code == 200, r.text
    return http


@pytest.fixture
def make_mount(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    mounts: list[Mount] = []

    def make(server: str, unit: str | None = None, *extra: str, name: str = "mnt") -> Mount:
        path = tmp_path / name
        path.mkdir(exist_ok=True)
        m = Mount(path, server, tmp_path / f"{name}.log", unit, extra)
        mounts.append(m)
        return m.start()

    try:
        yield make
    finally:
        for m in mounts:
            m.stop()
            assert not mounted(m.path), f"{m.path} still mounted after teardown"


@pytest.fixture(scope="session")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    """One 3-member etcd cluster for the session; each user takes its own namespace
    (tests that kill members start a cluster of their own)."""
    from tests.support.etcd_cluster import EtcdCluster

    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    try:
        yield cluster.start()
    finally:
        cluster.stop()


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


@pytest.fixture
def container(
    loaded: httpx.Client, server: ServerProcess, make_mount: Callable[..., Mount], tmp_path: Path
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start a runc container running a script, with unit ZK1's directory of a host-mode
    mount at /meta; deleted afterwards."""
    if reason := runc_unusable():
        pytest.skip(reason)
    m = make_mount(server.url)
    started: list[tuple[str, subprocess.Popen[str]]] = []

    def run(script: str, mounts: Sequence[dict[str, object]] = ()) -> subprocess.Popen[str]:
        bundle = make_bundle(tmp_path / f"bundle{len(started)}", m.path / ZK1, script, mounts)
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
