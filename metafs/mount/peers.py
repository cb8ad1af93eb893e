"""The peers of a big service in a mount's views (``service/all_hosts``): fetched once for
every cached view of the service, when something first lists or reads below them, and
views derived from a peer's instead of fetched.

A big service's view comes with its peers pending (``peers=lazy``, see
metafs/catalog/peers.py). The first listing of ``all_hosts`` of any of its views brings
every peer in one request, and every cached view of that service shares them. In host
mode a unit's view is a peer's view with another ``self/``: derived, not fetched, when a
fresh peer is held, and a big service's peers are fetched in bulk only when that costs
less than fetching each local unit's view on its own (:data:`BULK_PER_LOCAL_UNIT`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, Protocol, TypeVar

import trio

from .. import heap, jsonstream
from ..client import AsyncMetadataClient, ClientError, HistoryLost
from ..protocol import PEERS_AT
from ..tree import Dir, Pending, descend, merge_meta
from .packing import PeerPacker, Unpacked
from .view import CacheStats, View, service_of

#: host mode: a big service's peers are fetched in bulk (one request, every peer, and its
#: units' views follow from it) when the service has at most this many units for each of
#: them on this host; else each view is fetched on its own (~2.5 KB, ~1 KB a delta: a
#: peer's entry costs about as much), so that 10 units of a 5,000-unit web tier cost 10
#: small fetches, not 5,000 peers
BULK_PER_LOCAL_UNIT = 3

log = logging.getLogger("metafs.views")
#: one thread at a time decodes answers: a second would only take turns for the GIL
#: with the first and the loop (5,000 peers: ~0.3 s each)
_DECODING = trio.CapacityLimiter(1)
#: answers bigger than this are decoded in that thread, the smaller on the loop
DECODE_IN_THREAD = 64 << 10
#: how deep a view's objects are decoded a member at a time: down to each peer in
#: ``service/all_hosts/`` (a peers answer, or a list of units, is two levels deep)
VIEW_LEVELS = len(PEERS_AT) * 2 + 2
T = TypeVar("T")


async def off_loop(body: bytes, work: Callable[[], T]) -> T:
    """``work`` (decoding ``body``, and what is made of it) on the loop for a small answer;
    for a big one in the decoding thread, so that the loop answers the kernel meanwhile,
    with no collection over the half-built tree (one would hold the GIL throughout)."""
    if len(body) <= DECODE_IN_THREAD:
        return work()

    def paused() -> T:
        with heap.collections_paused():
            return work()

    return await trio.to_thread.run_sync(paused, limiter=_DECODING)


def _decode(body: bytes, levels: int) -> Any:
    """A small answer at once; a big one a member at a time down to ``levels``
    (jsonstream.pieces), so that the loop's thread gets the GIL in between (``json.loads``
    holds it throughout: 5,000 peers held the loop 0.1-0.2 s that way)."""
    return json.loads(body) if len(body) <= DECODE_IN_THREAD else jsonstream.pieces(body, levels)


async def decoded(body: bytes, levels: int = 2) -> Any:
    """An answer's JSON (see :func:`off_loop`)."""
    return await off_loop(body, lambda: _decode(body, levels))


def _unpacked_peers(body: bytes, packer: PeerPacker) -> Dir:
    """The ``all_hosts/`` directory of a peers answer, each peer packed by ``packer``."""
    loaded = merge_meta(None, _decode(body, 2), pack=packer, path=PEERS_AT[:-1])
    assert isinstance(loaded, Dir)
    return loaded


class Holder(Protocol):
    """What loading peers needs of the view cache that holds the views."""

    views: dict[str, View]
    by_service: dict[str, set[str]]
    client: AsyncMetadataClient
    stats: CacheStats
    unpacked: Unpacked
    host_mode: bool
    fetch_timeout: float
    nursery: trio.Nursery | None

    def fresh_peers(self, unit_id: str) -> Iterator[View]: ...

    def keep_within(self) -> None: ...

    def restart_poll(self) -> None: ...

    def replaced(self, exc: HistoryLost) -> None: ...


class Peers:
    """Loading the pending peers of the views a :class:`Holder` keeps (one request per
    service, however many views wait on it), and deriving views from a peer's."""

    def __init__(self, cache: Holder) -> None:
        self.cache = cache
        #: host mode: each service's units listed on this host (what makes a bulk fetch pay)
        self.local: Counter[str] = Counter()
        self._loading: dict[int, trio.Event] = {}  # id(pending all_hosts) -> its fetch's end

    async def beside(self, unit_id: str) -> View | None:
        """Host mode: the view of ``unit_id`` derived from a cached peer's, that peer's
        pending peers fetched first (one request for the whole service) when that pays
        (:meth:`bulk_pays`): a service's shared part is fetched once per mount, not
        once per unit. None: no such peer, or fetch this view on its own."""
        for peer in list(self.cache.fresh_peers(unit_id)):
            if unloaded_peers(peer.root) and not (self.bulk_pays(peer) and await self.load(peer)):
                return None
            view = derive(peer, unit_id)
            if view is not None:
                return view
        return None

    def bulk_pays(self, view: View) -> bool:
        """Whether fetching the pending peers of ``view``'s service costs less than
        fetching each of its units' views on this host (see :data:`BULK_PER_LOCAL_UNIT`)."""
        pending = pending_peers(view.root)
        count = pending.count if pending is not None else 0
        return count <= BULK_PER_LOCAL_UNIT * self.local.get(service_of(view.root), 1)

    async def load(self, view: View) -> bool:
        """Fetch the peers of ``view``'s service into its pending ``all_hosts`` (one
        request, shared by every cached view of the service whose peers are pending);
        whether they are there (bounded by ``fetch_timeout``)."""
        pending = pending_peers(view.root)
        if pending is None:
            return True
        loading = self._loading.get(id(pending))
        if loading is None:
            loading = self._loading[id(pending)] = trio.Event()
            assert self.cache.nursery is not None, "ViewCache.run() is not running"
            self.cache.nursery.start_soon(self._fetch_peers, view, pending, loading)
        with trio.move_on_after(self.cache.fetch_timeout):
            await loading.wait()
        return pending.loaded

    async def _fetch_peers(self, view: View, pending: Pending, loading: trio.Event) -> None:
        cache = self.cache
        try:
            try:
                ans = await cache.client.peers(view.unit_id)
            except ClientError as exc:
                cache.stats.fetch_errors += 1
                cache.stats.last_error = str(exc)
                if isinstance(exc, HistoryLost):
                    cache.replaced(exc)
                else:
                    log.warning("view %s: peers not fetched: %s", view.unit_id, exc)
                return
            cache.stats.fetches += 1
            if ans.status != 200:
                return  # gone: the watcher drops the view
            packer = PeerPacker(cache.unpacked, None)
            # 5,000 peers are ~5 MB of JSON, ~0.5 s to decode and pack: off the loop (the
            # tree is new: nothing else touches it yet)
            loaded = await off_loop(ans.body, lambda: _unpacked_peers(ans.body, packer))
            service = service_of(view.root)
            weight = packer.weight(len(ans.body))
            for uid in cache.by_service.get(service, ()):
                other = cache.views[uid]
                node = pending_peers(other.root)
                if node is not None:
                    node.children, node.loaded = loaded.children, True
                    other.weight += weight
            if not pending.loaded:  # its view left the cache meanwhile: the reader gets it
                pending.children, pending.loaded = loaded.children, True
            cache.keep_within()
            if not cache.host_mode:
                cache.restart_poll()  # the view's long poll asked without peers: ask again
        finally:
            del self._loading[id(pending)]
            loading.set()


def pending_peers(root: Dir) -> Pending | None:
    """A view's ``service/all_hosts`` if it is pending (its peers not fetched yet)."""
    node = descend(root, PEERS_AT)
    return node if isinstance(node, Pending) and not node.loaded else None


def unloaded_peers(root: Dir) -> bool:
    """Whether a view's ``service/all_hosts`` is pending (its peers not fetched)."""
    return pending_peers(root) is not None


def derive(view: View, unit_id: str) -> View | None:
    """The view of a peer of ``view``'s unit: the same ``service/``, ``stack/`` and
    ``revision`` (its view reads exactly the same records), and ``self`` is its entry in
    ``service/all_hosts``. None when ``view`` does not list that unit."""
    service = view.root.children.get("service")
    all_hosts = service.children.get("all_hosts") if isinstance(service, Dir) else None
    me = all_hosts.children.get(unit_id) if isinstance(all_hosts, Dir) else None
    if not isinstance(me, Dir):
        return None
    root = Dir()
    for name, child in view.root.children.items():
        root.add(name, me if name == "self" else child)
    return View(unit_id, root, view.seen, view.weight)
