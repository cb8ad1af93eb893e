"""Fan-out (issue 18): what a big service costs its clients at start and after one peer
changed. 1,000 simulated unit-mode mounts (tests/bench/fleet.py: the mount's own view
cache and client, in a few processes) and three real mounts, of services of 100, 1,000
and 5,000 units, over SQLite (one server) and over etcd (two servers, the clients split
between them). Most clients do what a start script does (``self/``, ``service/``
scalars); every tenth also lists ``all_hosts/`` and reads a peer, and holds the peers.

Baselines, from the same run: the whole view with its peers inline (what every mount
fetched at start before ``?peers=``) and the delta with a stub per unchanged peer (what
each fetched after a change)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx

from tests.support.etcd_cluster import EtcdCluster
from tests.support.servers import HEADERS, ROOT, ServerProcess

from ..fixtures import mount
from ..harness import QUICK, Report, single, spread
from ..mount_loop import loop_held
from ..workloads import big_service

SIZES = (100, 1000) if QUICK else (100, 1000, 5000)
STORES = ("sqlite", "etcd")
CLIENTS = 200 if QUICK else 1000
WORKERS = 4  # fleet processes
MOUNTS = 3  # real mounts, beside the simulated ones
HOLDERS_EVERY = 10  # every tenth client lists all_hosts/ and holds the peers


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _servers(tmp: Path, store: str) -> Iterator[list[ServerProcess]]:
    """One server on a SQLite file, or two on a 3-member etcd cluster."""
    with ExitStack() as stack:
        if store == "sqlite":
            srvs = [ServerProcess(tmp / f"fanout-{time.monotonic_ns()}.db")]
        else:
            base = tmp / f"fanout-etcd-{time.monotonic_ns()}"
            base.mkdir()
            cluster = EtcdCluster(base).start()
            stack.callback(cluster.stop)
            url = cluster.url("fanout")
            srvs = [ServerProcess(base / f"s{i}.db", store=url) for i in range(2)]
        for s in srvs:
            s.start("--log-level", "error")
            stack.callback(s.stop)
        yield srvs


class Fleet:
    """The simulated clients: :data:`WORKERS` processes of tests/bench/fleet.py."""

    def __init__(self, spec: dict[str, object], units: list[str]) -> None:
        self.procs = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.bench.fleet"],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(WORKERS)
        ]
        for i, p in enumerate(self.procs):
            self._send(p, {**spec, "units": units[i::WORKERS]})

    @staticmethod
    def _send(p: subprocess.Popen[str], data: object) -> None:
        assert p.stdin is not None
        p.stdin.write(json.dumps(data) + "\n")
        p.stdin.flush()

    def answers(self) -> list[dict[str, Any]]:
        out = []
        for p in self.procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"a fleet process ended (exit {p.wait()})")
            out.append(json.loads(line))
        return out

    def go(self) -> None:
        for p in self.procs:
            self._send(p, "go")

    def close(self) -> None:
        for p in self.procs:
            if p.stdin:
                p.stdin.close()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _watch_mount(path: Path, value: str, seen: dict[Path, float], deadline: float) -> None:
    """A real mount's reader: when ``path`` first reads ``value``."""
    while time.monotonic() < deadline:
        try:
            if path.read_text() == value + "\n":
                seen[path] = time.time()
                return
        except OSError:
            pass
        time.sleep(0.001)


def run(report: Report, tmp: Path) -> None:
    """Every store and size; ``METAFS_FANOUT=sqlite:1000,etcd:100`` runs just those."""
    only = os.environ.get("METAFS_FANOUT")
    pairs = [(st, int(n)) for st, n in (p.split(":") for p in only.split(","))] if only else None
    for store in STORES:
        for size in SIZES:
            if pairs is not None and (store, size) not in pairs:
                continue
            _one(report, tmp, store, size)


def _one(report: Report, tmp: Path, store: str, size: int) -> None:
    name = f"f{size}"
    clients = min(size, CLIENTS)
    units = [f"{name}-{i:05d}" for i in range(clients)]
    holders = units[::HOLDERS_EVERY]
    peer, value = units[len(units) // 2 + 1], f"changed-{size}"
    print(f"fan-out over {store}: a {size}-unit service, {clients} simulated clients + {MOUNTS} mounts")
    with _servers(tmp, store) as srvs, ExitStack() as stack:
        urls = [s.url for s in srvs]
        with httpx.Client(base_url=urls[0], headers=HEADERS, timeout=600) as c:
            c.post("/v1/load", json=big_service(size, name)).raise_for_status()
            whole = c.get(f"/v1/view/{units[0]}/", params={"format": "meta"})
            seen = whole.headers["X-Metafs-Revision"]
        if store == "sqlite":  # the mount's side: the store behind the server is no matter
            held, inline = loop_held(urls[0], units[1])
            report.record(
                "fan-out",
                f"a mount's loop, held at most while it loads {size} peers",
                spread(held),
                "ms",
                ("decoded on the loop", inline),
                "<= 50 ms",
            )
        mounted = []
        for i in range(MOUNTS):
            uid = f"{name}-{size - 1 - i:05d}"
            where_to = tmp / f"fan-{store}-{size}-{i}"
            m = stack.enter_context(mount(srvs[i % len(srvs)], where_to, f"9/bench/{name}/{uid}"))
            assert len(os.listdir(m / "service" / "all_hosts")) == size
            mounted.append(m / "service" / "all_hosts" / peer / "hostname")
        fleet = Fleet({"servers": urls, "holders": holders, "peer": peer, "value": value}, units)
        stack.callback(fleet.close)
        started = fleet.answers()
        start_bytes: dict[str, int] = {}
        for a in started:
            start_bytes.update(a["start_bytes"])
        start_s = max(float(a["start_s"]) for a in started)
        cpu0 = sum(_cpu_seconds(s.proc.pid) for s in srvs if s.proc)
        mount_seen: dict[Path, float] = {}
        readers = [
            threading.Thread(target=_watch_mount, args=(p, value, mount_seen, time.monotonic() + 120))
            for p in mounted
        ]
        for t in readers:
            t.start()
        fleet.go()
        time.sleep(0.2)  # every client back in its long poll after the "go"
        with httpx.Client(base_url=urls[0], headers=HEADERS, timeout=60) as c:
            t0 = time.time()
            c.put(f"/v1/kv/9/bench/{name}/{peer}/hostname", content=value).raise_for_status()
            done = fleet.answers()
            for t in readers:
                t.join()
            cpu = sum(_cpu_seconds(s.proc.pid) for s in srvs if s.proc) - cpu0
            old_delta = c.get(f"/v1/view/{units[0]}/", params={"format": "meta", "since": seen})
        missing = [u for a in done for u in a["missing"]]
        if missing or len(mount_seen) < MOUNTS:
            raise AssertionError(f"{len(missing)} clients, {MOUNTS - len(mount_seen)} mounts never held it")
        took = max([float(a["done_at"]) for a in done] + list(mount_seen.values())) - t0
        fleet_cpu = sum(float(a["cpu_s"]) for a in done)
        after: dict[str, int] = {}
        for a in done:
            after.update(a["bytes"])
    script = [u for u in units if u not in set(holders)]
    where = f"{store}{' x2' if store == 'etcd' else ''}, {size} units"
    rows = [
        ("start, self/ + service/", start_bytes, script, ("whole view", whole), "not O(service)"),
        ("start, all_hosts/ listed", start_bytes, holders, ("whole view", whole), ""),
        ("one peer changed, script", after, script, ("delta with stubs", old_delta), "<= 2048 B"),
        ("one peer changed, holding peers", after, holders, ("delta with stubs", old_delta), "<= 2048 B"),
    ]
    for what, counted, who, (base, answer), goal in rows:
        samples = spread([float(counted[u]) for u in who])
        base_bytes = (base, answer.num_bytes_downloaded)  # as sent, like the clients'
        report.record("fan-out", f"{where}: {what}, B/client", samples, "B", baseline=base_bytes, goal=goal)
    report.record(
        "fan-out",
        f"{where}: until {clients} clients + {MOUNTS} mounts hold it",
        single(took),
        "s",
        goal="<= 2 s" if clients >= 1000 else "",
        start_s=round(start_s, 2),
        fleet_cpu_s=round(fleet_cpu, 2),
    )
    per_client = cpu / (clients + MOUNTS) * 1e3
    report.record(
        "fan-out",
        f"{where}: server CPU for the change, per client",
        single(per_client),
        "ms",
        goal="<= 1 ms",
        cpu_s=round(cpu, 3),
    )
