"""Unit views for the filesystem: fetched lazily, whole, and kept fresh by one long poll.

A view is fetched on first access, in one request (``/v1/view/<unit>/?format=meta``);
a big service's peers come pending (``peers=lazy``, see metafs/catalog/peers.py) and are
fetched, in one request for every cached view of that service, when first listed or
read below (:meth:`ViewCache.node_at`); once held, a refetch asks for the changed ones.
One watcher task then long-polls ``/v1/watch`` for every cached view at once (and, in
host mode, for the list of units) and refetches exactly the views that changed, handing
old and new trees to the filesystem so that it can invalidate the kernel's caches.

When the server is away, cached views keep being served (stale) while the watcher retries
with backoff; a view never fetched fails after ``fetch_timeout`` instead of hanging.

What is kept follows what is shown. In host mode a unit's view is made from a cached
view of a peer (the same service: they differ only in ``self``) instead of fetched, so
the views of one service share one tree. A view is dropped when its unit is deleted or
leaves this token's scope (moved off the host), when nothing touched it for ``view_ttl``
seconds, and, a whole service's views at a time, least recently used first, while the
views kept take more than ``max_bytes`` (estimated from the JSON they were made from:
see packing.py: peers are kept deflated). The kernel is told, so that it asks again.

Why this module passes 400 lines: fetching, deriving, watching and evicting all change
the same three maps (views, the views of each service, fetches in flight) and each change
must reach the listener in order; apart, they would reach into each other's state.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import trio

from .. import heap
from ..backoff import Backoff
from ..client import AsyncMetadataClient, ClientError, StoreReplaced
from ..protocol import PEERS_AT
from ..tree import Dir, Leaf, Node, Pending, descend, from_meta, merge_meta, unloaded
from .packing import PeerPacker, Unpacked, zdict_of

log = logging.getLogger("metafs.views")

#: the watcher and first fetches retry this often while no server answers: at most 1 s, so
#: that a server back (restarted, its store restored) is seen within a second
BACKOFF_MIN, BACKOFF_MAX = 0.1, 1.0
#: after a view joins, the watcher waits this long before it long-polls again: the reads
#: that made the view join come first (the poll's HTTP work used to run between the first
#: lookups of a cold read), and views that join together cost one poll, not one each.
#: Nothing is missed meanwhile: the next poll asks for every change after what each view
#: has seen.
JOIN_SETTLE = 0.02
#: the share of ``max_bytes`` that peers unpacked for reading may take (see packing.py)
UNPACKED_SHARE = 4
#: host mode: a big service's peers are fetched in bulk (one request, every peer, and its
#: units' views follow from it) when the service has at most this many units for each of
#: them on this host; else each view is fetched on its own (~2.5 KB, ~1 KB a delta: a
#: peer's entry costs about as much), so that 10 units of a 5,000-unit web tier cost 10
#: small fetches, not 5,000 peers
BULK_PER_LOCAL_UNIT = 3
#: views of one service refetched at once when each is fetched on its own
REFRESH_AT_ONCE = 8


class ViewUnavailable(Exception):
    """The view could not be fetched in time (the filesystem answers EIO)."""


class ViewMissing(Exception):
    """The server has no such unit (the filesystem answers ENOENT)."""


@dataclass(slots=True)
class View:
    unit_id: str
    root: Dir
    #: the store revision this view is known fresh at (read at, or found unchanged by a
    #: watch answer since): the watcher refetches it when the server reports a change to
    #: anything it shows after this revision
    seen: int
    #: what this view's tree weighs, estimated in bytes when it was fetched whole (its
    #: peers packed; a derived view shares its peer's tree: it counts with it, see
    #: ViewCache._weigh)
    weight: int = 0
    used: float = field(default_factory=time.monotonic)  # when a handler last asked for it


@dataclass(slots=True)
class CacheStats:
    """Counters of the view cache, for the mount's status and metrics."""

    fetches: int = 0
    fetch_errors: int = 0
    watch_answers: int = 0
    evictions: int = 0  # views dropped while their unit still exists (idle, over the bound)
    last_error: str = ""
    last_change: float = 0.0  # when the watcher last applied a change (time.time())


@dataclass(slots=True)
class _Fetch:
    done: trio.Event = field(default_factory=trio.Event)
    missing: bool = False


class ViewListener(Protocol):
    """Who is told of changes (the kernel notifier): a view changed (old, new; new None
    when the unit is gone) and the list of units changed (old, new). Called from the
    watcher task, never from a filesystem handler."""

    def views_swapped(self, unit_ids: list[str]) -> None:
        """These units' views were replaced; ``view_changed`` follows for each, soon."""
        ...

    def view_changed(self, unit_id: str, old: Dir | None, new: Dir | None) -> None: ...

    def list_changed(self, old: Dir, new: Dir) -> None: ...

    def keeps(self, unit_id: str) -> bool:
        """Whether the view must stay cached (a program waits in ``poll()`` on it)."""
        ...


class ViewCache:
    """The views a mount has touched, and the watcher that keeps them fresh."""

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
        self.units = Dir()  # host mode: every unit id the server lists
        self.units_seen = 0
        self.stale_since: float | None = None
        self._fetches: dict[str, _Fetch] = {}
        self._loading: dict[int, trio.Event] = {}  # id(pending all_hosts) -> its fetch's end
        self._local: Counter[str] = Counter()  # host mode: each service's units listed here
        self._poll_scope: trio.CancelScope | None = None
        self._nursery: trio.Nursery | None = None
        self._index = 0
        self._units_changed = trio.Event()
        self._joined = False
        self._by_service: dict[str, set[str]] = {}  # account/stack/service -> unit ids cached
        self._replaced = ""  # why the store is another now: the watcher refetches everything
        self.stats = CacheStats()

    @property
    def index(self) -> int:
        """The latest revision an answer (a view, the list of units, a watch answer) was
        fresh at: what ``metafs status`` shows, right from the first fetch."""
        return self._index

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
            assert self._nursery is not None, "ViewCache.run() is not running"
            fetch = self._fetches[unit_id] = _Fetch()
            self._nursery.start_soon(self._first_fetch, unit_id, fetch)
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
        try:
            while True:
                try:
                    view = await self._fetch_beside(unit_id) or await self._fetch(unit_id)
                except StoreReplaced as exc:
                    self._store_replaced(exc)  # the next try reads the new store
                    continue
                except ClientError as exc:
                    if trio.current_time() + backoff.delay > deadline:
                        log.warning("view %s: not fetched within %.1fs: %s", unit_id, self.fetch_timeout, exc)
                        return
                    await backoff.wait()
                    continue
                if view is None:
                    fetch.missing = True
                else:
                    self._join(view)
                return
        finally:
            del self._fetches[unit_id]
            fetch.done.set()

    async def _fetch(self, unit_id: str, base: View | None = None, wait: float | None = None) -> View | None:
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
        self._index = max(self._index, seen)
        packer = PeerPacker(self.unpacked, zdict_of(base.root) if base else None)
        try:
            root = merge_meta(base.root if base else None, ans.json(), pack=packer)
        except KeyError:  # the delta keeps what we do not have: take it whole
            return await self._fetch(unit_id)
        assert isinstance(root, Dir)
        if peers == "lazy" and base is not None and not unloaded_peers(base.root) and unloaded_peers(root):
            # the peers were loaded into ``base`` while this was asked without them: ask
            # again for their changes rather than drop them (and load them all again)
            return await self._fetch(unit_id, base)
        # a delta is small but the tree it updates is not: a view weighs what its last
        # whole fetch did
        weight = base.weight if base is not None and base.weight else packer.weight(len(ans.body))
        return View(unit_id, root, seen, weight)

    async def _fetch_beside(self, unit_id: str) -> View | None:
        """Host mode: the view of ``unit_id`` derived from a cached peer's, that peer's
        pending peers fetched first (one request for the whole service) when that pays
        (:meth:`_bulk_pays`): a service's shared part is fetched once per mount, not
        once per unit. None: no such peer, or fetch this view on its own."""
        for peer in list(self._fresh_peers(unit_id)):
            if unloaded_peers(peer.root) and not (self._bulk_pays(peer) and await self._load_peers(peer)):
                return None
            view = derive(peer, unit_id)
            if view is not None:
                return view
        return None

    def _bulk_pays(self, view: View) -> bool:
        """Whether fetching the pending peers of ``view``'s service costs less than
        fetching each of its units' views on this host (see :data:`BULK_PER_LOCAL_UNIT`)."""
        pending = pending_peers(view.root)
        count = pending.count if pending is not None else 0
        return count <= BULK_PER_LOCAL_UNIT * self._local.get(service_of(view.root), 1)

    def _fresh_peers(self, unit_id: str) -> Iterator[View]:
        """Host mode: the cached views of ``unit_id``'s service known fresh at or after
        the list of units that shows it."""
        listed = self.units.children.get(unit_id) if self.host_mode else None
        if not isinstance(listed, Leaf):
            return
        service = str(listed.value).rsplit("/", 1)[0]
        for peer_id in list(self._by_service.get(service, ())):
            peer = self.views.get(peer_id)
            if peer is not None and peer.seen >= self.units_seen:
                yield peer

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
            if not await self._load_peers(view):
                break
        raise ViewUnavailable(unit_id)

    async def _load_peers(self, view: View) -> bool:
        """Fetch the peers of ``view``'s service into its pending ``all_hosts`` (one
        request, shared by every cached view of the service whose peers are pending);
        whether they are there (bounded by ``fetch_timeout``)."""
        pending = pending_peers(view.root)
        if pending is None:
            return True
        loading = self._loading.get(id(pending))
        if loading is None:
            loading = self._loading[id(pending)] = trio.Event()
            assert self._nursery is not None, "ViewCache.run() is not running"
            self._nursery.start_soon(self._fetch_peers, view, pending, loading)
        with trio.move_on_after(self.fetch_timeout):
            await loading.wait()
        return pending.loaded

    async def _fetch_peers(self, view: View, pending: Pending, loading: trio.Event) -> None:
        try:
            try:
                ans = await self.client.peers(view.unit_id)
            except ClientError as exc:
                self.stats.fetch_errors += 1
                self.stats.last_error = str(exc)
                if isinstance(exc, StoreReplaced):
                    self._store_replaced(exc)
                else:
                    log.warning("view %s: peers not fetched: %s", view.unit_id, exc)
                return
            self.stats.fetches += 1
            if ans.status != 200:
                return  # gone: the watcher drops the view
            packer = PeerPacker(self.unpacked, None)
            loaded = merge_meta(None, ans.json(), pack=packer, path=PEERS_AT[:-1])
            assert isinstance(loaded, Dir)
            service = service_of(view.root)
            weight = packer.weight(len(ans.body))
            for uid in self._by_service.get(service, ()):
                other = self.views[uid]
                node = pending_peers(other.root)
                if node is not None:
                    node.children, node.loaded = loaded.children, True
                    other.weight += weight
            if not pending.loaded:  # its view left the cache meanwhile: the reader gets it
                pending.children, pending.loaded = loaded.children, True
            self._keep_within()
            if not self.host_mode:
                self._restart_poll()  # the view's long poll asked without peers: ask again
        finally:
            del self._loading[id(pending)]
            loading.set()

    def _from_peer(self, unit_id: str) -> View | None:
        """Host mode: the view of ``unit_id`` made from a cached view of a peer (the same
        service), or None when none lists it. Only from a peer known fresh at or after
        the list of units that shows this one: a unit that has just come (back) is never
        shown as an older view of its service knew it, it is fetched instead."""
        for peer in self._fresh_peers(unit_id):
            view = derive(peer, unit_id)
            if view is not None:
                self._join(view)
                return view
        return None

    def _join(self, view: View) -> None:
        """Keep ``view``, and have the watcher watch it too; then keep within the bound."""
        self.views[view.unit_id] = view
        self._track(view.unit_id, service_of(view.root))
        self._restart_poll()
        self._keep_within()

    async def load_units(self) -> None:
        """Fetch the list of units (host mode), telling the filesystem what changed."""
        ans = await self.client.units()
        new = from_meta(ans.json())
        assert isinstance(new, Dir)
        if len(ans.body) >= heap.TRIM_AFTER:  # 100,000 units: ~60 MB of decoding left behind
            await trio.to_thread.run_sync(heap.trim)
        old, self.units = self.units, new
        listed = [n for n in new.children.values() if isinstance(n, Leaf)]
        self._local = Counter(str(n.value).rsplit("/", 1)[0] for n in listed)
        self.units_seen = int(ans.headers.get("x-metafs-revision", "0"))
        self._index = max(self._index, self.units_seen)
        self.listener.list_changed(old, new)
        self._units_changed.set()
        self._units_changed = trio.Event()
        for uid in [u for u in self.views if u not in new.children]:
            self._drop(uid)

    async def units_changed(self) -> None:
        """Return after the next change of the list of units."""
        await self._units_changed.wait()

    def _drop(self, unit_id: str, evicted: str = "") -> None:
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
        self._by_service.setdefault(service, set()).add(unit_id)

    def _untrack(self, unit_id: str, service: str) -> None:
        peers = self._by_service.get(service)
        if peers is not None:
            peers.discard(unit_id)
            if not peers:
                del self._by_service[service]

    @property
    def size(self) -> int:
        """What the views kept weigh, estimated in bytes: each service's tree once (its
        peers packed), and the peers unpacked for reading."""
        return sum(self._weigh(peers) for peers in self._by_service.values()) + self.unpacked.size

    def _weigh(self, peers: set[str]) -> int:
        return max(self.views[u].weight for u in peers)

    def _keep_within(self) -> None:
        """Drop whole services' views, least recently used first, while the views kept
        weigh more than ``max_bytes`` (the one used last always stays)."""
        if self.size <= self.max_bytes:
            return
        by_use = sorted(self._by_service.items(), key=lambda kv: max(self.views[u].used for u in kv[1]))
        for _, peers in by_use[:-1]:
            if self.size <= self.max_bytes:
                break
            if any(self.listener.keeps(u) for u in peers):
                continue
            for uid in list(peers):
                self._drop(uid, evicted="over --cache-size")

    def evict_idle(self) -> None:
        """Drop the views nothing asked for within ``view_ttl`` seconds."""
        now = time.monotonic()
        idle = [
            v.unit_id
            for v in self.views.values()
            if now - v.used > self.view_ttl and not self.listener.keeps(v.unit_id)
        ]
        for uid in idle:
            self._drop(uid, evicted="idle for --view-ttl")

    async def _evict_idle_forever(self) -> None:
        while True:
            await trio.sleep(max(min(self.view_ttl / 4, 30.0), 0.05))
            self.evict_idle()

    # -- the watcher -------------------------------------------------------------------

    def _restart_poll(self) -> None:
        """A view joined: the running long poll does not cover it, so start another."""
        self._joined = True
        if self._poll_scope is not None:
            self._poll_scope.cancel()

    def _caught_up(self) -> int:
        """The revision every cached view (and the unit list) is known fresh at: the
        watcher asks for changes after it. A view that joined while a watch answer was
        being handled counts from the revision it was read at, not from that answer."""
        floors = [v.seen for v in self.views.values()]
        if self.host_mode:
            floors.append(self.units_seen)
        return max(0, min(floors, default=0))

    def _checked(self, units: list[str], index: int) -> None:
        """A watch answer at ``index`` covered ``units`` (and the list): they are fresh at
        ``index``, whether they were refetched or found unchanged."""
        for uid in units:
            view = self.views.get(uid)
            if view is not None and view.seen < index:
                view.seen = index
        if self.host_mode:
            self.units_seen = max(self.units_seen, index)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve fetches and keep every cached view fresh, until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            if self.host_mode:  # in unit mode the one view is all there is: it stays
                nursery.start_soon(self._evict_idle_forever)
            task_status.started()
            await self._watch()

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    async def _watch(self) -> None:
        backoff = Backoff(BACKOFF_MIN, BACKOFF_MAX)
        while True:
            if self._replaced:
                try:
                    await self._resync()
                except ClientError as exc:
                    self._went_stale(exc)
                    await backoff.wait()
                    continue
                self._fresh_again()
            units = sorted(self.views)
            if not units and not self.host_mode:
                with trio.CancelScope() as self._poll_scope:
                    await trio.sleep_forever()
                continue
            if self._joined:
                self._joined = False
                await trio.sleep(JOIN_SETTLE)
                units = sorted(self.views)
            if not self.host_mode and len(units) == 1:
                if await self._poll_view(units[0]):
                    backoff.reset()
                else:
                    await backoff.wait()
                continue
            ans = None
            with trio.CancelScope() as self._poll_scope:
                try:
                    ans = await self.client.watch(units, self.host_mode, self._caught_up(), self.poll_wait)
                except ClientError as exc:
                    self._went_stale(exc)
            self._poll_scope = None
            if ans is None:
                if self.stale:
                    await backoff.wait()
                continue
            data = ans.json()
            self.stats.watch_answers += 1
            try:
                await self._catch_up(units, data)
            except ClientError as exc:
                self._went_stale(exc)
                if not self._replaced:
                    await backoff.wait()
                continue
            self._fresh_again()
            backoff.reset()
            self._checked(units, ans.index)
            self._index = max(self._index, ans.index)

    async def _poll_view(self, unit_id: str) -> bool:
        """Unit mode: long-poll the one view itself (``?since=R&index=R``): a change comes
        as the answer, a delta, in one request (a watch answer and a fetch were two, for
        the server and for the client). False: the server could not be reached."""
        base = self.views[unit_id]
        answered, new = False, None
        with trio.CancelScope() as self._poll_scope:
            try:
                new = await self._fetch(unit_id, base, wait=self.poll_wait)
                answered = True
            except ClientError as exc:
                self._went_stale(exc)
        self._poll_scope = None
        if not answered:
            return self.stale_since is None  # cancelled (a view joined), or unreachable
        self.stats.watch_answers += 1
        self._fresh_again()
        if self.views.get(unit_id) is not base:
            return True  # replaced or dropped meanwhile: poll again from what is there
        if new is None:
            self._drop(unit_id)  # deleted, or out of this token's scope
        elif new.seen > base.seen:
            old = self._swap(unit_id, new)
            if old is not None:
                self.listener.views_swapped([unit_id])
                self.listener.view_changed(unit_id, old.root, new.root)
        return True

    def _fresh_again(self) -> None:
        if self.stale_since is not None:
            log.warning(
                "server reachable again after %.1fs; views are fresh", time.monotonic() - self.stale_since
            )
            self.stale_since = None

    def _went_stale(self, exc: Exception) -> None:
        self.stats.last_error = str(exc)
        if isinstance(exc, StoreReplaced):
            self._store_replaced(exc)
            return
        if self.stale_since is None:
            self.stale_since = time.monotonic()
            log.warning(
                "server unreachable (%s); serving %d cached views stale, retrying", exc, len(self.views)
            )

    def _store_replaced(self, exc: StoreReplaced) -> None:
        """The server answers from another store than the one the views were read from:
        have the watcher refetch them all (:meth:`_resync`), at once."""
        if not self._replaced:
            self._replaced = str(exc)
            self._restart_poll()

    async def _resync(self) -> None:
        """Refetch every view held, and the list of units, whole: the store was replaced
        (restored, wiped and reloaded, another behind the same URL) and no revision seen
        before says anything of it. The old views are served until their new ones come
        (no false "not set"), but none is a peer to derive a new view from."""
        why, self._replaced = self._replaced, ""
        log.warning("%s: refetching the %d views held, whole", why, len(self.views))
        self._index = 0
        for view in self.views.values():
            view.seen = -1  # below any list of units: never derived from (_fresh_peers)
        if self.host_mode:
            self.units_seen = 0
            await self.load_units()
        by_service: dict[str, list[str]] = {}
        for uid, view in self.views.items():
            by_service.setdefault(service_of(view.root), []).append(uid)
        failed: list[str] = []
        async with trio.open_nursery() as nursery:
            for uids in by_service.values():
                nursery.start_soon(self._refresh, uids, failed, True)
        if failed:
            raise ClientError("; ".join(failed))

    async def _catch_up(self, asked: list[str], data: dict[str, object]) -> None:
        """Refetch every view (and the list) the watch reports as changed since we saw it:
        one request per service, since its other units' views follow from that one."""
        changed = data.get("units", {})
        assert isinstance(changed, dict)
        stale = [u for u, rev in changed.items() if u in self.views and rev > self.views[u].seen]
        for uid in [u for u in asked if u not in changed]:
            self._drop(uid)  # the watch left it out: out of this token's scope now
        if self.host_mode and int(data.get("list", 0)) > self.units_seen:  # type: ignore[call-overload]
            await self.load_units()
        by_service: dict[str, list[str]] = {}
        for uid in stale:
            if uid in self.views:
                by_service.setdefault(service_of(self.views[uid].root), []).append(uid)
        failed: list[str] = []
        async with trio.open_nursery() as nursery:
            for uids in by_service.values():
                nursery.start_soon(self._refresh, uids, failed)
        if failed:
            raise ClientError("; ".join(failed))

    async def _refresh(self, unit_ids: list[str], failed: list[str], whole: bool = False) -> None:
        """Fetch the first view of one service's stale views (``whole``: not as a delta of
        the one held); derive the others from it (those it does not list any more are
        fetched on their own: deleted or moved)."""
        first, rest = unit_ids[0], unit_ids[1:]
        try:
            fetched = await self._fetch(first, None if whole else self.views.get(first))
        except ClientError as exc:
            failed.append(f"view {first}: {exc}")
            return
        if rest and fetched is not None and unloaded_peers(fetched.root) and self._bulk_pays(fetched):
            await self._load_peers(fetched)  # one request, and the rest follow from it
        new = {first: fetched}
        alone = []
        for uid in rest:
            derived = derive(fetched, uid) if fetched is not None else None
            if derived is None:
                alone.append(uid)
            else:
                new[uid] = derived
        # every view of the service is served new at once (reads look the cache up), and
        # only then are the kernel's caches told, a few views at a time between requests
        replaced = []
        for uid, view in new.items():
            old = self._swap(uid, view)
            if old is not None and view is not None:
                replaced.append((uid, old, view))
        self.listener.views_swapped([uid for uid, _, _ in replaced])
        told = 0
        try:
            for uid, old, view in replaced:
                told += 1
                self.listener.view_changed(uid, old.root, view.root)
                if told % 8 == 0:
                    await trio.sleep(0)
        finally:  # cancelled on the way: the rest are told at once, none is left pending
            for uid, old, view in replaced[told:]:
                self.listener.view_changed(uid, old.root, view.root)
        if alone:  # deleted, moved, or a big service's fetched one by one: a few at a time
            limit = trio.CapacityLimiter(REFRESH_AT_ONCE)

            async def alone_refresh(uid: str) -> None:
                async with limit:
                    await self._refresh([uid], failed, whole)

            async with trio.open_nursery() as nursery:
                for uid in alone:
                    nursery.start_soon(alone_refresh, uid)

    def _swap(self, unit_id: str, new: View | None) -> View | None:
        """Serve ``new`` for ``unit_id`` (None: drop it); the view it replaces, if any
        (the filesystem is not told yet)."""
        old = self.views.get(unit_id)
        if old is None:
            return None
        if new is None:
            self._drop(unit_id)
            return None
        new.used = old.used
        before, after = service_of(old.root), service_of(new.root)
        if before != after:  # moved to another service (under the same id)
            self._untrack(unit_id, before)
            self._track(unit_id, after)
        self.views[unit_id] = new
        self.stats.last_change = time.time()
        return old


def service_of(view: Dir) -> str:
    """``account/stack/service`` of a view (from ``self/deployment_unit_id``)."""
    node = descend(view, ["self", "deployment_unit_id"])
    return str(node.value).rsplit("/", 1)[0] if isinstance(node, Leaf) else ""


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
