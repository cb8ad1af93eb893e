"""The other read trees: the seed's layout (``/v1/kv/``), the document API
(``/v1/accounts/``, ``/v1/hosts/``), the watch answer, tokens, and the list of units."""

from __future__ import annotations

import json

from ..store import Snapshot
from ..tree import Dir, Leaf, Node, descend
from .keys import COLLECTIONS, KIND_PREFIX, LEVELS, index_key, key_ids, view_prefixes
from .paths import check_ids, parse_doc_path
from .records import Record
from .scope import Scope
from .views import ServiceView, ServiceViews, _hosts, _Records, service_view


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
    # out of scope (or moved out of it): left out, so the watcher drops it
    wanted = [u for u in unit_ids if scope is None or scope.units is None or u in scope.units]
    keys = [index_key(uid) for uid in wanted]
    # three reads in all (one round trip each on etcd), however many units and services
    changes = await snap.last_changes_at(keys)
    found = await snap.get_many(keys)
    services = sorted({idx.value for idx in found.values() if idx is not None})
    per_service = [view_prefixes(*service.split("/")) for service in services]
    flat = [p for prefixes in per_service for p in prefixes]
    stamps = await snap.last_changes_at(flat) if flat else []
    # the units of one service share all but their index key: when its records last changed
    shared: dict[str, int] = {}
    at = 0
    for service, prefixes in zip(services, per_service, strict=True):
        shared[service] = max(rev for rev, _ in stamps[at : at + len(prefixes)])
        at += len(prefixes)
    units = Dir()
    for uid, key, (rev, _) in zip(wanted, keys, changes, strict=True):
        idx = found[key]
        if idx is not None:
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
