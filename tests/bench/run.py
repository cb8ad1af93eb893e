"""`make bench`: metafs measured side by side with its baselines, in one run.

Every figure is a median over repeated rounds with its spread (min..max of the round
medians), next to a baseline measured in the same run, and the ratio. Prints one table
and writes the figures as JSON (bench-results/bench.json). Real server, real mounts, real
etcd, real wrk; loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.conftest import EXAMPLE, HEADERS, OPERATOR_TOKEN, ServerProcess, cli, free_port  # noqa: E402

ZK1 = "f58ce48e-a4d5-4c1b-905f-ee3b15ccf115"
QUICK = os.environ.get("METAFS_BENCH_QUICK") == "1"


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    spread: tuple[float, float]
    baseline_name: str = ""
    baseline: float | None = None
    goal: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.baseline in (None, 0):
            return None
        return self.value / self.baseline


FIGURES: list[Figure] = []
#: a median and its spread (min, max)
Sample = tuple[float, tuple[float, float]]


def rounds(op: Callable[[], object], n: int, r: int = 7) -> Sample:
    """Median per-operation time in µs over ``r`` rounds of ``n`` calls, and the spread."""
    for _ in range(max(n // 10, 3)):  # warm up
        op()
    meds = []
    for _ in range(r):
        t0 = time.perf_counter()
        for _ in range(n):
            op()
        meds.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(meds), (min(meds), max(meds))


def record(
    section: str,
    name: str,
    value: Sample,
    unit: str,
    baseline: tuple[str, float] | None = None,
    goal: str = "",
    **extra: Any,
) -> None:
    fig = Figure(
        section,
        name,
        round(value[0], 2),
        unit,
        (round(value[1][0], 2), round(value[1][1], 2)),
        goal=goal,
        extra=extra,
    )
    if baseline:
        fig.baseline_name, fig.baseline = baseline[0], round(baseline[1], 2)
    FIGURES.append(fig)
    ratio = f"{fig.ratio:.2f}x {fig.baseline_name}" if fig.ratio else ""
    print(f"  {section:<12} {name:<44} {fig.value:>12.2f} {unit:<6} {ratio}", flush=True)


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


# -- processes ------------------------------------------------------------------------


@contextmanager
def server(tmp: Path, *extra: str) -> Iterator[ServerProcess]:
    srv = ServerProcess(tmp / f"bench-{free_port()}.db").start(*extra)
    try:
        yield srv
    finally:
        srv.stop()


@contextmanager
def mount(srv: ServerProcess, path: Path, unit: str | None = None) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    args = ["mount", str(path), "--server", srv.url, "--log-file", str(path.parent / f"{path.name}.log")]
    if unit:
        args += ["--unit", unit]
    r = cli(*args)
    assert r.returncode == 0, r.stderr
    try:
        yield path
    finally:
        cli("umount", str(path))
        subprocess.run([str(ROOT / "tests" / "unmount-all.sh"), str(path)], check=False)


def daemon_pid(path: Path) -> int:
    from tests.conftest import daemon_pids

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


def big_service(units: int, name: str = "big", host: str = "node-a") -> dict[str, Any]:
    return {
        "accounts": {
            "9": {
                "stacks": {
                    "bench": {
                        "services": {
                            name: {
                                "service_domain": f"{name}.bench",
                                "units": {
                                    f"{name}-{i:05d}": {
                                        "cardinal_value": i,
                                        "hostname": f"{name}-{i}",
                                        "virt_ip_address": f"10.9.{i // 250}.{i % 250}",
                                        "ports": ["80/tcp"],
                                        "image": "nginx",
                                        "host": host,
                                    }
                                    for i in range(units)
                                },
                            }
                        }
                    }
                }
            }
        }
    }


# -- 1. warm reads -------------------------------------------------------------------


def read_file(path: Path) -> Callable[[], bytes]:
    p = str(path)

    def op() -> bytes:
        fd = os.open(p, os.O_RDONLY)
        data = os.read(fd, 4096)
        os.close(fd)
        return data

    return op


def pread_vs_tmpfs(path: Path, tmpfs: Path, n: int) -> tuple[Sample, float]:
    """``pread`` on an open fd of ``path``, and the median of the same on ``tmpfs``."""
    fd, tfd = os.open(path, os.O_RDONLY), os.open(tmpfs, os.O_RDONLY)
    try:
        return rounds(lambda: os.pread(fd, 4096, 0), n), rounds(lambda: os.pread(tfd, 4096, 0), n)[0]
    finally:
        os.close(fd)
        os.close(tfd)


def bench_warm(tmp: Path, srv: ServerProcess) -> None:
    print("warm reads (µs per operation)")
    n = 200 if QUICK else 1000
    with (
        mount(srv, tmp / "warm", "9/bench/big/big-00000") as m,
        hello_ll(tmp) as hello,
        hello_pyfuse3(tmp) as hello_py,
        hello_pyfuse3(tmp, "--direct-io") as hello_py_dio,
    ):
        f = m / "self" / "hostname"
        assert f.read_text() == "big-0\n"
        shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            t = shm / "hostname"
            t.write_text("big-0\n")
            (shm / "all_hosts").mkdir()
            for i in range(100):
                (shm / "all_hosts" / f"big-{i:05d}").mkdir()
            tmpfs_read = rounds(read_file(t), n)
            hello_read = rounds(read_file(hello / "hello"), n)
            hello_py_read = rounds(read_file(hello_py / "hello"), n)
            hello_dio_read = rounds(read_file(hello_py_dio / "hello"), n)
            ours = rounds(read_file(f), n)
            record(
                "warm read",
                "open+read+close self/hostname",
                ours,
                "µs",
                ("hello_ll", hello_read[0]),
                goal="<= 1.5x hello_ll",
            )
            record("warm read", "open+read+close on tmpfs", tmpfs_read, "µs")
            record(
                "warm read", "open+read+close /hello of hello_ll", hello_read, "µs", ("tmpfs", tmpfs_read[0])
            )
            record(
                "warm read",
                "the same hello in pyfuse3",
                hello_py_read,
                "µs",
                ("hello_ll", hello_read[0]),
            )
            record(
                "warm read",
                "the same hello in pyfuse3, direct_io",
                hello_dio_read,
                "µs",
                ("hello_ll", hello_read[0]),
            )
            record(
                "warm read",
                "self/hostname against pyfuse3 hello, direct_io",
                ours,
                "µs",
                ("hello_pyfuse3 direct_io", hello_dio_read[0]),
            )
            record(
                "warm read",
                "stat self/hostname",
                rounds(lambda: os.stat(f), n * 5),
                "µs",
                ("tmpfs", rounds(lambda: os.stat(t), n * 5)[0]),
                goal="<= 1.2x tmpfs",
            )
            ours_pread, tmpfs_pread = pread_vs_tmpfs(f, t, n * 5)
            record(
                "warm read",
                "pread on an open fd",
                ours_pread,
                "µs",
                ("tmpfs", tmpfs_pread),
                goal="<= 1.2x tmpfs",
            )
            record(
                "warm read",
                "Python open().read()",
                rounds(lambda: f.read_bytes(), n),
                "µs",
                ("tmpfs", rounds(lambda: t.read_bytes(), n)[0]),
            )
            cat_ = rounds(lambda: subprocess.run(["cat", str(f)], stdout=subprocess.DEVNULL), 20, 5)
            record(
                "warm read",
                "cat as a process",
                cat_,
                "µs",
                (
                    "tmpfs",
                    rounds(lambda: subprocess.run(["cat", str(t)], stdout=subprocess.DEVNULL), 20, 5)[0],
                ),
            )
            ah = m / "service" / "all_hosts"
            assert len(os.listdir(ah)) == 100
            record(
                "warm read",
                "list all_hosts/ (100 units)",
                rounds(lambda: os.listdir(ah), n // 5),
                "µs",
                ("tmpfs", rounds(lambda: os.listdir(shm / "all_hosts"), n // 5)[0]),
            )
        finally:
            shutil.rmtree(shm)


# -- 1b. the page cache: what direct_io gives up, and why -----------------------------

#: values of very different lengths, so that most changes change the file's size
CHURN_VALUES = ["a", "b" * 40, "cc", "d" * 300, "e" * 7, "f" * 120, "g" * 3, "h" * 900]


def torn_reads(files: list[Path], change: Callable[[str], None], changes: int) -> tuple[int, int, list[str]]:
    """Readers on every file (open+read+close, and pread on a held fd) while ``changes``
    writes land; (torn reads, reads, a few torn ones): a read is torn when it is not a
    whole value."""
    whole = {f"{v}\n".encode() for v in CHURN_VALUES}
    stop = threading.Event()
    counts = {"torn": 0, "reads": 0}
    seen: list[str] = []
    lock = threading.Lock()

    def reader(path: Path, held: bool) -> None:
        torn = reads = 0
        fd = os.open(path, os.O_RDONLY) if held else -1
        try:
            while not stop.is_set():
                if held:
                    data = os.pread(fd, 4096, 0)
                else:
                    f = os.open(path, os.O_RDONLY)
                    data = os.read(f, 4096)
                    os.close(f)
                reads += 1
                if data not in whole:
                    torn += 1
                    if len(seen) < 5:
                        seen.append(f"{data[:12]!r}..({len(data)} bytes)")
        finally:
            if held:
                os.close(fd)
            with lock:
                counts["torn"] += torn
                counts["reads"] += reads

    threads = [threading.Thread(target=reader, args=(f, held)) for f in files for held in (False, True)]
    for t in threads:
        t.start()
    try:
        for i in range(changes):
            change(CHURN_VALUES[i % len(CHURN_VALUES)])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    return counts["torn"], counts["reads"], seen


def bench_page_cache(tmp: Path, srv: ServerProcess) -> None:
    """The same reads through a variant of the daemon that serves files from the page
    cache (not shipped), and reads racing changes of length through both."""
    print("the page cache instead of direct_io (a variant, not shipped)")
    n = 200 if QUICK else 1000
    key = "/v1/kv/9/bench/big/big-00001/labels/churn"
    httpx.put(srv.url + key, content=CHURN_VALUES[0], headers=HEADERS).raise_for_status()
    with (
        mount(srv, tmp / "shipped", "9/bench/big/big-00001") as real,
        pagecache_mount(srv, tmp / "paged", "9/bench/big/big-00001") as paged,
        hello_ll(tmp) as hello,
    ):
        f = paged / "self" / "hostname"
        assert f.read_text() == "big-1\n"
        shm = Path(tempfile.mkdtemp(dir="/dev/shm"))
        try:
            (shm / "hostname").write_text("big-1\n")
            record(
                "page cache",
                "open+read+close self/hostname (page cache)",
                rounds(read_file(f), n),
                "µs",
                ("hello_ll", rounds(read_file(hello / "hello"), n)[0]),
            )
            paged_pread, tmpfs_pread = pread_vs_tmpfs(f, shm / "hostname", n * 5)
            record(
                "page cache", "pread on an open fd (page cache)", paged_pread, "µs", ("tmpfs", tmpfs_pread)
            )
        finally:
            shutil.rmtree(shm)
        changes = 100 if QUICK else 400
        with httpx.Client(base_url=srv.url, headers=HEADERS) as c:

            def change(value: str) -> None:
                c.put(key, content=value).raise_for_status()

            for name, m in (("direct_io, shipped", real), ("page cache", paged)):
                churn = m / "self" / "labels" / "churn"
                torn, reads, seen = torn_reads([churn], change, changes)
                record(
                    "page cache",
                    f"torn reads during {changes} changes of length ({name})",
                    (torn, (torn, torn)),
                    f"of {reads}",
                    torn=seen,
                )
                print(f"    ({torn} torn of {reads} reads{': ' if seen else ''}{', '.join(seen)})")


# -- 2. cold reads -------------------------------------------------------------------


def bench_cold(tmp: Path, srv: ServerProcess) -> None:
    """The first read through a fresh mount, and a direct GET of the same key, each after
    the same pause, in turns: both then start with idle processes (a GET right after
    another costs a third of one after a pause on this VM; the back-to-back figure is
    shown too)."""
    print("cold reads (ms)")
    import requests

    n = 5 if QUICK else 15
    pause = 0.25
    first, direct = [], []
    zk = ["f58ce48e-a4d5-4c1b-905f-ee3b15ccf115", "f58ce48e-a4d5-4c1b-905f-ee3b15ccf117"]
    url = f"{srv.url}/v1/kv/5/test1/s4/{zk[0]}/hostname"

    def get() -> float:
        t0 = time.perf_counter()
        assert requests.get(url, headers=HEADERS, timeout=5).text == "s4-1\n"
        return (time.perf_counter() - t0) * 1e3

    for i in range(n):  # the example's ZooKeeper units: a service of 3
        with mount(srv, tmp / f"cold{i}", f"5/test1/s4/{zk[i % 2]}") as m:
            time.sleep(pause)
            t0 = time.perf_counter()
            data = read_file(m / "self" / "hostname")()
            first.append((time.perf_counter() - t0) * 1e3)
            assert data == f"s4-{i % 2 + 1}\n".encode()
            time.sleep(pause)
            direct.append(get())
    hot = [get() for _ in range(n * 3)]
    base = statistics.median(direct)
    record(
        "cold read",
        "first open+read+close of self/hostname after mount",
        (statistics.median(first), (min(first), max(first))),
        "ms",
        ("HTTP GET", base),
        goal="<= 2x HTTP GET",
    )
    record(
        "cold read", "direct HTTP GET (requests, new connection)", (base, (min(direct), max(direct))), "ms"
    )
    record(
        "cold read",
        "the same GET, back to back",
        (statistics.median(hot), (min(hot), max(hot))),
        "ms",
    )


# -- 3. change propagation ------------------------------------------------------------


def bench_propagation(tmp: Path, srv: ServerProcess) -> None:
    print("change propagation, 100 units mounted in host mode, 2 readers polling every 0.5 ms (ms)")
    n = 30 if QUICK else 100
    with mount(srv, tmp / "prop") as m:
        for i in range(100):
            assert (m / f"big-{i:05d}" / "self" / "hostname").exists()
        target = m / "big-00007" / "self" / "hostname"
        seen: dict[bytes, float] = {}
        stop = threading.Event()

        def reader() -> None:  # a start script polling its file every half millisecond
            op = read_file(target)
            while not stop.is_set():
                data = op()
                if data not in seen:
                    seen[data] = time.perf_counter()
                time.sleep(0.0005)

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        lat = []
        with httpx.Client(base_url=srv.url, headers=HEADERS) as c:
            for i in range(n):
                value = f"v{i}"
                t0 = time.perf_counter()
                c.put("/v1/kv/9/bench/big/big-00007/hostname", content=value)
                want = (value + "\n").encode()
                deadline = t0 + 5
                while want not in seen and time.perf_counter() < deadline:
                    time.sleep(0.0002)
                lat.append((seen.get(want, deadline) - t0) * 1e3)
        stop.set()
        for t in threads:
            t.join()
    for which, took, goal in (
        ("p50", statistics.median(lat), "<= 20 ms"),
        ("p99", pct(lat, 99), "<= 100 ms"),
    ):
        downward_api = ("downwardAPI ~60 s", 60_000.0)
        span = (min(lat), max(lat))
        record(
            "propagation", f"write -> new value read, {which}", (took, span), "ms", downward_api, goal=goal
        )


# -- 4. server throughput -------------------------------------------------------------


def wrk(url: str, conns: int, headers: dict[str, str], script: Path | None = None, seconds: int = 5) -> float:
    cmd = ["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{seconds}s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    assert m, out
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    assert not non2xx, f"{url}: {non2xx.group(0)}"
    return float(m.group(1))


def bench_throughput(tmp: Path, srv: ServerProcess) -> None:
    """wrk against metafs and etcd's JSON gateway, in turns, several runs each."""
    print("server throughput (requests/s, wrk)")
    if shutil.which("wrk") is None or shutil.which("etcd") is None:
        print("  skipped: wrk or etcd is not installed")
        return
    seconds, runs = (1, 2) if QUICK else (2, 3)

    def median_of(url: str, conns: int, headers: dict[str, str], script: Path | None = None) -> Sample:
        rates = [wrk(url, conns, headers, script, seconds) for _ in range(runs)]
        return statistics.median(rates), (min(rates), max(rates))

    with etcd(tmp) as etcd_url:
        key = base64.b64encode(b"/metafs/9/bench/big/big-00000/hostname").decode()
        httpx.post(
            etcd_url + "/v3/kv/put", json={"key": key, "value": base64.b64encode(b"big-0\n").decode()}
        ).raise_for_status()
        lua = tmp / "range.lua"
        body = json.dumps({"key": key})
        lua.write_text(
            f"wrk.method = 'POST'\nwrk.body = '{body}'\nwrk.headers['Content-Type'] = 'application/json'\n"
        )
        leaf_url = f"{srv.url}/v1/kv/9/bench/big/big-00000/hostname"
        for conns in (1, 16, 64):
            base = median_of(etcd_url + "/v3/kv/range", conns, {}, lua)
            record("throughput", f"etcd 3.4 gateway range, c={conns}", base, "req/s")
            targets = {
                "GET one key": leaf_url,
                "GET unit view (text, 100 peers)": f"{srv.url}/v1/view/big-00000/",
                "GET unit view (JSON, 100 peers)": f"{srv.url}/v1/view/big-00000/?format=json",
            }
            for name, url in targets.items():
                goal = ">= 1.0x etcd" if name == "GET one key" else ""
                record(
                    "throughput",
                    f"{name}, c={conns}",
                    median_of(url, conns, HEADERS),
                    "req/s",
                    ("etcd", base[0]),
                    goal=goal,
                )
        # every answer made anew: what the first read after each commit costs
        with server(tmp, "--log-level", "error", "--answer-cache", "0") as cold:
            httpx.post(cold.url + "/v1/load", json=big_service(100), headers=HEADERS).raise_for_status()
            record(
                "throughput",
                "GET one key, answers not reused (--answer-cache 0), c=16",
                median_of(leaf_url.replace(srv.url, cold.url), 16, HEADERS),
                "req/s",
                ("etcd", median_of(etcd_url + "/v3/kv/range", 16, {}, lua)[0]),
            )


# -- 5. long polls --------------------------------------------------------------------


async def _long_polls(url: str, n: int, index: int, write: Callable[[], None]) -> tuple[float, int]:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"GET /v1/view/big-00003/self/hostname?index={index}&wait=120s HTTP/1.1\r\nHost: {host}\r\n"
        f"Metadata-Flavor: metafs\r\nAuthorization: {HEADERS['Authorization']}\r\n\r\n"
    ).encode()
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for i in range(0, n, 500):
        batch = await asyncio.gather(
            *(asyncio.open_connection(host, int(port)) for _ in range(min(500, n - i)))
        )
        for _, w in batch:
            w.write(request)
        conns.extend(batch)
        await asyncio.sleep(0.05)
    await asyncio.sleep(3)  # let the server park every one of them
    answered = 0

    async def wait_one(r: asyncio.StreamReader) -> None:
        nonlocal answered
        head = await r.readuntil(b"\r\n\r\n")
        if head.startswith(b"HTTP/1.1 200"):
            answered += 1

    t0 = time.perf_counter()
    await asyncio.to_thread(write)
    await asyncio.wait_for(asyncio.gather(*(wait_one(r) for r, _ in conns)), 60)
    took = time.perf_counter() - t0
    for _, w in conns:
        w.close()
    return took, answered


def bench_long_polls(tmp: Path) -> None:
    n = 2_000 if QUICK else 10_000
    runs = 1 if QUICK else 3
    print(f"long polls: {n} waiting clients on one server ({runs} runs, a fresh server each)")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 2 * n + 1000)), hard))
    took, peaks, idles = [], [], []
    for _ in range(runs):
        with server(tmp, "--log-level", "error") as srv:
            httpx.post(srv.url + "/v1/load", json=big_service(10), headers=HEADERS).raise_for_status()
            assert srv.proc is not None
            idles.append(rss_mb(srv.proc.pid))
            index = int(
                httpx.get(f"{srv.url}/v1/view/big-00003/self/hostname", headers=HEADERS).headers[
                    "x-metafs-index"
                ]
            )

            def write() -> None:
                peaks.append(rss_mb(srv.proc.pid))  # type: ignore[union-attr]  # all parked now
                httpx.put(
                    f"{srv.url}/v1/kv/9/bench/big/big-00003/hostname", content="woken", headers=HEADERS
                ).raise_for_status()

            # the clients on uvloop too: the figure is the server's, not asyncio's parsing
            seconds, answered = uvloop.run(_long_polls(srv.url, n, index, write))
        assert answered == n, f"only {answered} of {n} long polls were answered"
        took.append(seconds * 1e3)
        print(f"    run: {seconds * 1e3:.0f} ms, {peaks[-1]:.1f} MB")
    floor, floor_rss = [], []
    for _ in range(runs):
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        script = str(Path(__file__).with_name("parked_floor.py"))
        proc = subprocess.Popen([sys.executable, script, str(port)])
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    httpx.get(url + "/healthz", timeout=1).raise_for_status()
                    break
                except httpx.TransportError:
                    assert proc.poll() is None and time.monotonic() < deadline, (
                        "parked_floor.py did not start"
                    )
                    time.sleep(0.05)

            def wake(proc: subprocess.Popen[bytes] = proc, url: str = url) -> None:
                floor_rss.append(rss_mb(proc.pid))
                httpx.put(url + "/", timeout=10).raise_for_status()

            seconds, answered = uvloop.run(_long_polls(url, n, 0, wake))
            assert answered == n, f"the floor app answered {answered} of {n}"
            floor.append(seconds * 1e3)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    record(
        "long polls",
        f"all {n} answered after one write",
        (statistics.median(took), (min(took), max(took))),
        "ms",
        ("bare uvicorn", statistics.median(floor)),
        goal="<= 1000 ms",
    )
    record(
        "long polls",
        f"the floor: a bare uvicorn app parking {n}, all answered",
        (statistics.median(floor), (min(floor), max(floor))),
        "ms",
        rss_mb=statistics.median(floor_rss),
    )
    record(
        "long polls",
        f"server RSS with {n} parked",
        (statistics.median(peaks), (min(peaks), max(peaks))),
        "MB",
        ("idle", statistics.median(idles)),
        goal="<= 300 MB",
    )


# -- 6. scale -------------------------------------------------------------------------


def scale_document(
    accounts: int = 10, services: int = 1000, per_service: int = 100, hosts: int = 100
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "hosts": {
            f"h{i:03d}": {"hostname": f"h{i:03d}.dc", "agent_ip": f"10.1.{i // 250}.{i % 250}"}
            for i in range(hosts)
        },
        "accounts": {},
    }
    n = 0
    for s in range(services):
        acc = doc["accounts"].setdefault(f"a{s % accounts}", {"stacks": {}})
        stack = acc["stacks"].setdefault(f"st{(s // accounts) % 10}", {"services": {}})
        units = {}
        for u in range(per_service):
            units[f"u{n:06d}"] = {
                "cardinal_value": u,
                "hostname": f"s{s}-{u}",
                "virt_ip_address": f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
                "ports": ["8080/tcp"],
                "image": "app:1",
                "host": f"h{n % hosts:03d}",
                "labels": {"zone": f"z{n % 3}"},
            }
            n += 1
        stack["services"][f"svc{s}"] = {
            "service_domain": f"svc{s}.internal",
            "scale": per_service,
            "units": units,
        }
    return doc


def bench_scale(tmp: Path) -> None:
    services = 100 if QUICK else 1000
    print(f"scale: {services * 100} units ({services} services x 100, 100 hosts, 10 accounts)")
    doc = scale_document(services=services)
    body = json.dumps(doc).encode()
    with server(tmp, "--max-body", str(len(body) + 1024), "--log-level", "error") as srv:
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=600) as c:
            t0 = time.perf_counter()
            r = c.post("/v1/load", content=body, headers={"Content-Type": "application/json"})
            load_s = time.perf_counter() - t0
            assert r.status_code == 200, r.text[:500]
            c.post(
                "/v1/load", json=big_service(1000, "thousand"), headers={"Content-Type": "application/json"}
            ).raise_for_status()
            assert srv.proc is not None
            rss = rss_mb(srv.proc.pid)

            def after_a_commit(url: str, n: int = 15) -> Sample:
                """A GET right after a commit elsewhere (no answer kept), in ms."""
                took = []
                for i in range(n):
                    c.put("/v1/kv/a0/st0/svc0/u000000/labels/tick", content=str(i)).raise_for_status()
                    t0 = time.perf_counter()
                    c.get(url).raise_for_status()
                    took.append((time.perf_counter() - t0) * 1e3)
                return statistics.median(took), (min(took), max(took))

            view_url, listing_url = "/v1/view/u000100/?format=json", "/v1/kv/9/bench/thousand/"
            view = after_a_commit(view_url)
            listing = after_a_commit(listing_url)
            view_again = rounds(lambda: c.get(view_url).raise_for_status(), 20, 5)
            assert len(c.get(listing_url).text.splitlines()) == 1000
        size = sum(p.stat().st_size for p in srv.db.parent.glob(srv.db.name + "*")) / 2**20
        record("scale", f"load {services * 100} units in one document", (load_s, (load_s, load_s)), "s")
        record("scale", "store size on disk", (size, (size, size)), "MB")
        record("scale", "server RSS after the load", (rss, (rss, rss)), "MB")
        record("scale", "GET a unit view (JSON, 100 peers), after a commit", view, "ms")
        record("scale", "GET a 1,000-unit service listing, after a commit", listing, "ms")
        record(
            "scale",
            "the same unit view again (answer reused)",
            (view_again[0] / 1000, (view_again[1][0] / 1000, view_again[1][1] / 1000)),
            "ms",
        )
        with mount(srv, tmp / "scale-mnt") as m:
            step = services * 100 // 100
            for i in range(100):
                assert (m / f"u{i * step:06d}" / "self" / "hostname").read_text()
            pid = daemon_pid(m)
            d = rss_mb(pid)
            record("scale", "mount daemon RSS, 100 views cached", (d, (d, d)), "MB")


def main() -> int:
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    machine = (
        f"{platform.node()}: {os.cpu_count()} CPUs, {platform.release()}, Python {platform.python_version()}"
    )
    print(f"metafs bench on {machine}{' (quick)' if QUICK else ''}")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="metafs-bench-") as d:
        tmp = Path(d)
        with server(tmp, "--log-level", "error") as srv:
            httpx.post(srv.url + "/v1/load", content=EXAMPLE.read_bytes(), headers=HEADERS).raise_for_status()
            httpx.post(srv.url + "/v1/load", json=big_service(100), headers=HEADERS).raise_for_status()
            bench_warm(tmp, srv)
            bench_page_cache(tmp, srv)
            bench_cold(tmp, srv)
            bench_propagation(tmp, srv)
            bench_throughput(tmp, srv)
        bench_long_polls(tmp)
        bench_scale(tmp)
    took = time.perf_counter() - t_start
    result = {
        "machine": machine,
        "seconds": round(took, 1),
        "quick": QUICK,
        "figures": [asdict(f) | {"ratio": f.ratio} for f in FIGURES],
    }
    (out / "bench.json").write_text(json.dumps(result, indent=2))
    print()
    print(table())
    print(f"\n{len(FIGURES)} figures in {took:.0f} s; JSON in {out / 'bench.json'}")
    return 0


def table() -> str:
    lines = [
        "| section | figure | metafs | spread | baseline | ratio | goal |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    for f in FIGURES:
        base = f"{f.baseline_name} {f.baseline:g} {f.unit}" if f.baseline is not None else ""
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else ""
        spread = f"{f.spread[0]:g}..{f.spread[1]:g}"
        lines.append(
            f"| {f.section} | {f.name} | {f.value:g} {f.unit} | {spread} | {base} | {ratio} | {f.goal} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    sys.exit(main())
