"""The views a mount holds: fetched lazily and whole, kept under a bound, dropped when
they go.

A view is fetched on first access, in one request (``/v1/view/<unit>/?format=meta``),
however many readers wait for it; a big service's peers come pending and are loaded
when first listed (peers.py); in host mode a unit's view is made from a cached view of a
peer (the same service: they differ only in ``self``), so the views of one service share
one tree. The watcher (watcher.py) keeps every view held fresh. When no server answers,
a view never fetched fails after ``fetch_timeout`` instead of hanging.

What is kept follows what is shown. A view is dropped when its unit is deleted or leaves
this token's scope (moved off the host), when nothing touched it for ``view_ttl``
seconds, and, a whole service's views at a time, least recently used first, while the
views kept take more than ``max_bytes`` (estimated from the JSON they were made from:
see packing.py: peers are kept deflated). The kernel is told, so that it asks again.
Every change of what is held (a view joins, is swapped or dropped) goes through this
module, in order, to the listener.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import trio

from .. import heap
from ..backoff import Backoff
from ..client import AsyncMetadataClient, ClientError, HistoryLost
from ..tree import Dir, Leaf, Node, from_meta, merge_meta, unloaded
from .packing import PeerPacker, Unpacked, zdict_of
from .peers import VIEW_LEVELS, Peers, decoded, derive, unloaded_peers
from .view import CacheStats, View, ViewListener, ViewMissing, ViewUnavailable, service_of
from .watcher import BACKOFF_MAX, BACKOFF_MIN, Watcher

log = logging.getLogger("metafs.views")

#: the share of ``max_bytes`` that peers unpacked for reading may take (see packing.py)
UNPACKED_SHARE = 4


@dataclass(slots=True)
class _Fetch:
    done: trio.Event = field(default_factory=trio.Event)
    missing: bool = False


class ViewCache:
    """The views a mount has touched; :attr:`peers` loads a big service's peers into
    them, :attr:`watcher` keeps them fresh."""

    def __init__(
        self,
        client: AsyncMetadataClient,
        listener: ViewListener,
        *,
        host_mode: bool,
        fetch_timeout: float,
        poll_wait: float,
        view_ttl: float,
        max_bytes: int,
    ) -> None:
        self.client = client
        self.listener = listener
        self.host_mode = host_mode
        self.fetch_timeout = fetch_timeout
        self.poll_wait = poll_wait
        self.view_ttl = view_ttl
        self.max_bytes = max_bytes
        self.unpacked = Unpacked(max_bytes // UNPACKED_SHARE)  # peers being read
        self.views: dict[str, View] = {}
        self.by_service: dict[str, set[str]] = {}  # account/stack/service -> unit ids cached
        self.units = Dir()  # host mode: every unit id the server lists
        self.units_seen = 0
        #: the latest revision an answer (a view, the list of units, a watch answer) was
        #: fresh at: what ``metafs status`` shows, right from the first fetch
        self.index = 0
        self.stats = CacheStats()
        self.nursery: trio.Nursery | None = None
        self.peers = Peers(self)
        self.watcher = Watcher(self)
        self._fetches: dict[str, _Fetch] = {}
        self._units_changed = trio.Event()

    @property
    def stale_since(self) -> float | None:
        """Since when no server answers (``time.monotonic()``), or None."""
        return self.watcher.stale_since

    @property
    def stale(self) -> bool:
        return self.watcher.stale

    def restart_poll(self) -> None:
        """What the watcher polls for changed: poll again."""
        self.watcher.restart_poll()

    def replaced(self, exc: HistoryLost) -> None:
        """An answer came from another store: the watcher refetches everything held."""
        self.watcher.history_lost(exc)

    # -- reads (called from filesystem handlers) -------------------------------------

    def cached(self, unit_id: str, use: bool = True) -> View | None:
        """The view of ``unit_id`` if cached (``use``: a handler reads it, so it stays)."""
        view = self.views.get(unit_id)
        if view is not None and use:
            view.used = time.monotonic()
        return view

    async def get(self, unit_id: str) -> View:
        """The view of ``unit_id``: at once when cached, else fetched (bounded wait)."""
        view = self.cached(unit_id) or self._from_peer(unit_id)
        if view is not None:
            return view
        fetch = self._fetches.get(unit_id)
        if fetch is None:
            assert self.nursery is not None, "ViewCache.run() is not running"
            fetch = self._fetches[unit_id] = _Fetch()
            self.nursery.start_soon(self._first_fetch, unit_id, fetch)
        with trio.move_on_after(self.fetch_timeout):
            await fetch.done.wait()
        if unit_id in self.views:
            return self.views[unit_id]
        if fetch.missing:
            raise ViewMissing(unit_id)
        raise ViewUnavailable(unit_id)

    async def prefetch(self, unit_ids: list[str], at_once: int = 8) -> None:
        """Fetch the views of ``unit_ids`` not cached, ``at_once`` at a time, ignoring
        failures (a reader that needs one asks again): a restarted host daemon binds
        every unit's anchor, each bind a lookup that waits on the view otherwise."""
        limit = trio.Semaphore(at_once)

        async def one(uid: str) -> None:
            async with limit:
                with contextlib.suppress(ViewMissing, ViewUnavailable):
                    await self.get(uid)

        async with trio.open_nursery() as nursery:
            for uid in unit_ids:
                if uid not in self.views:
                    nursery.start_soon(one, uid)

    async def _first_fetch(self, unit_id: str, fetch: _Fetch) -> None:
        deadline = trio.current_time() + self.fetch_timeout
        backoff = Backoff(BACKOFF_MIN, BACKOFF_MAX)
        told = False
        try:
            while True:
                try:
                    view = await self.peers.beside(unit_id) or await self.fetch(unit_id)
                except ClientError as exc:
                    if isinstance(exc, HistoryLost) and not told:
                        told = True
                        self.replaced(exc)  # the next try reads the new store, at once
                        continue
                    if trio.current_time() + backoff.delay > deadline:
                        log.warning("view %s: not fetched within %.1fs: %s", unit_id, self.fetch_timeout, exc)
                        return
                    await backoff.wait()
                    continue
                if view is None:
                    fetch.missing = True
                else:
                    self.join(view)
                return
        finally:
            del self._fetches[unit_id]
            fetch.done.set()

    async def fetch(self, unit_id: str, base: View | None = None, wait: float | None = None) -> View | None:
        """The view of ``unit_id``; with ``base`` (the view held now), only what changed
        since is transferred, and ``base``'s unchanged subtrees are reused; with ``wait``
        too, once it changed (a long poll)."""
        # holding the peers, ask for those that changed; else for none of a big service's
        peers = "changes" if base is not None and not unloaded_peers(base.root) else "lazy"
        try:
            ans = await self.client.view(unit_id, base.seen if base else None, peers, wait)
        except ClientError as exc:
            self.stats.fetch_errors += 1
            self.stats.last_error = str(exc)
            raise
        self.stats.fetches += 1
        if ans.status in (403, 404):  # gone, or no longer ours to see: the same to the mount
            return None
        seen = int(ans.headers.get("x-metafs-revision", "0"))
        self.index = max(self.index, seen)
        packer = PeerPacker(self.unpacked, zdict_of(base.root) if base else None)
        data = await decoded(ans.body, VIEW_LEVELS)  # merged on the loop: it may unpack base's peers
        try:
            root = merge_meta(base.root if base else None, data, pack=packer)
        except KeyError:  # the delta keeps what we do not have: take it whole
            return await self.fetch(unit_id)
        assert isinstance(root, Dir)
        if peers == "lazy" and base is not None and not unloaded_peers(base.root) and unloaded_peers(root):
            # the peers were loaded into ``base`` while this was asked without them: ask
            # again for their changes rather than drop them (and load them all again)
            return await self.fetch(unit_id, base)
        # a delta is small but the tree it updates is not: a view weighs what its last
        # whole fetch did
        weight = base.weight if base is not None and base.weight else packer.weight(len(ans.body))
        return View(unit_id, root, seen, weight)

    async def node_at(self, unit_id: str, names: tuple[str, ...], listing: bool = False) -> Node | None:
        """The node at ``names`` in the view of ``unit_id`` (fetched if need be), the peers
        of a big service fetched first when the path goes below them or ``listing`` lists
        them. Raises what :meth:`get` raises."""
        for _ in range(3):  # a view replaced while its peers loaded: look again
            view = await self.get(unit_id)
            node: Node | None = view.root
            for name in names:
                if node is not None and unloaded(node):
                    break
                node = node.children.get(name) if isinstance(node, Dir) else None
            else:
                if node is None or not (listing and unloaded(node)):
                    return node
            if not await self.peers.load(view):
                break
        raise ViewUnavailable(unit_id)

    def _from_peer(self, unit_id: str) -> View | None:
        """Host mode: the view of ``unit_id`` made from a cached view of a peer (the same
        service), or None when none lists it. Only from a peer known fresh at or after
        the list of units that shows this one: a unit that has just come (back) is never
        shown as an older view of its service knew it, it is fetched instead."""
        for peer in self.fresh_peers(unit_id):
            view = derive(peer, unit_id)
            if view is not None:
                self.join(view)
                return view
        return None

    def fresh_peers(self, unit_id: str) -> Iterator[View]:
        """Host mode: the cached views of ``unit_id``'s service known fresh at or after
        the list of units that shows it."""
        listed = self.units.children.get(unit_id) if self.host_mode else None
        if not isinstance(listed, Leaf):
            return
        service = str(listed.value).rsplit("/", 1)[0]
        for peer_id in list(self.by_service.get(service, ())):
            peer = self.views.get(peer_id)
            if peer is not None and peer.seen >= self.units_seen:
                yield peer

    def join(self, view: View) -> None:
        """Keep ``view``, and have the watcher watch it too; then keep within the bound."""
        self.views[view.unit_id] = view
        self._track(view.unit_id, service_of(view.root))
        self.restart_poll()
        self.keep_within()

    async def load_units(self) -> None:
        """Fetch the list of units (host mode), telling the filesystem what changed."""
        ans = await self.client.units()
        new = from_meta(await decoded(ans.body))
        assert isinstance(new, Dir)
        if len(ans.body) >= heap.TRIM_AFTER:  # 100,000 units: ~60 MB of decoding left behind
            await trio.to_thread.run_sync(heap.trim)
        old, self.units = self.units, new
        listed = [n for n in new.children.values() if isinstance(n, Leaf)]
        self.peers.local = Counter(str(n.value).rsplit("/", 1)[0] for n in listed)
        self.units_seen = int(ans.headers.get("x-metafs-revision", "0"))
        self.index = max(self.index, self.units_seen)
        self.listener.list_changed(old, new)
        self._units_changed.set()
        self._units_changed = trio.Event()
        for uid in [u for u in self.views if u not in new.children]:
            self.drop(uid)

    async def units_changed(self) -> None:
        """Return after the next change of the list of units."""
        await self._units_changed.wait()

    # -- what is held, and its bound -------------------------------------------------

    def drop(self, unit_id: str, evicted: str = "") -> None:
        """Drop a view and tell the kernel: its files are gone (the unit is, or is out of
        scope) or must be asked for again (``evicted``: why, while the unit exists)."""
        old = self.views.pop(unit_id, None)
        if old is not None:
            self._untrack(unit_id, service_of(old.root))
            if evicted:
                self.stats.evictions += 1
            log.debug("view %s: dropped, %s", unit_id, evicted or "the unit is gone or out of scope")
            self.listener.view_changed(unit_id, old.root, None)

    def _track(self, unit_id: str, service: str) -> None:
        self.by_service.setdefault(service, set()).add(unit_id)

    def _untrack(self, unit_id: str, service: str) -> None:
        peers = self.by_service.get(service)
        if peers is not None:
            peers.discard(unit_id)
            if not peers:
                del self.by_service[service]

    @property
    def size(self) -> int:
        """What the views kept weigh, estimated in bytes: each service's tree once (its
        peers packed), and the peers unpacked for reading."""
        return sum(self._weigh(peers) for peers in self.by_service.values()) + self.unpacked.size

    def _weigh(self, peers: set[str]) -> int:
        return max(self.views[u].weight for u in peers)

    def keep_within(self) -> None:
        """Drop whole services' views, least recently used first, while the views kept
        weigh more than ``max_bytes`` (the one used last always stays)."""
        if self.size <= self.max_bytes:
            return
        by_use = sorted(self.by_service.items(), key=lambda kv: max(self.views[u].used for u in kv[1]))
        for _, peers in by_use[:-1]:
            if self.size <= self.max_bytes:
                break
            if any(self.listener.keeps(u) for u in peers):
                continue
            for uid in list(peers):
                self.drop(uid, evicted="over --cache-size")

    def evict_idle(self) -> None:
        """Drop the views nothing asked for within ``view_ttl`` seconds."""
        now = time.monotonic()
        idle = [
            v.unit_id
            for v in self.views.values()
            if now - v.used > self.view_ttl and not self.listener.keeps(v.unit_id)
        ]
        for uid in idle:
            self.drop(uid, evicted="idle for --view-ttl")

    async def _evict_idle_forever(self) -> None:
        while True:
            await trio.sleep(max(min(self.view_ttl / 4, 30.0), 0.05))
            self.evict_idle()

    def swap(self, unit_id: str, new: View | None) -> View | None:
        """Serve ``new`` for ``unit_id`` (None: drop it); the view it replaces, if any
        (the filesystem is not told yet)."""
        old = self.views.get(unit_id)
        if old is None:
            return None
        if new is None:
            self.drop(unit_id)
            return None
        new.used = old.used
        before, after = service_of(old.root), service_of(new.root)
        if before != after:  # moved to another service (under the same id)
            self._untrack(unit_id, before)
            self._track(unit_id, after)
        self.views[unit_id] = new
        self.stats.last_change = time.time()
        return old

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve fetches and keep every cached view fresh, until cancelled."""
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            if self.host_mode:  # in unit mode the one view is all there is: it stays
                nursery.start_soon(self._evict_idle_forever)
            task_status.started()
            await self.watcher.run()
