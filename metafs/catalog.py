"""The metadata catalog: the model's records laid out in a store, read as trees, written
atomically.

Each account, stack, service, unit and host is one record (JSON) under its own key::

    a/<account>/                           account (labels)
    t/<account>/<stack>/                   stack (labels)
    s/<account>/<stack>/<service>/         service (service_domain, scale, labels, metadata)
    u/<account>/<stack>/<service>/<unit>/  deployment unit
    h/<host>/                              host
    i/<unit>/                              index: unit id -> "<account>/<stack>/<service>"
    hu/<host>/<unit>/                      index: the units placed on a host
    k/<token id>/                          a token: its SHA-256, kind, subject (never the token)

A record remembers, for each of its leaves, the revision and time at which that value
last changed, so a file's ``st_mtime`` is when *its* value changed, not its neighbour's.
Every write reads what it replaces in a snapshot and commits under guards on the
``mod_revision`` of each key read (optimistic concurrency, the way etcd transactions
work), retrying on conflict.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from . import auth, model
from .store import Conflict, Delete, Guard, Item, Op, Put, Snapshot, Store
from .tree import Dir, Leaf, Node, Scalar, build, descend

_SEP = "\x1f"  # joins leaf paths inside a record; control characters are never in keys
_MAX_RETRIES = 20

# -- errors ---------------------------------------------------------------------------


class CatalogError(Exception):
    """A request the catalog refuses; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.details = details or []


class BadRequest(CatalogError):
    status = 400


class Forbidden(CatalogError):
    status = 403


class NotFound(CatalogError):
    status = 404


class Exists(CatalogError):
    status = 409


# -- keys and records -------------------------------------------------------------------

KIND_PREFIX = {"account": "a", "stack": "t", "service": "s", "unit": "u"}
KIND_MODEL: dict[str, type[model._Record]] = {
    "account": model.Account,
    "stack": model.Stack,
    "service": model.Service,
    "unit": model.Unit,
    "host": model.Host,
}
LEVELS = ["account", "stack", "service", "unit"]
COLLECTIONS = ["accounts", "stacks", "services", "units"]


def record_key(kind: str, ids: tuple[str, ...]) -> str:
    return ("h" if kind == "host" else KIND_PREFIX[kind]) + "/" + "".join(i + "/" for i in ids)


def index_key(unit_id: str) -> str:
    return f"i/{unit_id}/"


def host_index_key(host: str, unit_id: str = "") -> str:
    return f"hu/{host}/{unit_id}/" if unit_id else f"hu/{host}/"


RECORD_PREFIXES = ("a/", "t/", "s/", "u/", "h/")


def key_ids(key: str) -> list[str]:
    """The ids in a record key: ``u/5/t/s/x/`` -> ``['5', 't', 's', 'x']``."""
    return key.split("/")[1:-1]


def doc_path(kind: str, ids: tuple[str, ...]) -> str:
    """The dotted document path of a record, as validation errors name it."""
    if kind == "host":
        return f"hosts.{ids[0]}"
    return ".".join(f"{c}.{i}" for c, i in zip(COLLECTIONS, ids, strict=False))


def iso(t: float) -> str:
    return (
        datetime.datetime.fromtimestamp(t, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf of a record's data, as :func:`tree.build` splits it (empty maps count)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, str(i)))
    else:
        yield path, value


@dataclass(slots=True)
class Record:
    """A stored record: its data, and when each leaf and the record itself changed."""

    data: dict[str, Any]
    leaves: dict[str, list[float]]  # leaf path -> [rev (0: the record's mod_rev), time]
    created: float
    item: Item

    @classmethod
    def load(cls, item: Item) -> Record:
        raw = json.loads(item.value)
        return cls(raw["d"], raw["l"], raw["c"], item)

    @property
    def rev(self) -> int:
        return self.item.mod_rev

    def stamp(self, path: tuple[str, ...]) -> tuple[int, float]:
        """Revision and time at which the leaf at ``path`` last changed."""
        rev, t = self.leaves.get(_SEP.join(path), (0, self.item.mod_time))
        return int(rev) or self.item.mod_rev, t

    @property
    def born(self) -> tuple[int, float]:
        return self.item.create_rev, self.created

    def tree(self, exclude: tuple[str, ...] = ()) -> Dir:
        d = Dir()
        for k, v in self.data.items():
            if k not in exclude:
                d.add(k, build(v, self.stamp, (k,)))
        return d


def encode_record(data: dict[str, Any], old: Record | None, now: float) -> str:
    """A record's stored JSON; leaves whose value did not change keep their old stamp."""
    old_values = dict(_leaves(old.data)) if old else {}
    leaves: dict[str, list[float]] = {}
    for path, value in _leaves(data):
        key = _SEP.join(path)
        if old is not None and path in old_values and old_values[path] == value:
            leaves[key] = list(old.stamp(path))
        else:
            leaves[key] = [0, now]
    created = old.created if old else now
    return json.dumps({"d": data, "l": leaves, "c": created}, separators=(",", ":"), sort_keys=True)


def _dump(obj: model._Record, kind: str) -> dict[str, Any]:
    """A validated record's own data, without its children (stored as records of their own)."""
    exclude = {c for c in COLLECTIONS if c in type(obj).model_fields}
    return obj.model_dump(exclude=exclude, exclude_none=True, mode="json")


def _records(
    kind: str, ids: tuple[str, ...], obj: model._Record
) -> Iterator[tuple[str, tuple[str, ...], dict[str, Any]]]:
    """``(kind, ids, data)`` for a record and every record below it."""
    yield kind, ids, _dump(obj, kind)
    if kind in LEVELS and kind != "unit":
        child_kind = LEVELS[LEVELS.index(kind) + 1]
        children: dict[str, model._Record] = getattr(obj, COLLECTIONS[LEVELS.index(kind) + 1])
        for name, child in children.items():
            yield from _records(child_kind, (*ids, name), child)


# -- paths ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """What a document-API path names: a record (``kind``, ``ids``) and a field in it."""

    kind: str  # "root", "accounts", "hosts", "account", "stack", "service", "unit", "host"
    ids: tuple[str, ...]
    field: tuple[str, ...]

    @property
    def key(self) -> str:
        return record_key(self.kind, self.ids)

    @property
    def where(self) -> str:
        return doc_path(self.kind, self.ids)


def parse_doc_path(segs: list[str]) -> Target:
    """Map ``accounts/5/stacks/t/services/s/units/u/hostname`` (or ``hosts/h/...``)."""
    if not segs:
        return Target("root", (), ())
    if segs[0] == "hosts":
        if len(segs) == 1:
            return Target("hosts", (), ())
        return Target("host", (check_id(segs[1], "host name"),), tuple(segs[2:]))
    if segs[0] != "accounts":
        raise NotFound(f"no such path: /v1/{segs[0]} (expected accounts/ or hosts/)")
    if len(segs) == 1:
        return Target("accounts", (), ())
    ids = [segs[1]]
    i = 2
    while len(ids) < 4 and i + 1 < len(segs) and segs[i] == COLLECTIONS[len(ids)]:
        ids.append(segs[i + 1])
        i += 2
    check_ids(ids)
    return Target(LEVELS[len(ids) - 1], tuple(ids), tuple(segs[i:]))


def check_id(seg: str, what: str) -> str:
    """A path segment that names an account, stack, service, unit or host."""
    try:
        return model.check_name(seg)
    except ValueError as exc:
        raise BadRequest(f"path segment {seg!r} is not a valid {what}: {exc}") from None


def check_ids(segs: list[str]) -> None:
    for seg, what in zip(segs, ("account id", "stack name", "service name", "unit id"), strict=False):
        check_id(seg, what)


def seed_to_target(segs: list[str]) -> Target:
    """The seed's layout ``<account>/<stack>/<service>/<unit>/<field...>`` as a target."""
    n = min(len(segs), 4)
    if n == 0:
        raise BadRequest("a write needs at least an account: /v1/kv/<account>/...")
    check_ids(segs)
    return Target(LEVELS[n - 1], tuple(segs[:n]), tuple(segs[4:]))


# -- scopes -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scope:
    """What a principal may read, resolved in the snapshot a request reads from.

    ``units``: the unit ids whose views it may read; ``services``: the ``(account, stack,
    service)`` whose seed paths it may read; ``list_prefix``: the keys whose changes
    change its list of units. None means everything (the operator)."""

    principal: auth.Principal
    units: frozenset[str] | None
    services: frozenset[tuple[str, ...]] | None
    list_prefix: str

    def require_operator(self) -> None:
        if not self.principal.operator:
            raise Forbidden(f"a {self.principal.kind} token may not do this: it needs an operator token")

    def require_unit(self, unit_id: str) -> None:
        if self.units is not None and unit_id not in self.units:
            raise Forbidden(f"this {self.principal.kind} token may not read unit {unit_id!r}")

    def require_seed_path(self, segs: list[str]) -> None:
        """A seed path is readable if it leads to, or lies inside, a readable service."""
        if self.services is None or not segs:
            return  # everything, or the root (whose listing is pruned to the scope)
        n = min(len(segs), 3)
        if not any(tuple(segs[:n]) == svc[:n] for svc in self.services):
            raise Forbidden(f"this {self.principal.kind} token may not read /v1/kv/{'/'.join(segs)}")


async def scope_of(snap: Snapshot, principal: auth.Principal) -> Scope:
    if principal.operator:
        return Scope(principal, None, None, "i/")
    if principal.kind == "unit":
        idx = await snap.get(index_key(principal.subject))
        services = frozenset([tuple(idx.value.split("/"))]) if idx else frozenset()
        return Scope(principal, frozenset([principal.subject]), services, index_key(principal.subject))
    prefix = host_index_key(principal.subject)
    placed = await snap.range(prefix)
    units = frozenset(key_ids(i.key)[1] for i in placed)
    return Scope(principal, units, frozenset(tuple(i.value.split("/")) for i in placed), prefix)


async def authenticate(snap: Snapshot, token: str) -> auth.Principal | None:
    """The principal a (non-bootstrap) token stands for, or None."""
    d = auth.digest(token)
    item = await snap.get(f"k/{auth.token_id(d)}/")
    if item is None:
        return None
    rec = json.loads(item.value)
    if not auth.same_digest(rec["hash"], d):
        return None
    return auth.Principal(rec["kind"], rec["subject"], auth.token_id(d))


# -- reading ----------------------------------------------------------------------------


class _Records:
    """Records read in one snapshot, grouped for building trees; a record unchanged since
    ``previous`` (same key, same revision) is taken from there instead of decoded again."""

    def __init__(self, previous: dict[str, Record] | None = None) -> None:
        self.by_key: dict[str, Record] = {}
        self.previous = previous or {}

    async def range(self, snap: Snapshot, prefix: str) -> list[Record]:
        out = []
        for item in await snap.range(prefix):
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
    #: rendered whole views, by (unit id, format, revision): the JSON of a 100-peer view
    #: costs more to make than everything else in a request
    rendered: dict[tuple[str, str, int], bytes] = field(default_factory=dict, compare=False)
    #: what the next build after a change reuses: the records it read, and each unit's
    #: ``self/`` with the revisions it was made from (unit, service and host record)
    records: dict[str, Record] = field(default_factory=dict, compare=False)
    selves: dict[str, tuple[tuple[int, ...], Dir]] = field(default_factory=dict, compare=False)

    def unit(self, unit_id: str) -> Dir | None:
        node = self.service.children["all_hosts"]
        assert isinstance(node, Dir)
        me = node.children.get(unit_id)
        return me if isinstance(me, Dir) else None


class ServiceViews:
    """A bounded LRU of built :class:`ServiceView` s, checked against the store on each
    use (one ``max(mod_rev)`` per prefix), so that the views of a service's 100 units are
    built once per change rather than once per request."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._entries: OrderedDict[tuple[str, ...], ServiceView] = OrderedDict()

    def latest(self, key: tuple[str, ...]) -> ServiceView | None:
        """The last view built for ``key``, current or not (a rebuild reuses its parts)."""
        return self._entries.get(key)

    def get(self, key: tuple[str, ...], revs: tuple[int, ...]) -> ServiceView | None:
        hit = self._entries.get(key)
        if hit is None or hit.revs != revs:
            return None
        self._entries.move_to_end(key)
        return hit

    def put(self, key: tuple[str, ...], entry: ServiceView) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)


async def service_view(
    snap: Snapshot, a: str, t: str, s: str, cache: ServiceViews | None = None
) -> ServiceView | None:
    """The shared part of the views of service ``a/t/s`` (from ``cache`` when current)."""
    prefixes = [
        record_key("unit", (a, t, s)),
        record_key("service", (a, t)),
        record_key("stack", (a, t)),
        "h/",
    ]
    stamps = await snap.last_changes_at(prefixes)
    revs = tuple(rev for rev, _ in stamps)
    if cache is not None and (hit := cache.get((a, t, s), revs)):
        return hit
    previous = cache.latest((a, t, s)) if cache is not None else None
    recs = _Records(previous.records if previous else None)
    peers = await recs.range(snap, record_key("unit", (a, t, s)))
    await recs.range(snap, record_key("stack", (a, t)))
    services = await recs.range(snap, record_key("service", (a, t)))
    await _hosts(snap, recs, peers)
    svc = recs.get(record_key("service", (a, t, s)))
    stack = recs.get(record_key("stack", (a, t)))
    if svc is None or stack is None:
        return None
    service = _named(svc, [a, t, s], {"name": s, "stack_name": t, "account": a})
    all_hosts = Dir(rev=svc.rev, mtime=svc.item.mod_time)
    selves: dict[str, tuple[tuple[int, ...], Dir]] = {}
    for peer in peers:
        ids = key_ids(peer.item.key)
        host = recs.get(record_key("host", (peer.data["host"],))) if "host" in peer.data else None
        made_from = (peer.rev, svc.rev, host.rev if host else 0)
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
    )
    if cache is not None:
        cache.put((a, t, s), built)
    return built


async def view_tree(snap: Snapshot, unit_id: str, cache: ServiceViews | None = None) -> Node | None:
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
    """A whole view, knowing the :class:`ServiceView` it shares trees (and renderings) with."""

    shared: ServiceView | None = None
    unit_id: str = ""

    def unchanged_since(self, since: int) -> set[int]:
        """``id()`` s of this view's peer directories (``self/`` among them) built from
        records none of which changed after ``since``: a client holding the view as of
        ``since`` may keep them (see :func:`metafs.tree.to_meta_keeping`)."""
        if self.shared is None:
            return set()
        return {id(d) for made_from, d in self.shared.selves.values() if max(made_from) <= since}

    def render(self, fmt: str, make: Callable[[], bytes]) -> bytes:
        """``make()`` once per unit, format and revision; kept with the shared view."""
        if self.shared is None:
            return make()
        key = (self.unit_id, fmt, self.rev)
        body = self.shared.rendered.get(key)
        if body is None:
            body = self.shared.rendered[key] = make()
        return body


async def _scope(snap: Snapshot, ids: tuple[str, ...], levels: list[str] = LEVELS) -> _Records:
    """Read every record of ``levels`` at and below ``ids`` (an account, stack, service or
    unit path), and the hosts their units name."""
    recs = _Records()
    for level, kind in enumerate(levels):
        await recs.range(snap, KIND_PREFIX[kind] + "/" + "".join(i + "/" for i in ids[: level + 1]))
    units = [r for k, r in recs.by_key.items() if k.startswith("u/")]
    await _hosts(snap, recs, units)
    return recs


def _by_level(recs: _Records, kind: str) -> list[tuple[list[str], Record]]:
    p = KIND_PREFIX[kind] + "/"
    return [(key_ids(k), r) for k, r in sorted(recs.by_key.items()) if k.startswith(p)]


async def seed_tree(
    snap: Snapshot, segs: list[str], scope: Scope | None = None, cache: ServiceViews | None = None
) -> Node | None:
    """The seed's layout: ``<account>/<stack>/<service>/`` lists units; a unit's directory
    holds its ``self/`` files and ``all_hosts`` (its service's unit paths)."""
    check_ids(segs)
    if scope is not None:
        scope.require_seed_path(segs)
    if len(segs) >= 3:  # a service's units, or one of them: from the service's shared view
        if len(segs) == 3:
            return await _seed_service(snap, segs, cache)
        shared = await service_view(snap, segs[0], segs[1], segs[2], cache)
        unit = _seed_unit(shared, segs[3]) if shared else None
        return descend(unit, segs[4:]) if unit else None
    # accounts and stacks from their records; each service as above
    recs = await _scope(snap, tuple(segs), LEVELS[:3])
    root = Dir()
    dirs: dict[tuple[str, ...], Dir] = {(): root}
    for level, kind in enumerate(LEVELS[:3]):
        for rids, rec in _by_level(recs, kind):
            parent = dirs.get(tuple(rids[:level]))
            if parent is None:
                continue
            node = await _seed_service(snap, rids, cache) if kind == "service" else None
            dirs[tuple(rids)] = parent.add(rids[-1], node or Dir(rev=rec.rev, mtime=rec.item.mod_time))  # type: ignore[assignment]
    if scope is not None and scope.services is not None:
        _prune(root, scope.services)
    return descend(root, segs)


async def _seed_service(snap: Snapshot, service: list[str], cache: ServiceViews | None) -> Dir | None:
    """A service's directory in the seed layout: one directory per unit."""
    shared = await service_view(snap, service[0], service[1], service[2], cache)
    if shared is None:
        return None
    all_hosts = shared.service.children["all_hosts"]
    assert isinstance(all_hosts, Dir)
    listing = Dir()
    for uid in all_hosts.children:
        listing.add(uid, _seed_unit(shared, uid))  # type: ignore[arg-type]
    return listing


def _seed_unit(shared: ServiceView, unit_id: str) -> Dir | None:
    """A unit's directory in the seed layout: its ``self`` files and ``all_hosts``, the
    seed paths of its service's units (a copy: the shared tree stays as it is)."""
    me = shared.unit(unit_id)
    if me is None:
        return None
    unit = Dir(dict(me.children), me.rev, me.mtime)
    unit.add("all_hosts", shared.seed_peers)
    return unit


def _prune(
    root: Dir, services: frozenset[tuple[str, ...]], depth: int = 0, path: tuple[str, ...] = ()
) -> None:
    """Drop from a seed tree every account, stack and service outside ``services``."""
    if depth == 3:
        return
    for name in list(root.children):
        child_path = (*path, name)
        if not any(svc[: depth + 1] == child_path for svc in services):
            del root.children[name]
        else:
            child = root.children[name]
            if isinstance(child, Dir):
                _prune(child, services, depth + 1, child_path)


async def document_tree(snap: Snapshot, segs: list[str]) -> Node | None:
    """The document API: the same shape as a load document (what GET shows, PUT takes)."""
    target = parse_doc_path(segs)
    if target.kind in ("host", "hosts", "root"):
        hosts = Dir()
        for item in await snap.range("h/"):
            hosts.add(key_ids(item.key)[0], Record.load(item).tree())
        if target.kind != "root":
            return descend(hosts, segs[1:])
    recs = await _scope(snap, target.ids if target.kind in LEVELS else ())
    accounts = Dir()
    dirs: dict[tuple[str, ...], Dir] = {(): accounts}
    for level, kind in enumerate(LEVELS):
        for rids, rec in _by_level(recs, kind):
            parent = dirs.get(tuple(rids[:level]))
            if parent is None:
                continue
            node = rec.tree()
            if kind != "unit":
                node.add(COLLECTIONS[level + 1], Dir(rev=rec.rev, mtime=rec.item.mod_time))
            if level:
                parent = parent.children[COLLECTIONS[level]]  # type: ignore[assignment]
            dirs[tuple(rids)] = parent.add(rids[-1], node)  # type: ignore[assignment]
    if target.kind == "root":
        root = Dir()
        root.add("accounts", accounts)
        root.add("hosts", hosts)
        return root
    return descend(accounts, segs[1:])


async def watch_tree(snap: Snapshot, unit_ids: list[str], with_list: bool, scope: Scope | None = None) -> Dir:
    """For each unit, the last revision at which anything its view shows may have changed
    (``units/<id>``), and when the list of units last changed (``list``). Long-polled,
    this is how one request keeps many views fresh. Units outside the scope are left out
    (a unit moved off a host disappears from its mount)."""
    units = Dir()
    shared: dict[str, int] = {}  # the units of one service share all but their index key
    for uid in unit_ids:
        if scope is not None and scope.units is not None and uid not in scope.units:
            continue  # out of scope (or moved out of it): left out, so the watcher drops it
        rev = await snap.last_change(index_key(uid))
        idx = await snap.get(index_key(uid))
        if idx is not None:
            if idx.value not in shared:
                a, t, s = idx.value.split("/")
                prefixes = [
                    record_key("unit", (a, t, s)),
                    record_key("service", (a, t)),
                    record_key("stack", (a, t)),
                ]
                shared[idx.value] = max(rev for rev, _ in await snap.last_changes_at([*prefixes, "h/"]))
            rev = max(rev, shared[idx.value])
        units.add(uid, Leaf(rev, rev))
    d = Dir()
    d.add("units", units)
    if with_list:
        rev = await snap.last_change(scope.list_prefix if scope else "i/")
        d.add("list", Leaf(rev, rev))
    return d


async def tokens_tree(snap: Snapshot) -> Dir:
    """Every token's id, kind, subject and creation time (never the token or its hash)."""
    d = Dir()
    for item in await snap.range("k/"):
        rec = json.loads(item.value)
        entry = Dir()
        for k in ("kind", "subject", "created"):
            entry.add(k, Leaf(rec[k], item.mod_rev, item.mod_time))
        d.add(rec["id"], entry)
    return d


async def units_tree(snap: Snapshot, scope: Scope | None = None) -> Dir:
    """Every unit id the scope may see, each a leaf holding its seed path (what a
    host-mode mount lists)."""
    d = Dir()
    if scope is None or scope.units is None:
        items = await snap.range("i/")
    else:
        got = await snap.get_many([index_key(uid) for uid in sorted(scope.units)])
        items = [i for i in got.values() if i is not None]
        await snap.last_change(scope.list_prefix)  # a unit placed or removed changes the list
    for item in items:
        uid = key_ids(item.key)[0]
        d.add(uid, Leaf(f"{item.value}/{uid}", item.mod_rev, item.mod_time))
    return d


# -- writing ----------------------------------------------------------------------------


def parse_body(body: bytes, content_type: str, where: str) -> Any:
    """A request body as data: JSON or YAML (safe loading only)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(f"{where}: body is not UTF-8") from None
    try:
        if "json" in content_type:
            return json.loads(text)
        return yaml.load(text, Loader=_SafeLoader)
    except RecursionError:
        raise BadRequest(f"{where}: nested too deeply") from None
    except (ValueError, yaml.YAMLError) as exc:
        raise BadRequest(f"{where}: cannot parse body: {exc}".splitlines()[0]) from None


class _SafeLoader(yaml.SafeLoader):
    """``yaml.safe_load`` that also refuses aliases: ``*a`` repeated in a list of ``*b``
    repeated ... makes a few bytes expand to billions of nodes ("billion laughs")."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(None, None, "YAML aliases (*name) are not allowed", mark)
        return super().compose_node(parent, index)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class WriteResult:
    revision: int
    changed: int  # records written (0: the store already held exactly this)


class Catalog:
    """Reads and writes of the model over one :class:`Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.views = ServiceViews()

    async def _commit(self, plan: Any) -> WriteResult:
        """Run ``plan(snapshot) -> (ops, guards, changed)`` until it commits."""
        for _ in range(_MAX_RETRIES):
            async with self.store.snapshot() as snap:
                ops, guards, changed = await plan(snap)
            try:
                rev = await self.store.commit(ops, guards)
            except Conflict:
                continue
            return WriteResult(rev, changed)
        raise Exists("too many concurrent writes to the same records; try again")

    async def _upsert(
        self,
        snap: Snapshot,
        records: list[tuple[str, tuple[str, ...], dict[str, Any]]],
        now: float,
    ) -> tuple[list[Op], list[Guard], int]:
        ops: list[Op] = []
        guards: list[Guard] = []
        wanted = [record_key(kind, ids) for kind, ids, _ in records]
        wanted += [index_key(ids[3]) for kind, ids, _ in records if kind == "unit"]
        found = await snap.get_many(wanted)  # one round trip where the store allows
        for kind, ids, data in records:
            key = record_key(kind, ids)
            item = found[key]
            old = Record.load(item) if item else None
            if kind == "unit":
                where = f"{ids[0]}/{ids[1]}/{ids[2]}"
                idx = found[index_key(ids[3])]
                if idx is not None and idx.value != where:
                    # An index entry is authoritative only while its unit record exists.
                    other = await snap.get(record_key("unit", (*idx.value.split("/"), ids[3])))
                    if other is not None:
                        raise Exists(
                            f"{doc_path(kind, ids)}: unit id {ids[3]!r} already exists at "
                            f"{doc_path(kind, (*idx.value.split('/'), ids[3]))}"
                        )
                if idx is None or idx.value != where:
                    ops.append(Put(index_key(ids[3]), where))
                    guards.append(Guard(index_key(ids[3]), idx.mod_rev if idx else 0))
            if old is not None and old.data == data:
                continue
            if kind == "unit":
                ops.extend(_host_index_ops(ids, old.data if old else None, data))
            ops.append(Put(key, encode_record(data, old, now)))
            guards.append(Guard(key, old.rev if old else 0))
        return ops, guards, sum(isinstance(op, Put) and op.key.startswith(RECORD_PREFIXES) for op in ops)

    async def _require_parent(self, snap: Snapshot, target: Target) -> list[Guard]:
        if target.kind in ("host", "account"):
            return []
        parent_ids = target.ids[:-1]
        parent_kind = LEVELS[len(parent_ids) - 1]
        item = await snap.get(record_key(parent_kind, parent_ids))
        if item is None:
            raise NotFound(f"{doc_path(parent_kind, parent_ids)} does not exist; create it first")
        return [Guard(item.key, item.mod_rev)]

    async def load(self, data: Any) -> WriteResult:
        """Create or replace everything a load document names, in one transaction."""
        doc = model.validate(model.Document, data)
        assert isinstance(doc, model.Document)
        if dups := model.duplicate_unit_ids(doc):
            raise model.ModelError(dups)
        records = [r for h, host in doc.hosts.items() for r in _records("host", (h,), host)]
        for a, acc in doc.accounts.items():
            records.extend(_records("account", (a,), acc))
        now = time.time()

        async def plan(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
            return await self._upsert(snap, records, now)

        return await self._commit(plan)

    async def put(self, target: Target, body: bytes, content_type: str) -> WriteResult:
        """Write a whole record (and the records below it that the body names) or one field."""
        if target.kind not in KIND_MODEL:
            raise BadRequest(f"cannot write /{target.kind}: write a record below it, or use load")
        now = time.time()
        where = target.where
        if not target.field:
            data = parse_body(body, content_type, where)
            obj = model.validate(KIND_MODEL[target.kind], data if data is not None else {}, where.split("."))
            records = list(_records(target.kind, target.ids, obj))

            async def plan(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
                guards = await self._require_parent(snap, target)
                ops, more, n = await self._upsert(snap, records, now)
                return ops, guards + more, n

            return await self._commit(plan)

        if target.field[0] in COLLECTIONS:
            coll = target.field[0]
            raise BadRequest(f"{where}.{coll}: write each one at {where.replace('.', '/')}/{coll}/<name>")
        if "json" in content_type or "yaml" in content_type:
            candidates = [parse_body(body, content_type, where)]
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"{where}: body is not UTF-8") from None
            candidates = [text]
            with contextlib.suppress(ValueError):
                candidates.append(json.loads(text))
            candidates.append(text.splitlines())

        async def plan_field(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
            rec = await self._existing(snap, target)
            first_error: model.ModelError | None = None
            for value in candidates:
                data = json.loads(json.dumps(rec.data))
                _set_in(data, target.field, value, where)
                try:
                    obj = model.validate(KIND_MODEL[target.kind], data, where.split("."))
                except model.ModelError as exc:
                    first_error = first_error or exc
                    continue
                return await self._upsert(snap, [(target.kind, target.ids, _dump(obj, target.kind))], now)
            assert first_error is not None
            raise first_error

        return await self._commit(plan_field)

    async def create_token(self, kind: str, subject: str) -> tuple[str, dict[str, Any]]:
        """Mint a token; only its digest is stored. Returns the token (shown once)."""
        if kind not in auth.KINDS:
            raise BadRequest(f"kind {kind!r}: expected one of {', '.join(auth.KINDS)}")
        if kind == "operator":
            subject = ""
        else:
            try:
                model.check_name(subject)
            except ValueError as exc:
                raise BadRequest(f"subject: {exc}") from None
        token = auth.new_token(kind)
        d = auth.digest(token)
        rec = {
            "id": auth.token_id(d),
            "hash": d,
            "kind": kind,
            "subject": subject,
            "created": iso(time.time()),
        }
        key = f"k/{rec['id']}/"
        await self.store.commit([Put(key, json.dumps(rec))], [Guard(key, 0)])
        return token, {k: v for k, v in rec.items() if k != "hash"}

    async def revoke_token(self, token_id_: str) -> WriteResult:
        key = f"k/{token_id_}/"

        async def plan(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
            item = await snap.get(key)
            if item is None:
                raise NotFound(f"no token with id {token_id_!r}")
            return [Delete(key)], [Guard(key, item.mod_rev)], 1

        return await self._commit(plan)

    async def _existing(self, snap: Snapshot, target: Target) -> Record:
        item = await snap.get(target.key)
        if item is None:
            raise NotFound(f"{target.where} does not exist")
        return Record.load(item)

    async def delete(self, target: Target) -> WriteResult:
        """Delete a record with everything below it, or one field of a record."""
        if target.kind not in KIND_MODEL:
            raise BadRequest(f"cannot delete /{target.kind}: delete the records below it")
        where = target.where

        async def plan(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
            rec = await self._existing(snap, target)
            guards = [Guard(target.key, rec.rev)]
            if target.field:
                data = json.loads(json.dumps(rec.data))
                _del_in(data, target.field, where)
                obj = model.validate(KIND_MODEL[target.kind], data, where.split("."))
                record = [(target.kind, target.ids, _dump(obj, target.kind))]
                writes, more, n = await self._upsert(snap, record, time.time())
                return writes, guards + more, n
            ops: list[Op] = [Delete(target.key)]
            if target.kind in LEVELS:
                level = LEVELS.index(target.kind)
                for kind in LEVELS[level + 1 :]:
                    ops.append(Delete(KIND_PREFIX[kind] + target.key[1:], prefix=True))
                unit_prefix = "u" + target.key[1:]
                for item in await snap.range(unit_prefix):
                    ids = tuple(key_ids(item.key))
                    ops.append(Delete(index_key(ids[3])))
                    ops.extend(_host_index_ops(ids, Record.load(item).data, None))
            return ops, guards, 1

        return await self._commit(plan)


def _host_index_ops(ids: tuple[str, ...], old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Op]:
    """Keep ``hu/<host>/<unit>/`` in step with a unit's ``host`` field."""
    before, after = (old or {}).get("host"), (new or {}).get("host")
    if before == after and old is not None:
        return []
    ops: list[Op] = []
    if before and before != after:
        ops.append(Delete(host_index_key(before, ids[3])))
    if after:
        ops.append(Put(host_index_key(after, ids[3]), "/".join(ids[:3])))
    return ops


def _set_in(data: dict[str, Any], path: tuple[str, ...], value: Any, where: str) -> None:
    node = data
    for i, name in enumerate(path[:-1]):
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise BadRequest(f"{where}.{'.'.join(path[: i + 1])}: is a value, not a mapping")
        node = child
    node[path[-1]] = value


def _del_in(data: dict[str, Any], path: tuple[str, ...], where: str) -> None:
    node: Any = data
    for name in path[:-1]:
        node = node.get(name) if isinstance(node, dict) else None
    if not isinstance(node, dict) or path[-1] not in node:
        raise NotFound(f"{where}.{'.'.join(path)} does not exist")
    del node[path[-1]]
