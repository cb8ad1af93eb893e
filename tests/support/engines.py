"""Docker and Podman for the tests, each on a private root under a temporary directory:
dockerd started by hand (its own socket, data and exec roots, no iptables, no bridge)
and stopped after; Podman with its own storage. The image is made offline from
busybox-static (``docker import`` / ``podman import``). Every container is removed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .containers import make_rootfs
from .servers import ended

IMAGE = "localhost/metafs-bb"
Completed = subprocess.CompletedProcess[str]
#: what Podman needs on these machines (else "error setting rlimit type 7")
PODMAN_LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024")
DOCKER = "/usr/bin/docker"  # Debian's client, of the same version as its dockerd


@dataclass
class Engine:
    """One container engine: the command prefix that reaches it, and what it started."""

    name: str
    base: list[str]
    run_extra: tuple[str, ...] = ()
    started: list[str] = field(default_factory=list)

    def command(self, *args: str) -> list[str]:
        return [*self.base, *args]

    def run_command(self, options: Sequence[str], script: str) -> list[str]:
        """``ENGINE run`` of ``script`` as uid 1000, with no network, named for cleanup."""
        name = f"metafs-{self.name}-{uuid.uuid4().hex[:8]}"
        self.started.append(name)
        return self.command(
            "run", "--rm", "--name", name, "--network", "none", "--user", "1000:1000",
            *self.run_extra, *options, IMAGE, "/bin/sh", "-c", script,
        )  # fmt: skip

    def popen(self, options: Sequence[str], script: str) -> subprocess.Popen[str]:
        cmd = self.run_command(options, script)
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, options: Sequence[str], script: str, timeout: float = 60) -> Completed:
        cmd = self.run_command(options, script)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def remove_started(self) -> None:
        for name in self.started:
            subprocess.run(self.command("rm", "-f", name), capture_output=True, timeout=30, check=False)
        self.started.clear()


def unusable(engine: str) -> str | None:
    """Why ``engine`` cannot run here, or None."""
    exe = {"docker": "dockerd", "podman": "podman"}[engine]
    if shutil.which(exe) is None:
        return f"{exe} is not installed (apt-get install {'docker.io' if engine == 'docker' else 'podman'})"
    if not Path("/bin/busybox").exists():
        return "busybox-static is not installed"
    return None


def _import(engine: Engine, root: Path) -> None:
    """The busybox image, made offline: a tarball of :func:`make_rootfs` imported."""
    rootfs = make_rootfs(root / "rootfs")
    tarball = subprocess.run(["tar", "-C", str(rootfs), "-c", "."], capture_output=True, check=True).stdout
    subprocess.run(engine.command("import", "-", IMAGE), input=tarball, capture_output=True, check=True)


@contextmanager
def dockerd(config: Path | None = None) -> Iterator[Engine]:
    """A dockerd of its own (``config``: its daemon.json), the image imported; stopped,
    with whatever it mounted, on exit. Its root is a short directory under /tmp: the
    socket paths containerd makes under it must fit in 108 bytes."""
    root = Path(tempfile.mkdtemp(prefix="metafs-dockerd-", dir="/tmp"))
    sock = root / "docker.sock"
    cmd = ["dockerd", "--data-root", str(root / "data"), "--exec-root", str(root / "exec")]
    cmd += ["-H", f"unix://{sock}", "--pidfile", str(root / "docker.pid")]
    cmd += ["--iptables=false", "--bridge=none"]
    cmd += ["--config-file", str(config)] if config else []
    log = (root / "dockerd.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log)
    engine = Engine("docker", [DOCKER, "-H", f"unix://{sock}"])
    try:
        deadline = time.monotonic() + 30
        while subprocess.run(engine.command("version"), capture_output=True, check=False).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {(root / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.1)
        _import(engine, root)
        yield engine
    finally:
        engine.remove_started()
        ended(proc, 30)
        log.close()
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def podman(hooks_dir: Path | None = None) -> Iterator[Engine]:
    """Podman on storage of its own (``hooks_dir``: its hooks.d), removed on exit. Its
    root is a short directory under /tmp: Podman refuses a runroot over 50 bytes."""
    root = Path(tempfile.mkdtemp(prefix="metafs-podman-", dir="/tmp"))
    base = ["podman", "--root", str(root / "storage"), "--runroot", str(root / "run")]
    base += ["--tmpdir", str(root / "tmp"), "--cgroup-manager", "cgroupfs", "--events-backend", "file"]
    base += ["--hooks-dir", str(hooks_dir)] if hooks_dir else []
    engine = Engine("podman", base, PODMAN_LIMITS)
    try:
        _import(engine, root)
        yield engine
    finally:
        engine.remove_started()
        reset = engine.command("system", "reset", "--force")
        subprocess.run(reset, capture_output=True, timeout=60, check=False)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(str(root))), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
