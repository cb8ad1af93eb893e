"""A real etcd cluster on loopback for the tests: N `etcd` processes, temporary data dirs."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.servers import free_port

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


@dataclass
class Member:
    name: str
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def client_url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def status(self) -> dict[str, Any] | None:
        try:
            r = httpx.post(self.client_url + "/v3/maintenance/status", json={}, timeout=1)
            return dict(r.json()) if r.status_code == 200 else None
        except httpx.HTTPError:
            return None


@dataclass
class EtcdCluster:
    """``size`` members, quick elections (50 ms heartbeats), room for bulk loads."""

    base: Path
    size: int = 3
    members: list[Member] = field(default_factory=list)
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        self.members = [Member(f"m{i}") for i in range(self.size)]

    @property
    def endpoints(self) -> str:
        """``host:port,host:port,...`` of the members, for an ``etcd://`` URL."""
        return ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    def url(self, namespace: str | None = None) -> str:
        return f"etcd://{self.endpoints}/{namespace or 'ns-' + uuid.uuid4().hex[:8]}"

    def start(self) -> EtcdCluster:
        for m in self.members:
            self._launch(m, new=True)
        self.wait_healthy()
        return self

    def _launch(self, m: Member, new: bool) -> None:
        initial = ",".join(f"{x.name}={x.peer_url}" for x in self.members)
        cmd = [
            ETCD,
            f"--name={m.name}",
            f"--data-dir={self.base / m.name}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={initial}",
            f"--initial-cluster-token={self.token}",
            f"--initial-cluster-state={'new' if new else 'existing'}",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--max-txn-ops=1000000",
            "--max-request-bytes=67108864",
            "--log-level=error",
            "--logger=zap",
        ]
        log = open(self.base / f"{m.name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        m.proc = subprocess.Popen(cmd, stdout=log, stderr=log)
        log.close()

    def wait_healthy(self, timeout: float = 20) -> None:
        """Until every running member answers and one of them is leader."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            running = [m for m in self.members if m.proc and m.proc.poll() is None]
            statuses = [m.status() for m in running]
            if running and all(statuses) and any(s and s.get("leader") not in (None, "0") for s in statuses):
                return
            time.sleep(0.1)
        raise RuntimeError(f"etcd cluster not healthy within {timeout}s; logs in {self.base}")

    def leader(self) -> Member:
        for m in self.members:
            st = m.status()
            if st and st.get("leader") == st["header"]["member_id"]:
                return m
        raise RuntimeError("no etcd leader")

    def kill(self, m: Member) -> None:
        assert m.proc is not None
        m.proc.kill()
        m.proc.wait(10)

    def restart(self, m: Member) -> None:
        self._launch(m, new=False)

    def stop(self) -> None:
        """SIGKILL every member (their data dirs are temporary; a member without quorum
        can take seconds to stop on SIGTERM)."""
        for m in self.members:
            if m.proc and m.proc.poll() is None:
                m.proc.kill()
        for m in self.members:
            if m.proc:
                m.proc.wait(10)
