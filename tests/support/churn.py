"""The churn soak: units come and go and move between hosts while a host-mode mount reads
every one of them; the server's and the daemon's memory, fds and inodes must stay flat.

One round: load a new service of ``units`` units placed on host ``node-a``; through a
mount with node-a's host token, list every unit and read a file of each (every value is
checked); move a quarter of them to ``node-b`` (they leave the mount) and back (they
come back, readable); delete the service (the mount empties). After each round: RSS and
open fds of both processes, and the inodes the daemon holds (``statfs``).

``python -m tests.support.churn`` (what ``make soak`` runs after the soak) does
``CHURN_ROUNDS`` rounds (20) of 200 units over SQLite and over a 3-member etcd cluster,
and writes ``bench-results/churn.json``; ``tests/fs/test_churn.py`` runs a short one.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from metafs.store.sqlite import MAX_READERS
from tests.support.mounts import Mount, daemon_pids
from tests.support.servers import HEADERS, ROOT, ServerProcess
from tests.support.soak import usage


def inodes(mountpoint: Path) -> int:
    """The inodes a metafs mount holds, as ``df -i`` computes them."""
    st = os.statvfs(mountpoint)
    return st.f_files - st.f_ffree


def service(name: str, units: int, hosts: dict[str, str]) -> dict[str, Any]:
    """A load document: service ``name`` of stack ``churn`` in account ``7``; each unit on
    ``hosts.get(unit id, "node-a")``."""
    made = {}
    for i in range(units):
        uid = f"{name}-{i:04d}"
        made[uid] = {
            "cardinal_value": i,
            "hostname": f"{name}-{i}",
            "virt_ip_address": f"10.7.{i // 250}.{i % 250}",
            "ports": ["80/tcp"],
            "labels": {"io.example/zone": f"z{i % 3}"},
            "host": hosts.get(uid, "node-a"),
        }
    doc = {"stacks": {"churn": {"services": {name: {"scale": units, "units": made}}}}}
    return {
        "hosts": {
            h: {"hostname": h, "agent_ip": f"10.0.0.{n}"} for n, h in enumerate(("node-a", "node-b"), 1)
        },
        "accounts": {"7": doc},
    }


class Steps:
    """How long each step of a round took: ``step("name")`` ends the step so named."""

    def __init__(self) -> None:
        self.took: dict[str, float] = {}
        self._since = time.monotonic()

    def __call__(self, name: str) -> None:
        now = time.monotonic()
        self.took[name] = round(now - self._since, 2)
        self._since = now


def wait_until(mountpoint: Path, check: Any, what: str, timeout: float = 20.0) -> None:
    """Until ``check(names listed at mountpoint)`` holds."""
    deadline = time.monotonic() + timeout
    while not check(set(os.listdir(mountpoint))):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g}s: {what}")
        time.sleep(0.02)


def churn(rounds: int, units: int, tmp: Path, store: str | None = None) -> dict[str, Any]:
    """Run ``rounds`` rounds against a fresh server (SQLite in ``tmp``, or ``store``)."""
    srv = ServerProcess(tmp / "churn.db", store=store).start()
    mount: Mount | None = None
    try:
        http = httpx.Client(base_url=srv.url, headers=HEADERS, timeout=30)
        http.post("/v1/load", json=service("seed", 1, {})).raise_for_status()  # the hosts
        token = http.post("/v1/tokens/", json={"kind": "host", "subject": "node-a"}).json()["token"]
        (tmp / "mnt").mkdir(exist_ok=True)
        mount = Mount(tmp / "mnt", srv.url, tmp / "mnt.log", extra=("--token", token)).start()
        (daemon,) = daemon_pids(mount.path)
        assert srv.proc is not None
        start_inodes = inodes(mount.path)
        wrong: list[str] = []
        per_round: list[dict[str, Any]] = []
        t_start = time.monotonic()
        for r in range(rounds):
            name = f"r{r:03d}"
            ids = [f"{name}-{i:04d}" for i in range(units)]
            step = Steps()

            http.post("/v1/load", json=service(name, units, {})).raise_for_status()
            step("load")
            wait_until(mount.path, set(ids).issubset, f"round {r}: units listed")
            step("listed")
            for i, uid in enumerate(ids):
                got = (mount.path / uid / "self" / "hostname").read_text()
                if got != f"{name}-{i}\n":
                    wrong.append(f"{uid}/self/hostname: {got!r}")
                zone = (mount.path / uid / "self" / "labels" / "io.example%2Fzone").read_text()
                if zone != f"z{i % 3}\n":
                    wrong.append(f"{uid}/self/labels/io.example%2Fzone: {zone!r}")
            step("read")
            moved = ids[: units // 4]
            http.post(
                "/v1/load", json=service(name, units, dict.fromkeys(moved, "node-b"))
            ).raise_for_status()
            wait_until(mount.path, set(moved).isdisjoint, f"round {r}: moved units gone")
            step("moved")
            http.post("/v1/load", json=service(name, units, {})).raise_for_status()
            wait_until(mount.path, set(moved).issubset, f"round {r}: moved units back")
            step("back")
            for uid in moved:
                got = (mount.path / uid / "self" / "host" / "name").read_text()
                if got != "node-a\n":
                    wrong.append(f"{uid}/self/host/name after the move back: {got!r}")
            peers = sorted(os.listdir(mount.path / ids[0] / "service" / "all_hosts"))
            if peers != ids:
                wrong.append(f"{ids[0]}/service/all_hosts: {len(peers)} entries, not {units}")
            http.delete(f"/v1/accounts/7/stacks/churn/services/{name}").raise_for_status()
            wait_until(mount.path, set(ids).isdisjoint, f"round {r}: units gone")
            step("deleted")
            server_rss, server_fds = usage(srv.proc.pid)
            daemon_rss, daemon_fds = usage(daemon)
            row = {
                "round": r + 1,
                "seconds": round(time.monotonic() - t_start, 1),
                "server_rss_mb": round(server_rss, 1),
                "server_fds": server_fds,
                "daemon_rss_mb": round(daemon_rss, 1),
                "daemon_fds": daemon_fds,
                "inodes": inodes(mount.path),
                "steps": step.took,
            }
            per_round.append(row)
            print("  " + json.dumps(row), flush=True)
        # the kernel forgets inodes a moment after their entries were invalidated: wait
        # (bounded) for the count to come back down, and say how long it took
        t0 = time.monotonic()
        while inodes(mount.path) > start_inodes + 5 and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        settled = {"inodes": inodes(mount.path), "seconds": round(time.monotonic() - t0, 2)}
        print(f"  settled: {settled}", flush=True)
        return {
            "settled": settled,
            "store": "etcd" if store else "sqlite",
            "rounds": rounds,
            "units": units,
            "wrong": wrong,
            "start_inodes": start_inodes,
            "per_round": per_round,
        }
    finally:
        if mount is not None:
            mount.stop()
        srv.stop()


def flat(report: dict[str, Any]) -> list[str]:
    """What is not flat: RSS after the last round against after round 3 (10 % or 15 MB),
    inodes once the units are gone against the start (10 %, or 5), fds (8; the etcd pool's 32)."""
    rows = report["per_round"]
    base, last = rows[min(2, len(rows) - 1)], rows[-1]
    problems = []
    for who in ("server", "daemon"):
        a, b = base[f"{who}_rss_mb"], last[f"{who}_rss_mb"]
        if b > a + max(0.1 * a, 15):
            problems.append(f"{who} RSS grew from {a} MB (round {base['round']}) to {b} MB")
        # over etcd the server's pool to the members keeps up to 32 connections alive
        # (store/etcd.py), over SQLite up to MAX_READERS readers of 2 fds each:
        # they come as load needs them, and stay within that bound
        slack = 8 if who == "daemon" else 32 if report["store"] == "etcd" else 8 + 2 * MAX_READERS
        if last[f"{who}_fds"] > base[f"{who}_fds"] + slack:
            problems.append(f"{who} fds grew from {base[f'{who}_fds']} to {last[f'{who}_fds']}")
    start, settled = report["start_inodes"], report["settled"]["inodes"]
    if settled > start + max(0.1 * start, 5):
        problems.append(f"daemon inodes {settled} 10 s after the last deletes, {start} at the start")
    wrong: list[str] = report["wrong"]
    return problems + wrong


def main() -> int:
    from tests.support.etcd_cluster import EtcdCluster

    rounds = int(os.environ.get("CHURN_ROUNDS", "20"))
    units = int(os.environ.get("CHURN_UNITS", "200"))
    reports = []
    with tempfile.TemporaryDirectory(prefix="metafs-churn-") as d:
        tmp = Path(d)
        print(f"churn over SQLite: {rounds} rounds of {units} units")
        (tmp / "sqlite").mkdir()
        reports.append(churn(rounds, units, tmp / "sqlite"))
        (tmp / "etcd").mkdir()
        cluster = EtcdCluster(tmp / "etcd")
        try:
            cluster.start()
            print(f"churn over etcd: {rounds} rounds of {units} units")
            (tmp / "etcd-run").mkdir()
            reports.append(churn(rounds, units, tmp / "etcd-run", cluster.url()))
        finally:
            cluster.stop()
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "churn.json").write_text(json.dumps(reports, indent=2))
    failed = [f"{r['store']}: {p}" for r in reports for p in flat(r)]
    print("\n".join(failed) if failed else "flat: RSS, fds and inodes, 0 wrong answers")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
