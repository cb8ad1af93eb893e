"""What the bench runs its workloads against: servers, mounts (the real one and the
page-cache variant), the C and pyfuse3 hello filesystems, an etcd member; each torn
down on exit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.mounts import daemon_pids
from tests.support.servers import OPERATOR_TOKEN, ROOT, ServerProcess, cli, free_port


@contextmanager
def server(tmp: Path, *extra: str) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp / f"bench-{free_port()}.db").start(*extra)
    try:
        yield srv
    finally:
        srv.stop()


@contextmanager
def mount(
    srv: ServerProcess, path: Path, unit: str | None = None, token: str | None = None
) -> Iterator[Path]:
    """The real mount of ``srv`` at ``path`` (host mode unless ``unit``), with the
    operator token unless ``token``, trusting the server's CA if it has one."""
    path.mkdir(parents=True, exist_ok=True)
    args = ["mount", str(path), "--server", srv.url, "--log-file", str(path.parent / f"{path.name}.log")]
    if unit:
        args += ["--unit", unit]
    env = {"METAFS_TOKEN": token} if token else {}
    if srv.ca:
        env["METAFS_CA_FILE"] = str(srv.ca)
    r = cli(*args, env=env or None)
    assert r.returncode == 0, r.stderr
    try:
        yield path
    finally:
        cli("umount", str(path))
        subprocess.run([str(ROOT / "tests" / "unmount-all.sh"), str(path)], check=False)


def daemon_pid(path: Path) -> int:

    (pid,) = daemon_pids(path)
    return pid


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def hello_ll(tmp: Path) -> Iterator[Path]:
    """libfuse's own minimal low-level example, compiled now: the floor of a FUSE
    filesystem that implements open."""
    src = Path("/usr/share/doc/libfuse3-dev/examples/hello_ll.c")
    exe = tmp / "hello_ll"
    flags = subprocess.run(
        ["pkg-config", "fuse3", "--cflags", "--libs"], capture_output=True, text=True, check=True
    ).stdout.split()
    subprocess.run(["gcc", "-O2", "-Wall", str(src), *flags, "-o", str(exe)], check=True)
    mnt = tmp / "hello"
    mnt.mkdir(exist_ok=True)  # mounted again by a later section
    subprocess.run([str(exe), str(mnt)], check=True)  # daemonizes once mounted
    try:
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)


@contextmanager
def hello_pyfuse3(tmp: Path, *flags: str) -> Iterator[Path]:
    """The same example in pyfuse3 + trio (``hello_pyfuse3.py``): what the toolkit metafs
    is built on costs per request, with nothing of metafs in it."""
    mnt = tmp / f"hello-py{''.join(flags)}"
    mnt.mkdir()
    script = str(Path(__file__).with_name("hello_pyfuse3.py"))
    proc = subprocess.Popen([sys.executable, script, str(mnt), *flags])
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(mnt):
            assert proc.poll() is None and time.monotonic() < deadline, "hello_pyfuse3 did not mount"
            time.sleep(0.02)
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)


@contextmanager
def pagecache_mount(srv: ServerProcess, path: Path, unit: str) -> Iterator[Path]:
    """The mount daemon with files in the page cache (``pagecache_mount.py``; not shipped)."""
    path.mkdir(parents=True, exist_ok=True)
    log = path.parent / f"{path.name}.log"
    script = str(Path(__file__).with_name("pagecache_mount.py"))
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, script, str(path), "--server", srv.url, "--unit", unit, "--log-file", str(log)],
            stdout=out,
            stderr=out,
            cwd=ROOT,
            env={**os.environ, "METAFS_TOKEN": OPERATOR_TOKEN},
        )
    try:
        deadline = time.monotonic() + 10
        while not os.path.ismount(path):
            assert proc.poll() is None and time.monotonic() < deadline, f"page-cache mount failed: see {log}"
            time.sleep(0.02)
        yield path
    finally:
        cli("umount", str(path))
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run([str(ROOT / "tests" / "unmount-all.sh"), str(path)], check=False)


@contextmanager
def etcd(tmp: Path) -> Iterator[str]:
    client, peer = free_port(), free_port()
    url = f"http://127.0.0.1:{client}"
    proc = subprocess.Popen(
        [
            "etcd",
            "--data-dir",
            str(tmp / "etcd"),
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--listen-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls",
            f"http://127.0.0.1:{peer}",
            "--initial-cluster",
            f"default=http://127.0.0.1:{peer}",
            "--log-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
