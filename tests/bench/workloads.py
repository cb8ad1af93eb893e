"""The workloads sections share: documents to load, file reads, pread against tmpfs,
reads racing changes of length, wrk runs."""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .harness import Sample, rounds


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


def fleet(accounts: int = 5, services: int = 20, units: int = 50, hosts: int = 50) -> dict[str, Any]:
    """A fleet as the web page meets it (5 x 20 x 50 = 5,000 units on 50 hosts by default):
    unit ``a<A>-s<S>-<I>``, hostname ``s<S>-<I>.a<A>``, address ``10.<A>.<S>.<I>``, each on
    host ``node-<n>`` (round robin), with a zone label."""
    n = 0
    doc: dict[str, Any] = {
        "hosts": {
            f"node-{h}": {"agent_ip": f"192.168.{h // 250}.{h % 250 + 1}", "labels": {"rack": f"r{h % 5}"}}
            for h in range(hosts)
        },
        "accounts": {},
    }
    for a in range(accounts):
        svcs: dict[str, Any] = {}
        for s in range(services):
            members: dict[str, Any] = {}
            for i in range(units):
                members[f"a{a}-s{s}-{i}"] = {
                    "cardinal_value": i,
                    "hostname": f"s{s}-{i}.a{a}",
                    "virt_ip_address": f"10.{a}.{s}.{i + 1}",
                    "ports": ["8080/tcp"],
                    "host": f"node-{n % hosts}",
                    "labels": {"zone": "abc"[i % 3]},
                }
                n += 1
            svcs[f"svc{s}"] = {"units": members}
        doc["accounts"][f"acct{a}"] = {"stacks": {"prod": {"services": svcs}}}
    return doc


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
