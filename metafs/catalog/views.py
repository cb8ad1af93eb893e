"""Unit views: what ``/v1/view/<unit>/`` serves and the filesystem shows.

The views of one service's units share everything but ``self/``: a :class:`ServiceView`
is built once per change of the records it reads and kept in :class:`ServiceViews`, and
a unit's view (:class:`UnitView`) is its entry of ``all_hosts`` plus those shared trees.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..flights import Flights
from ..lru import LRU
from ..store import Snapshot, yielding
from ..tree import Dir, Leaf, Scalar
from .keys import index_key, key_ids, record_key, view_prefixes
from .records import Record, iso

#: a service view built from this many records lets the event loop run while it is built
BIG_SERVICE = 2_000
#: how long a request waits for another's build of the same service view before its own
BUILD_WAIT = 30.0


class _Records:
    """Records read in one snapshot, grouped for building trees; a record unchanged since
    ``previous`` (same key, same revision) is taken from there instead of decoded again."""

    def __init__(self, previous: dict[str, Record] | None = None) -> None:
        self.by_key: dict[str, Record] = {}
        self.previous = previous or {}

    async def range(self, snap: Snapshot, prefix: str) -> list[Record]:
        out = []
        async for item in yielding(await snap.range(prefix), BIG_SERVICE):
            rec = self.by_key.get(item.key)
            if rec is None:
                old = self.previous.get(item.key)
                rec = old if old is not None and old.rev == item.mod_rev else Record.load(item)
                self.by_key[item.key] = rec
            out.append(rec)
        return out

    def get(self, key: str) -> Record | None:
        return self.by_key.get(key)


def _stamped(value: Any, stamp: tuple[int, float]) -> Leaf:
    return Leaf(value, *stamp)


async def _hosts(snap: Snapshot, recs: _Records, units: list[Record]) -> None:
    for name in sorted({u.data["host"] for u in units if "host" in u.data}):
        await recs.range(snap, record_key("host", (name,)))


def unit_self(ids: list[str], unit: Record, recs: _Records) -> Dir:
    """A unit's ``self/`` directory (also each entry of ``service/all_hosts/``)."""
    a, t, s, u = ids
    born = unit.born
    d = unit.tree(exclude=("host",))
    for name, value in (
        ("deployment_unit_id", f"{a}/{t}/{s}/{u}"),
        ("unit_id", u),
        ("account", a),
        ("stack_name", t),
        ("service_name", s),
        ("created", iso(unit.created)),
    ):
        d.add(name, _stamped(value, born))
    d.add("updated", _stamped(iso(unit.item.mod_time), (unit.rev, unit.item.mod_time)))
    svc = recs.get(record_key("service", (a, t, s)))
    if svc and "service_domain" in svc.data:
        d.add("service_domain", _stamped(svc.data["service_domain"], svc.stamp(("service_domain",))))
    if "host" in unit.data:
        host = Dir()
        host.add("name", _stamped(unit.data["host"], unit.stamp(("host",))))
        hrec = recs.get(record_key("host", (unit.data["host"],)))
        if hrec:
            for k, v in hrec.tree().children.items():
                host.add(k, v)
        d.add("host", host)
    return d


def _named(kind_rec: Record, ids: list[str], names: dict[str, str]) -> Dir:
    d = kind_rec.tree()
    for k, v in names.items():
        d.add(k, _stamped(v, kind_rec.born))
    d.add("created", _stamped(iso(kind_rec.created), kind_rec.born))
    d.add("updated", _stamped(iso(kind_rec.item.mod_time), (kind_rec.rev, kind_rec.item.mod_time)))
    return d


@dataclass(frozen=True, slots=True)
class ServiceView:
    """What every view of one service's units shares: ``service/`` (with ``all_hosts/``,
    whose entries are the units' ``self/``) and ``stack/``. ``revs`` says which revision of
    each prefix it was built from; a view is ``self`` = its ``all_hosts`` entry, plus these.
    Its trees are shared by every view built from it: never modify them."""

    revs: tuple[int, ...]
    time: float
    service: Dir
    stack: Dir
    #: the seed layout's ``all_hosts`` value: every unit's path, sorted
    seed_peers: Leaf
    #: what the next build after a change reuses: the records it read, and each unit's
    #: ``self/`` with the revisions it was made from (unit, service and host record)
    records: dict[str, Record] = field(default_factory=dict, compare=False)
    selves: dict[str, tuple[tuple[int, ...], Dir]] = field(default_factory=dict, compare=False)
    #: ``(account, stack, service)``
    ids: tuple[str, ...] = field(default=(), compare=False)
    #: ``(revision, unit id)`` of each peer, by the revision its ``self/`` last changed at:
    #: the peers changed after R are a bisection away (see :mod:`.peers`)
    changes: list[tuple[int, str]] = field(default_factory=list, compare=False)
    #: the units deleted after a revision (read once per revision asked: see :mod:`.peers`)
    deleted: dict[int, list[str]] = field(default_factory=dict, compare=False)
    #: those being read, by revision: who asks for the same meanwhile waits
    deleting: Flights[int] = field(default_factory=Flights, compare=False)

    def unit(self, unit_id: str) -> Dir | None:
        node = self.service.children["all_hosts"]
        assert isinstance(node, Dir)
        me = node.children.get(unit_id)
        return me if isinstance(me, Dir) else None


#: what a kept ServiceView costs in memory, per unit of its service and on its own
#: (tracemalloc, services of 100 units with a host and a label each: see the README)
BYTES_PER_UNIT = 6_500
BYTES_PER_VIEW = 4_000


class ServiceViews:
    """A bounded LRU of built :class:`ServiceView` s, checked against the store on each
    use (one ``max(mod_rev)`` per prefix), so that the views of a service's 100 units are
    built once per change rather than once per request. Bounded by an estimate of their
    memory (``max_bytes``), not by history: a service deleted, or found gone, is dropped."""

    def __init__(self, max_bytes: int) -> None:
        self._views: LRU[tuple[str, ...], ServiceView] = LRU(self.weight, max_bytes)
        #: the builds in flight, by service and state: those who ask meanwhile wait
        self.building: Flights[tuple[tuple[str, ...], tuple[int, ...]]] = Flights()

    def __len__(self) -> int:
        return len(self._views)

    @property
    def size(self) -> int:
        """What the views kept weigh, estimated in bytes."""
        return self._views.size

    @staticmethod
    def weight(entry: ServiceView) -> int:
        return BYTES_PER_VIEW + BYTES_PER_UNIT * len(entry.selves)

    def drop(self, prefix: tuple[str, ...]) -> None:
        """Drop the views of every service at or below ``prefix`` (an account, a stack or a
        service: what a delete removed)."""
        for key in self._views:
            if key[: len(prefix)] == prefix:
                self._views.pop(key)

    def latest(self, key: tuple[str, ...]) -> ServiceView | None:
        """The last view built for ``key``, current or not (a rebuild reuses its parts)."""
        return self._views.peek(key)

    def get(self, key: tuple[str, ...], revs: tuple[int, ...]) -> ServiceView | None:
        hit = self._views.peek(key)
        return self._views.get(key) if hit is not None and hit.revs == revs else None

    def put(self, key: tuple[str, ...], entry: ServiceView) -> None:
        self._views.put(key, entry)


async def service_view(
    snap: Snapshot, a: str, t: str, s: str, cache: ServiceViews | None = None
) -> ServiceView | None:
    """The shared part of the views of service ``a/t/s`` (from ``cache`` when current).
    Built once per state however many requests ask at once: after a change every client
    of a 1,000-unit service asks within milliseconds, and each used to build its own."""
    stamps = await snap.last_changes_at(view_prefixes(a, t, s))
    revs = tuple(rev for rev, _ in stamps)
    if cache is None:
        return await _build(snap, (a, t, s), stamps, None)
    if hit := cache.get((a, t, s), revs):
        return hit
    async with cache.building.first(((a, t, s), revs), BUILD_WAIT) as first:
        if not first and (hit := cache.get((a, t, s), revs)):
            return hit  # another request built this very state meanwhile
        return await _build(snap, (a, t, s), stamps, cache)


async def _build(
    snap: Snapshot, names: tuple[str, str, str], stamps: list[tuple[int, float]], cache: ServiceViews | None
) -> ServiceView | None:
    a, t, s = names
    revs = tuple(rev for rev, _ in stamps)
    previous = cache.latest((a, t, s)) if cache is not None else None
    recs = _Records(previous.records if previous else None)
    peers = await recs.range(snap, record_key("unit", (a, t, s)))
    await recs.range(snap, record_key("stack", (a, t)))
    services = await recs.range(snap, record_key("service", (a, t)))
    await _hosts(snap, recs, peers)
    svc = recs.get(record_key("service", (a, t, s)))
    stack = recs.get(record_key("stack", (a, t)))
    if svc is None or stack is None:
        if cache is not None:
            cache.drop((a, t, s))  # deleted: nothing to reuse any more
        return None
    service = _named(svc, [a, t, s], {"name": s, "stack_name": t, "account": a})
    # a peer deleted changes the listing as much as one put: the last change under the
    # service's units (tombstones included) dates it, not only the peers still there
    units_rev, units_time = stamps[0]
    all_hosts = Dir(rev=max(svc.rev, units_rev), mtime=max(svc.item.mod_time, units_time))
    selves: dict[str, tuple[tuple[int, ...], Dir]] = {}
    # a big service: the loop runs between peers (a small one is built at once, so that
    # the requests that arrive meanwhile find it made instead of each building it)
    async for peer in yielding(peers, BIG_SERVICE):
        ids = key_ids(peer.item.key)
        host = recs.get(record_key("host", (peer.data["host"],))) if "host" in peer.data else None
        # a host named but not there (deleted): its ``self/host`` changed when ``h/`` last
        # did, not never (with 0 a delta kept the deleted host's fields in every mount)
        host_rev = host.rev if host else (revs[3] if "host" in peer.data else 0)
        made_from = (peer.rev, svc.rev, host_rev)
        old = previous.selves.get(ids[3]) if previous else None
        me = old[1] if old is not None and old[0] == made_from else unit_self(ids, peer, recs)
        selves[ids[3]] = (made_from, me)
        all_hosts.add(ids[3], me)
    service.add("all_hosts", all_hosts)
    stack_dir = _named(stack, [a, t], {"name": t, "account": a})
    svcs = Dir(rev=stack.rev, mtime=stack.item.mod_time)
    for rec in services:
        name = key_ids(rec.item.key)[2]
        entry = Dir()
        entry.add("name", _stamped(name, rec.born))
        for key in ("scale", "service_domain"):
            if key in rec.data:
                entry.add(key, _stamped(rec.data[key], rec.stamp((key,))))
        svcs.add(name, entry)
    stack_dir.add("services", svcs)
    paths: list[Scalar] = ["/".join((a, t, s, uid)) for uid in sorted(all_hosts.children)]
    built = ServiceView(
        revs,
        max(t for _, t in stamps),
        service,
        stack_dir,
        Leaf(paths, all_hosts.rev, all_hosts.mtime),
        records=recs.by_key,
        selves=selves,
        ids=(a, t, s),
        changes=sorted((max(made_from), uid) for uid, (made_from, _) in selves.items()),
    )
    if cache is not None:
        cache.put((a, t, s), built)
    return built


async def view_tree(snap: Snapshot, unit_id: str, cache: ServiceViews | None = None) -> UnitView | None:
    """A unit's view: ``self/``, ``service/`` (with ``all_hosts/``), ``stack/``, ``revision``
    (the last revision at which anything it shows, or any host, changed)."""
    idx = await snap.get(index_key(unit_id))
    if idx is None:
        return None
    a, t, s = idx.value.split("/")
    shared = await service_view(snap, a, t, s, cache)
    me = shared.unit(unit_id) if shared else None
    if shared is None or me is None:
        return None
    view = UnitView(shared=shared, unit_id=unit_id)
    view.add("self", me)
    view.add("service", shared.service)
    view.add("stack", shared.stack)
    rev = max(*shared.revs, idx.mod_rev)
    view.add("revision", Leaf(rev, rev, max(shared.time, idx.mod_time)))
    return view


@dataclass(slots=True)
class UnitView(Dir):
    """A whole view, knowing the :class:`ServiceView` it shares trees with."""

    shared: ServiceView | None = None
    unit_id: str = ""
    #: how the request asked for the peers (``?peers=``): subtrees sent in another form
    #: (see :mod:`.peers`), and the name of that form for caches and ETags ("" for none)
    swaps: dict[int, Any] | None = None
    variant: str = ""

    def unchanged_since(self, since: int) -> set[int]:
        """``id()`` s of this view's peer directories (``self/`` among them) built from
        records none of which changed after ``since``: a client holding the view as of
        ``since`` may keep them (see :func:`metafs.tree.to_meta_swapping`)."""
        if self.shared is None:
            return set()
        return {id(d) for made_from, d in self.shared.selves.values() if max(made_from) <= since}
