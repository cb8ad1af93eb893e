"""Fixtures: real `metafs serve` processes on loopback over real SQLite files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.containers import make_bundle, runc_unusable

if TYPE_CHECKING:
    from tests.etcd_cluster import EtcdCluster

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "contrib" / "examples" / "cluster.yaml"
ZK1 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf115"
ZK1_PATH = f"5/test1/s4/{ZK1}"
OPERATOR_TOKEN = "mfs_operator_test-operator-token-for-the-suite"
HEADERS = {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {OPERATOR_TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    """One `metafs serve` child process; restartable on the same store and port."""

    db: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    store: str | None = None  # a store URL other than ``sqlite://<db>`` (etcd://...)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> ServerProcess:
        cmd = [sys.executable, "-m", "metafs.cli", "serve", "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--store", self.store or f"sqlite://{self.db}", "--log-level", "warning", *extra]
        env = {**os.environ, "METAFS_OPERATOR_TOKEN": OPERATOR_TOKEN}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"metafs serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("metafs serve did not become healthy within 15 s")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        code = self.proc.returncode
        self.proc = None
        return code


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


def cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run the real `metafs` command line."""
    drop = ("METADATA_CONNECTION_URL", "DEPLOYMENT_UNIT_ID", "METAFS_TOKEN", "METAFS_TOKEN_FILE")
    full_env = {k: v for k, v in os.environ.items() if k not in drop}
    full_env["METAFS_TOKEN"] = OPERATOR_TOKEN
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "metafs.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )


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
    from tests.etcd_cluster import EtcdCluster

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
