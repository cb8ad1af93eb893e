"""``/v1/fleet/...``: the fleet as lists that stay small whatever its size, for the web
page (and anyone): services with their unit counts and last change, hosts with their
units, units by service or host, and a search over unit ids, hostnames, addresses, hosts
and labels. Each list is paged (``offset``, ``limit``) and sorted naturally (``u2``
before ``u10``); each is a long poll with ``index``/``wait`` like every read, so a page
is kept live by asking again with the ``X-Metafs-Index`` it got.

Made from the same decoded instances as the service catalog
(:class:`~metafs.catalog.discovery.Instances`), for what the token may read.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import auth
from ..catalog import Scope, discovery
from ..catalog.discovery import Instance, Instances, natural
from ..catalog.records import iso
from ..catalog.views import BIG_SERVICE
from ..protocol import INDEX_HEADER, REVISION_HEADER
from ..store import Snapshot, yielding
from .discovery_routes import Read
from .history import poll_index
from .http import JSON, READ_AT, HTTPError

#: rows in one page unless ``limit`` says otherwise, and at most
PAGE, MAX_PAGE = 100, 1000
#: search results unless ``limit`` says otherwise, and at most
FOUND, MAX_FOUND = 20, 200
#: the fields a search looks in, in the order a match is reported
SEARCHED = ("unit", "hostname", "address", "host")


def _unit_row(inst: Instance) -> dict[str, Any]:
    a, t, s = inst.ids
    return {
        "unit": inst.unit,
        "account": a,
        "stack": t,
        "service": s,
        "hostname": inst.hostname,
        "address": inst.address,
        "host": inst.host,
        "cardinal_value": inst.cardinal,
        "changed": inst.mod_rev,
        "changed_at": iso(inst.mod_time),
    }


def _int(request: Request, name: str, default: int, most: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    if not text.isdigit() or int(text) > most:
        raise HTTPError(400, f"{name}={text!r}: expected a whole number from 0 to {most}")
    return int(text)


def _page(request: Request, rows: list[Any]) -> dict[str, Any]:
    offset = _int(request, "offset", 0, 10**9)
    limit = _int(request, "limit", PAGE, MAX_PAGE)
    return {"total": len(rows), "offset": offset, "items": rows[offset : offset + limit]}


def matched(inst: Instance, q: str) -> str | None:
    """The first field of ``inst`` that contains ``q`` (lower case), or None."""
    for name, value in zip(SEARCHED, (inst.unit, inst.hostname, inst.address, inst.host), strict=True):
        if q in value.lower():
            return name
    for k, v in {**inst.service_labels, **inst.labels}.items():
        if q in f"{k}={v}".lower():
            return f"label {k}"
    return None


class Fleet:
    """The ``/v1/fleet/<list>`` reads: ``services``, ``hosts``, ``units`` and ``search``."""

    PARAMS = frozenset({"offset", "limit", "service", "host", "q"})

    def __init__(self, read: Read, instances: Instances) -> None:
        self.read = read
        self.instances = instances

    async def _placed(self, snap: Snapshot, scope: Scope) -> list[Instance]:
        return [
            i for _, placed in await discovery.in_scope(snap, scope, self.instances) for i in placed.instances
        ]

    async def services(self, snap: Snapshot, scope: Scope, request: Request) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        for svc, placed in await discovery.in_scope(snap, scope, self.instances):
            rev, when = placed.changed
            a, t, s = svc.ids
            rows.append(
                {"account": a, "stack": t, "service": s, "units": len(placed.instances), "changed": rev}
                | {"changed_at": iso(when) if rev else None, "consul_name": svc.name}
            )
        rows.sort(key=lambda r: (natural(r["account"]), natural(r["stack"]), natural(r["service"])))
        return _page(request, rows)

    async def hosts(self, snap: Snapshot, scope: Scope, request: Request) -> dict[str, Any]:
        placed = await self._placed(snap, scope)
        counts = Counter(i.host for i in placed)
        names: Iterable[str] | None = None if scope.services is None else [h for h in counts if h]
        nodes = await discovery.nodes(snap, names)
        rows: list[dict[str, Any]] = [
            {"host": n.name, "address": n.address, "hostname": n.hostname, "units": counts.get(n.name, 0)}
            for n in nodes.values()
        ]
        # hosts named by units but not (yet) recorded, and the units placed on none
        rows += [
            {"host": h, "address": "", "hostname": "", "units": n}
            for h, n in counts.items()
            if h not in nodes
        ]
        rows.sort(key=lambda r: natural(r["host"]))
        return _page(request, rows)

    async def units(self, snap: Snapshot, scope: Scope, request: Request) -> dict[str, Any]:
        q = request.query_params
        placed = await self._placed(snap, scope)
        if "service" in q:
            ids = tuple(q["service"].split("/"))
            if len(ids) != 3:
                raise HTTPError(400, f"service={q['service']!r}: expected ACCOUNT/STACK/SERVICE")
            placed = [i for i in placed if i.ids == ids]
        if "host" in q:
            placed = [i for i in placed if i.host == q["host"]]
        placed.sort(key=lambda i: i.order)
        page = _page(request, placed)
        page["items"] = [_unit_row(i) for i in page["items"]]
        return page

    async def search(self, snap: Snapshot, scope: Scope, request: Request) -> dict[str, Any]:
        q = request.query_params.get("q", "").strip().lower()
        if not q:
            raise HTTPError(400, "q: what to look for (a unit id, hostname, address, host or label)")
        limit = _int(request, "limit", FOUND, MAX_FOUND)
        hits = []
        # 50,000 units are ~150 ms of matching: the loop runs between batches
        async for inst in yielding(await self._placed(snap, scope), BIG_SERVICE):
            field = matched(inst, q)
            if field is not None:
                exact = q in (inst.unit.lower(), inst.hostname.lower(), inst.address.lower())
                hits.append((not exact, natural(inst.hostname), natural(inst.unit), field, inst))
        hits.sort(key=lambda h: h[:3])
        items = [{**_unit_row(inst), "matched": field} for *_, field, inst in hits[:limit]]
        return {"total": len(hits), "offset": 0, "items": items}

    async def get(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        lists: dict[str, Callable[[Snapshot, Scope, Request], Any]] = {
            "services": self.services,
            "hosts": self.hosts,
            "units": self.units,
            "search": self.search,
        }
        made = lists.get(segs[1]) if len(segs) == 2 else None
        if made is None:
            raise HTTPError(404, f"no such route: /v1/{'/'.join(segs)} (see /v1/fleet/{{{','.join(lists)}}})")

        async def resolve(snap: Snapshot, scope: Scope) -> bytes:
            return await discovery.encoded(await made(snap, scope, request))

        def render(body: bytes, snap: Snapshot) -> Response:
            request.scope[READ_AT] = snap.revision
            index = str(poll_index(snap))
            return Response(body, headers={INDEX_HEADER: index, REVISION_HEADER: index}, media_type=JSON)

        return await self.read(request, principal, resolve, "/v1/" + "/".join(segs), self.PARAMS, render)
