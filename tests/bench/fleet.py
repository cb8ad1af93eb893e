"""A fleet of simulated unit-mode mounts in one process: the mount's own
:class:`~metafs.mount.viewcache.ViewCache` and :class:`~metafs.client.AsyncMetadataClient`
for each unit, without the kernel side. What the fan-out bench (sections/fanout.py)
drives 1,000 of, in a few of these processes, to count what each moves over the wire.

Run as ``python -m tests.bench.fleet``; it talks JSON lines on stdin/stdout:

1. in: ``{"servers": [...], "units": [...], "holders": [...], "peer": P, "value": V}``;
   every unit starts the way a start script does (``self/cardinal_value``,
   ``service/service_domain``), the ``holders`` also list ``service/all_hosts/`` and read a peer.
   out: ``{"start_bytes": {unit: bytes}, "start_s": seconds}``.
2. in: ``"go"`` (the parent is about to change P's hostname to V); the fleet watches
   until every client holds the change: a holder reads V at P's hostname, the others
   see their view's ``revision`` move. out: ``{"done_at": time.time(), "bytes": {...}}``.
3. in: end of file: the fleet stops.

Bytes are what each client's responses carried: body as sent (gzip-encoded when the
client asked and it was worth it), plus status line and headers.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

import trio

from metafs.client import Answer, AsyncMetadataClient
from metafs.mount.viewcache import ViewCache
from metafs.protocol import PEERS_AT
from metafs.tree import Dir, Leaf, descend
from tests.support.servers import OPERATOR_TOKEN
from tests.support.viewcaches import Told

#: a client that does not hold the change this long after "go" is reported missing
DEADLINE = 120.0


class CountingClient(AsyncMetadataClient):
    """The mount's client, adding up what its answers carried."""

    received = 0

    async def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kw: Any) -> Answer:
        ans = await super().request(method, path, ok=ok, **kw)
        self.received += ans.wire + 17 + sum(len(k) + len(v) + 4 for k, v in ans.headers.items())
        return ans


async def _line() -> Any:
    text = await trio.to_thread.run_sync(sys.stdin.readline)
    return json.loads(text) if text.strip() else None


def _say(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _revision(cache: ViewCache, unit: str) -> int:
    view = cache.cached(unit, use=False)
    node = descend(view.root, ["revision"]) if view else None
    return int(str(node.value)) if isinstance(node, Leaf) else 0


async def fleet() -> None:
    spec = await _line()
    units: list[str] = spec["units"]
    holders, peer, value = set(spec["holders"]), spec["peer"], spec["value"]
    hostname = (*PEERS_AT, peer, "hostname")
    servers: list[str] = spec["servers"]
    clients = {
        u: CountingClient(servers[i % len(servers)], OPERATOR_TOKEN, timeout=60) for i, u in enumerate(units)
    }
    waiting: set[str] = set()  # after "go": the clients that do not hold the change yet
    before: dict[str, int] = {}
    done_at = 0.0

    def changed(unit: str) -> None:
        """A client's view changed: does it hold the change now?"""
        nonlocal done_at
        if unit not in waiting:
            return
        view = caches[unit].cached(unit, use=False)
        if unit in holders:
            leaf = descend(view.root, hostname) if view else None
            held = isinstance(leaf, Leaf) and leaf.value == value
        else:
            held = _revision(caches[unit], unit) > before[unit]
        if held:
            waiting.discard(unit)
            done_at = time.time()

    caches = {
        u: ViewCache(
            c,
            Told(changed),
            host_mode=False,
            fetch_timeout=60,
            poll_wait=300,
            view_ttl=3600,
            max_bytes=256 << 20,
        )
        for u, c in clients.items()
    }

    async def start(unit: str) -> None:
        cache = caches[unit]
        assert isinstance(await cache.node_at(unit, ("self", "cardinal_value")), Leaf)
        assert isinstance(await cache.node_at(unit, ("service", "service_domain")), Leaf)
        if unit in holders:
            listed = await cache.node_at(unit, PEERS_AT, listing=True)
            assert isinstance(listed, Dir) and listed.children, unit
            assert isinstance(await cache.node_at(unit, hostname), Leaf)

    async with trio.open_nursery() as nursery:
        for cache in caches.values():
            await nursery.start(cache.run)
        t0 = time.monotonic()
        async with trio.open_nursery() as starting:
            for u in units:
                starting.start_soon(start, u)
        _say({"start_bytes": {u: c.received for u, c in clients.items()}, "start_s": time.monotonic() - t0})
        before.update((u, _revision(caches[u], u)) for u in units)
        assert await _line() == "go"
        counted = {u: c.received for u, c in clients.items()}
        cpu = _cpu()
        waiting.update(units)
        deadline = time.monotonic() + DEADLINE
        while waiting and time.monotonic() < deadline:
            await trio.sleep(0.01)
        _say(
            {
                "done_at": done_at,
                "cpu_s": _cpu() - cpu,
                "missing": sorted(waiting),
                "bytes": {u: c.received - counted[u] for u, c in clients.items()},
            }
        )
        await _line()  # end of file: stop
        nursery.cancel_scope.cancel()
    for c in clients.values():
        await c.aclose()


def main() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    trio.run(fleet)


if __name__ == "__main__":
    main()
