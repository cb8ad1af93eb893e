"""Real `metafs serve` processes on loopback over real SQLite files, the example's names,
and the real `metafs` command line."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "contrib" / "examples" / "cluster.yaml"
ZK1 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf115"
ZK1_PATH = f"5/test1/s4/{ZK1}"
OPERATOR_TOKEN = "mfs_operator_test-operator-token-for-the-suite"
HEADERS = {"Metadata-Flavor": "metafs", "Authorization": f"Bearer {OPERATOR_TOKEN}"}


def ended(proc: subprocess.Popen, grace: float = 10, sig: int = signal.SIGTERM) -> int:  # type: ignore[type-arg]
    """Stop ``proc``: ``sig``, then SIGKILL if it is not gone within ``grace`` seconds."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def metric(srv: ServerProcess, name: str) -> float:
    """The value of ``name`` (with its labels, if given: ``name{label="x"}``) in the
    server's ``/metrics``; no such line fails the test."""
    for line in httpx.get(f"{srv.url}/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no metric {name}")


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
    fd_limit: int | None = None  # soft and hard RLIMIT_NOFILE of the process (as a tight host has)
    #: TLS: the CA that signed the server's certificate (then the URL is https), and a
    #: client certificate and key for its health check when it wants one
    ca: Path | None = None
    client_cert: tuple[Path, Path] | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx verifies this server with (``verify=``)."""
        if self.ca is None:
            return True
        ctx = ssl.create_default_context(cafile=self.ca)
        if self.client_cert:
            ctx.load_cert_chain(*self.client_cert)
        return ctx

    def start(self, *extra: str) -> ServerProcess:
        cmd = [sys.executable, "-m", "metafs.cli", "serve", "--listen", f"127.0.0.1:{self.port}"]
        cmd += ["--store", self.store or f"sqlite://{self.db}", "--log-level", "warning", *extra]
        env = {**os.environ, "METAFS_OPERATOR_TOKEN": OPERATOR_TOKEN}
        limit = self.fd_limit
        limited = (
            None if limit is None else lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
        )
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, preexec_fn=limited)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"metafs serve exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1, verify=self.verify()).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("metafs serve did not become healthy within 15 s")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        code = ended(self.proc, 10, sig)
        self.proc = None
        return code


@contextlib.contextmanager
def example_server(db: Path, *extra: str) -> Iterator[ServerProcess]:
    """A server over ``db`` with the example world loaded, stopped on the way out."""
    s = ServerProcess(db).start(*extra)
    try:
        r = httpx.post(s.url + "/v1/load", content=EXAMPLE.read_bytes(), headers=HEADERS, timeout=10)
        assert r.status_code == 200, r.text
        yield s
    finally:
        s.stop()


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
