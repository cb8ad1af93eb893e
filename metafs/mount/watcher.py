"""The watcher: one long poll keeps every view a mount holds fresh.

In host mode (and for several views) it long-polls ``/v1/watch`` for every cached view
at once and for the list of units, and refetches exactly the views that changed, as
deltas, one request per service (its other units' views follow from that one); in unit
mode it long-polls the one view itself (``?since=R&index=R``: a change comes as the
answer). Old and new trees go to the listener, so that the kernel's caches are told.

When no server answers, the views held keep being served (stale) while it retries, at
most :data:`BACKOFF_MAX` apart. When the server answers from another store than the one
the views were read from (a new ``X-Metafs-Store``, or 410 for a revision it never
reached: restored, wiped, replaced), it refetches everything held whole.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import trio

from ..backoff import Backoff
from ..client import AsyncMetadataClient, ClientError, HistoryLost
from ..protocol import REVISION_HEADER
from .peers import Peers, derive, unloaded_peers
from .view import CacheStats, View, ViewListener, service_of

log = logging.getLogger("metafs.views")

#: the watcher retries this often while no server answers: at most 1 s, so that a server
#: back (restarted, its store restored) is seen within a second
BACKOFF_MIN, BACKOFF_MAX = 0.1, 1.0
#: after a view joins, the watcher waits this long before it long-polls again: the reads
#: that made the view join come first (the poll's HTTP work used to run between the first
#: lookups of a cold read), and views that join together cost one poll, not one each.
#: Nothing is missed meanwhile: the next poll asks for every change after what each view
#: has seen.
JOIN_SETTLE = 0.02
#: views of one service refetched at once when each is fetched on its own
REFRESH_AT_ONCE = 8


class Watched(Protocol):
    """What the watcher needs of the view cache whose views it keeps fresh."""

    views: dict[str, View]
    host_mode: bool
    units_seen: int
    index: int
    client: AsyncMetadataClient
    poll_wait: float
    stats: CacheStats
    listener: ViewListener
    peers: Peers

    async def fetch(
        self, unit_id: str, base: View | None = None, wait: float | None = None
    ) -> View | None: ...

    def swap(self, unit_id: str, new: View | None) -> View | None: ...

    def drop(self, unit_id: str, evicted: str = "") -> None: ...

    async def load_units(self) -> None: ...


class Watcher:
    """The long poll over every view a :class:`Watched` cache holds, and what it does with
    the answers: refetch, swap, tell the listener; stale while no server answers."""

    def __init__(self, cache: Watched) -> None:
        self.cache = cache
        self.stale_since: float | None = None  # when no server answered, if none does now
        self._poll_scope: trio.CancelScope | None = None
        self._joined = False
        self._lost = ""  # why what is held lost its history: the next round refetches it all

    def restart_poll(self) -> None:
        """A view joined: the running long poll does not cover it, so start another."""
        self._joined = True
        if self._poll_scope is not None:
            self._poll_scope.cancel()

    def _caught_up(self) -> int:
        """The revision every cached view (and the unit list) is known fresh at: the
        watcher asks for changes after it. A view that joined while a watch answer was
        being handled counts from the revision it was read at, not from that answer."""
        cache = self.cache
        floors = [v.seen for v in cache.views.values()]
        if cache.host_mode:
            floors.append(cache.units_seen)
        return max(0, min(floors, default=0))

    def _checked(self, units: list[str], index: int) -> None:
        """A watch answer at ``index`` covered ``units`` (and the list): they are fresh at
        ``index``, whether they were refetched or found unchanged."""
        cache = self.cache
        for uid in units:
            view = cache.views.get(uid)
            if view is not None and view.seen < index:
                view.seen = index
        if cache.host_mode:
            cache.units_seen = max(cache.units_seen, index)

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    async def run(self) -> None:
        cache = self.cache
        backoff = Backoff(BACKOFF_MIN, BACKOFF_MAX)
        while True:
            if self._lost:
                try:
                    await self._resync()
                except ClientError as exc:
                    self._went_stale(exc)
                    await backoff.wait()
                    continue
                self._fresh_again()
            units = sorted(cache.views)
            if not units and not cache.host_mode:
                with trio.CancelScope() as self._poll_scope:
                    await trio.sleep_forever()
                continue
            if self._joined:
                self._joined = False
                await trio.sleep(JOIN_SETTLE)
                units = sorted(cache.views)
            if not cache.host_mode and len(units) == 1:
                if await self._poll_view(units[0]):
                    backoff.reset()
                else:
                    await backoff.wait()
                continue
            ans = None
            with trio.CancelScope() as self._poll_scope:
                try:
                    ans = await cache.client.watch(units, cache.host_mode, self._caught_up(), cache.poll_wait)
                except ClientError as exc:
                    self._went_stale(exc)
            self._poll_scope = None
            if ans is None:
                if self.stale:
                    await backoff.wait()
                continue
            data = ans.json()
            cache.stats.watch_answers += 1
            try:
                await self._catch_up(units, data)
            except ClientError as exc:
                self._went_stale(exc)
                if not self._lost:
                    await backoff.wait()
                continue
            self._fresh_again()
            backoff.reset()
            # fresh at the revision of the answer (a scoped token gets at least the compacted one)
            self._checked(units, int(ans.headers.get(REVISION_HEADER, ans.index)))
            cache.index = max(cache.index, ans.index)

    async def _poll_view(self, unit_id: str) -> bool:
        """Unit mode: long-poll the one view itself (``?since=R&index=R``): a change comes
        as the answer, a delta, in one request (a watch answer and a fetch were two, for
        the server and for the client). False: the server could not be reached."""
        cache = self.cache
        base = cache.views[unit_id]
        answered, new = False, None
        with trio.CancelScope() as self._poll_scope:
            try:
                new = await cache.fetch(unit_id, base, wait=cache.poll_wait)
                answered = True
            except ClientError as exc:
                self._went_stale(exc)
        self._poll_scope = None
        if not answered:
            return self.stale_since is None  # cancelled (a view joined), or unreachable
        cache.stats.watch_answers += 1
        self._fresh_again()
        if cache.views.get(unit_id) is not base:
            return True  # replaced or dropped meanwhile: poll again from what is there
        if new is None:
            cache.drop(unit_id)  # deleted, or out of this token's scope
        elif new.seen > base.seen:
            old = cache.swap(unit_id, new)
            if old is not None:
                cache.listener.views_swapped([unit_id])
                cache.listener.view_changed(unit_id, old.root, new.root)
        return True

    def _fresh_again(self) -> None:
        if self.stale_since is not None:
            log.warning(
                "server reachable again after %.1fs; views are fresh", time.monotonic() - self.stale_since
            )
            self.stale_since = None

    def _went_stale(self, exc: Exception) -> None:
        self.cache.stats.last_error = str(exc)
        if isinstance(exc, HistoryLost):
            self.history_lost(exc)
            return
        if self.stale_since is None:
            self.stale_since = time.monotonic()
            log.warning(
                "server unreachable (%s); serving %d cached views stale, retrying", exc, len(self.cache.views)
            )

    def history_lost(self, exc: HistoryLost) -> None:
        """What the views were read from is not the store's history any more (another
        store, an older copy, history compacted past them): refetch them all
        (:meth:`_resync`), at once."""
        if not self._lost:
            self._lost = str(exc)
            self.restart_poll()

    async def _resync(self) -> None:
        """Refetch every view held, and the list of units, whole: the store was replaced
        (restored, wiped and reloaded, another behind the same URL) or compacted past what
        they were read at, and no revision seen before says enough of it. The old views are
        served until their new ones come (no false "not set"), but none is a peer to
        derive a new view from."""
        cache = self.cache
        why, self._lost = self._lost, ""
        log.warning("%s: refetching the %d views held, whole", why, len(cache.views))
        cache.index = 0
        for view in cache.views.values():
            view.seen = -1  # below any list of units: never derived from (_fresh_peers)
        if cache.host_mode:
            cache.units_seen = 0
            await cache.load_units()
        await self._refresh_by_service(list(cache.views), whole=True)

    async def _catch_up(self, asked: list[str], data: dict[str, object]) -> None:
        """Refetch every view (and the list) the watch reports as changed since we saw it:
        one request per service, since its other units' views follow from that one."""
        cache = self.cache
        changed = data.get("units", {})
        assert isinstance(changed, dict)
        stale = [u for u, rev in changed.items() if u in cache.views and rev > cache.views[u].seen]
        for uid in [u for u in asked if u not in changed]:
            cache.drop(uid)  # the watch left it out: out of this token's scope now
        if cache.host_mode and int(data.get("list", 0)) > cache.units_seen:  # type: ignore[call-overload]
            await cache.load_units()
        await self._refresh_by_service(stale)

    async def _refresh_by_service(self, unit_ids: list[str], whole: bool = False) -> None:
        """Refresh the views of ``unit_ids`` still held, one request per service (its other
        units' views follow from that one), services at once; ClientError if any failed."""
        views = self.cache.views
        by_service: dict[str, list[str]] = {}
        for uid in unit_ids:
            if uid in views:
                by_service.setdefault(service_of(views[uid].root), []).append(uid)
        failed: list[str] = []
        async with trio.open_nursery() as nursery:
            for uids in by_service.values():
                nursery.start_soon(self._refresh, uids, failed, whole)
        if failed:
            raise ClientError("; ".join(failed))

    async def _refresh(self, unit_ids: list[str], failed: list[str], whole: bool = False) -> None:
        """Fetch the first view of one service's stale views (``whole``: not as a delta of
        the one held); derive the others from it (those it does not list any more are
        fetched on their own: deleted or moved)."""
        cache = self.cache
        first, rest = unit_ids[0], unit_ids[1:]
        try:
            fetched = await cache.fetch(first, None if whole else cache.views.get(first))
        except ClientError as exc:
            failed.append(f"view {first}: {exc}")
            return
        if rest and fetched is not None and unloaded_peers(fetched.root) and cache.peers.bulk_pays(fetched):
            await cache.peers.load(fetched)  # one request, and the rest follow from it
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
            old = cache.swap(uid, view)
            if old is not None and view is not None:
                replaced.append((uid, old, view))
        cache.listener.views_swapped([uid for uid, _, _ in replaced])
        told = 0
        try:
            for uid, old, view in replaced:
                told += 1
                cache.listener.view_changed(uid, old.root, view.root)
                if told % 8 == 0:
                    await trio.sleep(0)
        finally:  # cancelled on the way: the rest are told at once, none is left pending
            for uid, old, view in replaced[told:]:
                cache.listener.view_changed(uid, old.root, view.root)
        if alone:  # deleted, moved, or a big service's fetched one by one: a few at a time
            limit = trio.CapacityLimiter(REFRESH_AT_ONCE)

            async def alone_refresh(uid: str) -> None:
                async with limit:
                    await self._refresh([uid], failed, whole)

            async with trio.open_nursery() as nursery:
                for uid in alone:
                    nursery.start_soon(alone_refresh, uid)
