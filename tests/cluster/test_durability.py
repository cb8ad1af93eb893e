"""SIGKILL the server in the middle of a stream of writes, again and again (20 times; more
with METAFS_CRASH_ROUNDS), over SQLite and over a 3-member etcd cluster: nothing
acknowledged is lost, no bulk load is half applied, and the server starts again each time
without repair."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.support.servers import HEADERS, ServerProcess

WRITERS = 4
BULK_UNITS = 40
ROUNDS = int(os.environ.get("METAFS_CRASH_ROUNDS", "20"))  # SIGKILLs; more with the variable


def _setup(url: str) -> None:
    doc = {
        "accounts": {
            "1": {
                "stacks": {
                    "st": {
                        "services": {
                            "svc": {
                                "units": {
                                    f"w{t}": {"cardinal_value": t, "hostname": f"w{t}"}
                                    for t in range(WRITERS)
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    assert httpx.post(url + "/v1/load", json=doc, headers=HEADERS).status_code == 200


def _writer(url: str, t: int, round_: int, acked: dict[str, str], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, headers=HEADERS, timeout=5) as c:
        i = 0
        while not stop.is_set():
            key, value = f"r{round_}k{i}", f"v{t}-{round_}-{i}"
            try:
                r = c.put(f"/v1/kv/1/st/svc/w{t}/labels/{key}", content=value)
            except httpx.TransportError:
                return
            if r.status_code == 200:
                acked[f"w{t}/{key}"] = value
            i += 1


def _bulk(url: str, round_: int, acked: list[str], stop: threading.Event) -> None:
    with httpx.Client(base_url=url, headers=HEADERS, timeout=5) as c:
        j = 0
        while not stop.is_set():
            name = f"bulk{round_}x{j}"
            units = {f"{name}-u{k}": {"cardinal_value": k, "hostname": f"h{k}"} for k in range(BULK_UNITS)}
            doc = {
                "accounts": {
                    "2": {"stacks": {"b": {"services": {name: {"scale": BULK_UNITS, "units": units}}}}}
                }
            }
            try:
                r = c.post("/v1/load", json=doc)
            except httpx.TransportError:
                return
            if r.status_code == 200:
                acked.append(name)
            j += 1


@pytest.mark.timeout(60 + 10 * ROUNDS)
@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
def test_sigkill_during_writes_loses_nothing_acknowledged(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    store = request.getfixturevalue("etcd").url() if backend == "etcd" else None
    srv = ServerProcess(tmp_path / "metafs.db", store=store).start()
    acked: dict[str, str] = {}
    loads: list[str] = []
    rng = random.Random(42)
    try:
        _setup(srv.url)
        for round_ in range(ROUNDS):
            stop = threading.Event()
            threads = [
                threading.Thread(target=_writer, args=(srv.url, t, round_, acked, stop))
                for t in range(WRITERS)
            ]
            threads.append(threading.Thread(target=_bulk, args=(srv.url, round_, loads, stop)))
            for th in threads:
                th.start()
            time.sleep(rng.uniform(0.2, 1.0))
            assert srv.stop(signal.SIGKILL) == -signal.SIGKILL
            stop.set()
            for th in threads:
                th.join(10)
            srv.start()

            with httpx.Client(base_url=srv.url, headers=HEADERS, timeout=10) as c:
                for t in range(WRITERS):
                    labels = c.get(f"/v1/kv/1/st/svc/w{t}/labels/?format=json").json()
                    for key, value in acked.items():
                        unit, label = key.split("/")
                        if unit == f"w{t}":
                            assert labels.get(label) == value, f"acknowledged write {key}={value} lost"
                services = c.get("/v1/kv/2/b/?format=json")
                present = services.json() if services.status_code == 200 else {}
                for name in loads:
                    assert name in present, f"acknowledged load {name} lost"
                for name, units in present.items():
                    assert len(units) == BULK_UNITS, f"load {name} half applied: {len(units)} units"
        assert len(acked) > 50 and len(loads) > 3, (len(acked), len(loads))
    finally:
        srv.stop()
