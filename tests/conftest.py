"""Fixtures: real `metafs serve` processes on loopback over real SQLite files."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "contrib" / "examples" / "cluster.yaml"
ZK1 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf115"
ZK1_PATH = f"5/test1/s4/{ZK1}"
HEADERS = {"Metadata-Flavor": "metafs"}


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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *extra: str) -> ServerProcess:
        cmd = [sys.executable, "-m", "metafs.cli", "serve", "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--store", f"sqlite://{self.db}", "--log-level", "warning", *extra]
        self.proc = subprocess.Popen(cmd, cwd=ROOT)
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
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("METADATA_CONNECTION_URL", "DEPLOYMENT_UNIT_ID")
    }
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "metafs.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=ROOT,
        timeout=timeout,
    )
