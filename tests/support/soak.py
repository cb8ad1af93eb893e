"""`make soak`: a server, a host-mode mount of 50 units, readers in a loop and a steady
stream of updates for a while (SOAK_SECONDS, default 300): no error, no torn read, and
the slope of memory and file descriptors of both processes, which should be flat."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.mounts import Mount, daemon_pids
from tests.support.servers import HEADERS, ROOT, ServerProcess

UNITS = 50


def usage(pid: int) -> tuple[float, int]:
    """RSS in MB and open file descriptors of a process."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def slope(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope, per minute."""
    n = len(samples)
    if n < 2:
        return 0.0
    mx = sum(t for t, _ in samples) / n
    my = sum(v for _, v in samples) / n
    den = sum((t - mx) ** 2 for t, _ in samples) or 1.0
    return sum((t - mx) * (v - my) for t, v in samples) / den * 60


def soak(seconds: float, tmp: Path, updates_per_second: float = 20) -> dict[str, Any]:
    srv = ServerProcess(tmp / "soak.db").start()
    mount = None
    try:
        units = {f"soak-{i:02d}": {"cardinal_value": i, "hostname": f"h{i}-0"} for i in range(UNITS)}
        doc = {"accounts": {"1": {"stacks": {"s": {"services": {"svc": {"units": units}}}}}}}
        httpx.post(srv.url + "/v1/load", json=doc, headers=HEADERS).raise_for_status()
        (tmp / "mnt").mkdir()
        mount = Mount(tmp / "mnt", srv.url, tmp / "mnt.log").start()
        (daemon,) = daemon_pids(mount.path)
        assert srv.proc is not None
        errors: list[str] = []
        reads = [0]
        stop = threading.Event()

        def reader(offset: int) -> None:
            i = offset
            while not stop.is_set():
                unit = f"soak-{i % UNITS:02d}"
                try:
                    value = (mount.path / unit / "self" / "hostname").read_text()  # type: ignore[union-attr]
                except OSError as exc:
                    errors.append(f"read {unit}: {exc}")
                    continue
                if not (
                    value.startswith(f"h{i % UNITS}-") and value.endswith("\n") and value.count("\n") == 1
                ):
                    errors.append(f"torn or wrong {unit}: {value!r}")
                reads[0] += 1
                i += 1

        threads = [threading.Thread(target=reader, args=(k * 7,)) for k in range(4)]
        for t in threads:
            t.start()
        samples: dict[str, list[tuple[float, float]]] = {
            k: [] for k in ("daemon_mb", "daemon_fds", "server_mb", "server_fds")
        }
        writes = 0
        t_start = time.monotonic()
        next_sample = t_start
        with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=10) as c:
            while (now := time.monotonic()) - t_start < seconds:
                i = writes % UNITS
                r = c.put(f"/v1/kv/1/s/svc/soak-{i:02d}/hostname", content=f"h{i}-{writes}")
                if r.status_code != 200:
                    errors.append(f"write: HTTP {r.status_code}")
                writes += 1
                if now >= next_sample:
                    for who, pid in (("daemon", daemon), ("server", srv.proc.pid)):
                        mb, fds = usage(pid)
                        samples[f"{who}_mb"].append((now - t_start, mb))
                        samples[f"{who}_fds"].append((now - t_start, fds))
                    next_sample = now + max(1.0, seconds / 60)
                time.sleep(1 / updates_per_second)
        stop.set()
        for t in threads:
            t.join(10)
        report = {
            "seconds": round(time.monotonic() - t_start, 1),
            "reads": reads[0],
            "writes": writes,
            "errors": errors[:20],
            "error_count": len(errors),
            "slopes_per_minute": {k: round(slope(v), 3) for k, v in samples.items()},
            "first_last": {k: (v[0][1], v[-1][1]) for k, v in samples.items() if v},
        }
        return report
    finally:
        if mount is not None:
            mount.stop()
        srv.stop()


def main() -> int:
    seconds = float(os.environ.get("SOAK_SECONDS", "300"))
    with tempfile.TemporaryDirectory(prefix="metafs-soak-") as d:
        report = soak(seconds, Path(d))
    print(json.dumps(report, indent=2))
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    return 1 if report["error_count"] else 0


if __name__ == "__main__":
    sys.exit(main())
