"""Consul's catalog, health and agent reads, so that what reads a Consul catalog
(Prometheus' consul SD, consul-template's ``service``, Traefik's Consul Catalog provider,
py-consul, the npm ``consul`` client) reads metafs unchanged.

A host is a Consul node, a unit an instance of its service with one passing check (see
:mod:`metafs.catalog.discovery` for the names, ports and tags). Every read is a blocking
query by Consul's rules (``index``, ``wait``, ``X-Consul-Index``: see ``Api.read``), whose
index moves with what the answer reads. Writes (registrations, checks, maintenance) are
refused: the catalog is written through metafs's own API.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from ..catalog import Scope, discovery
from ..catalog.discovery import Instance, Instances, Node
from ..store import Snapshot
from . import consul
from .http import JSON, READ_AT, HTTPError

#: what every catalog read takes: Consul's blocking query, and what clients send that
#: changes nothing here (one datacenter, every read consistent, no namespaces or peers)
PARAMS = frozenset(
    {"dc", "stale", "consistent", "cached", "ns", "partition", "near", "pretty", "token", "passing", "filter"}
)
#: filters a client may give more than once (each must hold)
REPEATABLE = frozenset({"tag", "node-meta"})
#: the node of a unit placed on no host (no host may be so named: ids never start with -)
UNPLACED = "-unplaced"
#: Consul's health states; every instance's one check is passing
STATES = ("any", "passing", "warning", "critical")
CHECK_NAME = "metafs unit"
#: what the routes answer to a write
READ_ONLY = (
    "metafs's catalog is read-only through Consul's API: units and hosts are written through"
    " metafs's own API (PUT /v1/accounts/..., PUT /v1/hosts/..., POST /v1/load)"
)


@dataclass(frozen=True, slots=True)
class Filters:
    """What a request asks to keep: instances with every ``tag`` (any case), on nodes with
    every ``node-meta`` ``key:value``."""

    tags: tuple[str, ...]
    node_meta: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, request: Request, datacenter: str) -> Filters:
        q = request.query_params
        if "filter" in q:
            raise HTTPError(
                400,
                "filter: metafs evaluates no filter expressions; use tag= and node-meta= (repeatable)",
            )
        dc = q.get("dc")
        if dc not in (None, "", datacenter):
            raise HTTPError(400, f"dc={dc!r}: this is datacenter {datacenter!r}, the only one")
        meta = []
        for pair in q.getlist("node-meta"):
            key, sep, value = pair.partition(":")
            if not sep or not key:
                raise HTTPError(400, f"node-meta={pair!r}: expected key:value")
            meta.append((key, value))
        return cls(tuple(t.lower() for t in q.getlist("tag")), tuple(meta))

    def node_ok(self, node: Node | None) -> bool:
        return all(node is not None and node.meta.get(k) == v for k, v in self.node_meta)

    def keeps(self, inst: Instance, node: Node | None) -> bool:
        if self.tags:
            mine = {t.lower() for t in inst.tags}
            if not all(t in mine for t in self.tags):
                return False
        return self.node_ok(node)


def _node_json(node: Node | None, name: str, datacenter: str) -> dict[str, Any]:
    address = node.address if node else ""
    return {
        "ID": "",
        "Node": name,
        "Address": address,
        "Datacenter": datacenter,
        "TaggedAddresses": {"lan": address, "wan": address} if address else {},
        "Meta": node.meta if node else {},
        "CreateIndex": node.create_rev if node else 1,
        "ModifyIndex": node.mod_rev if node else 1,
    }


def _meta(inst: Instance) -> dict[str, str]:
    a, t, s = inst.ids
    fixed = {
        "cardinal_value": str(inst.cardinal),
        "hostname": inst.hostname,
        "deployment_unit_id": f"{a}/{t}/{s}/{inst.unit}",
        "account": a,
        "stack": t,
        "service": s,
    }
    return {**inst.labels, **fixed}


def _service_json(inst: Instance, name: str) -> dict[str, Any]:
    return {
        "ID": inst.unit,
        "Service": name,
        "Tags": inst.tags,
        "Address": inst.address,
        "Meta": _meta(inst),
        "Port": inst.port or 0,
        "Weights": {"Passing": 1, "Warning": 1},
        "EnableTagOverride": False,
        "CreateIndex": inst.create_rev,
        "ModifyIndex": inst.mod_rev,
    }


def _check_json(inst: Instance, name: str) -> dict[str, Any]:
    return {
        "Node": inst.host or UNPLACED,
        "CheckID": f"service:{inst.unit}",
        "Name": CHECK_NAME,
        "Status": "passing",
        "Notes": "",
        "Output": "",
        "ServiceID": inst.unit,
        "ServiceName": name,
        "ServiceTags": inst.tags,
        "Type": "",
        "CreateIndex": inst.create_rev,
        "ModifyIndex": inst.mod_rev,
    }


def _catalog_service_json(inst: Instance, name: str, node: Node | None, datacenter: str) -> dict[str, Any]:
    n = _node_json(node, inst.host or UNPLACED, datacenter)
    return {
        "ID": n["ID"],
        "Node": n["Node"],
        "Address": n["Address"],
        "Datacenter": datacenter,
        "TaggedAddresses": n["TaggedAddresses"],
        "NodeMeta": n["Meta"],
        "ServiceKind": "",
        "ServiceID": inst.unit,
        "ServiceName": name,
        "ServiceTags": inst.tags,
        "ServiceAddress": inst.address,
        "ServiceWeights": {"Passing": 1, "Warning": 1},
        "ServiceMeta": _meta(inst),
        "ServicePort": inst.port or 0,
        "ServiceEnableTagOverride": False,
        "CreateIndex": inst.create_rev,
        "ModifyIndex": inst.mod_rev,
    }


#: a read's result (any JSON value), made in a snapshot for a scope
Made = Callable[[Snapshot, Scope], Awaitable[Any]]
#: ``(service name, instance, its node)``
Placed = tuple[str, Instance, Node | None]


@dataclass(frozen=True, slots=True)
class Asked:
    """One catalog read: what it names after its path (``health/service/<name>``), and
    its filters."""

    arg: str
    filters: Filters


class ConsulCatalog:
    """The catalog, health and agent reads. Each reads only what its answer shows, so
    its ``X-Consul-Index`` and its blocking query move with that alone."""

    def __init__(self, datacenter: str, instances: Instances) -> None:
        self.dc = datacenter
        self.instances = instances
        self.node_name = platform.node() or "metafs"
        self.reads: dict[str, Callable[[Snapshot, Scope, Asked], Awaitable[Any]]] = {
            "agent/self": self.agent_self,
            "agent/members": self.members,
            "catalog/datacenters": self.datacenters,
            "catalog/services": self.services,
            "catalog/service": self.catalog_service,
            "catalog/nodes": self.catalog_nodes,
            "catalog/node": self.catalog_node,
            "health/service": self.health_service,
            "health/checks": self.health_checks,
            "health/node": self.health_node,
            "health/state": self.health_state,
        }

    def made(self, route: str, rest: list[str], request: Request) -> Made:
        """What ``GET /v1/<route>/<rest>`` answers, or an HTTPError (404: no such read)."""
        path = "/".join([route, *rest[:1]])
        read = self.reads.get(path)
        if read is None or len(rest) != (2 if path in _WITH_ARG else 1):
            served = ", ".join(sorted(self.reads))
            raise HTTPError(404, f"no such route: /v1/{'/'.join([route, *rest])} (metafs serves {served})")
        asked = Asked(rest[1] if len(rest) == 2 else "", Filters.parse(request, self.dc))
        return functools.partial(_call, read, asked)

    async def _in_scope(self, snap: Snapshot, scope: Scope, only: str | None = None) -> list[Placed]:
        """Every instance in scope (``only``: of the service of that name), with its node."""
        placed = await discovery.in_scope(snap, scope, self.instances, only)
        found = [(svc.name, i) for svc, kept in placed for i in kept.instances]
        nodes = await discovery.nodes(snap, {i.host for _, i in found})
        return [(name, i, nodes.get(i.host)) for name, i in found]

    async def _kept(
        self, snap: Snapshot, scope: Scope, asked: Asked, only: str | None = None
    ) -> list[Placed]:
        return [p for p in await self._in_scope(snap, scope, only) if asked.filters.keeps(p[1], p[2])]

    async def _nodes(self, snap: Snapshot, scope: Scope) -> dict[str, Node]:
        """The nodes in scope: every host for a scope of everything, else those its
        services' instances are on."""
        if scope.services is None:
            return await discovery.nodes(snap)
        return {n.name: n for _, _, n in await self._in_scope(snap, scope) if n is not None}

    async def _on_node(self, snap: Snapshot, scope: Scope, asked: Asked) -> list[Placed]:
        return [p for p in await self._kept(snap, scope, asked) if (p[1].host or UNPLACED) == asked.arg]

    async def agent_self(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        config = {"Datacenter": self.dc, "NodeName": self.node_name, "Server": True, "Version": __version__}
        member = {
            "Name": self.node_name,
            "Addr": "127.0.0.1",
            "Port": 8301,
            "Tags": {"dc": self.dc},
            "Status": 1,
        }
        return {"Config": config, "Member": member, "Meta": {"metafs": __version__}, "Stats": {}}

    async def members(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        nodes = await self._nodes(snap, scope)
        return [
            {"Name": n.name, "Addr": n.address, "Port": 8301, "Tags": {"dc": self.dc, **n.meta}, "Status": 1}
            for _, n in sorted(nodes.items())
            if asked.filters.node_ok(n)
        ]

    async def datacenters(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        return [self.dc]

    async def services(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        tags: dict[str, set[str]] = {}
        for name, inst, node in await self._in_scope(snap, scope):
            if asked.filters.node_ok(node):
                tags.setdefault(name, set()).update(inst.tags)
        return {name: sorted(t) for name, t in sorted(tags.items())}

    async def catalog_service(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        placed = await self._kept(snap, scope, asked, asked.arg)
        return [_catalog_service_json(i, name, node, self.dc) for name, i, node in placed]

    async def health_service(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        return [
            {
                "Node": _node_json(node, i.host or UNPLACED, self.dc),
                "Service": _service_json(i, name),
                "Checks": [_check_json(i, name)],
            }
            for name, i, node in await self._kept(snap, scope, asked, asked.arg)
        ]

    async def health_checks(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        return [_check_json(i, name) for name, i, _ in await self._kept(snap, scope, asked, asked.arg)]

    async def catalog_nodes(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        nodes = await self._nodes(snap, scope)
        return [_node_json(n, name, self.dc) for name, n in sorted(nodes.items()) if asked.filters.node_ok(n)]

    async def catalog_node(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        """The node and its instances in scope; ``null`` (Consul's answer) for a node
        unknown, or (to a scoped token) running nothing it may read."""
        placed = await self._on_node(snap, scope, asked)
        node = (await discovery.nodes(snap, [asked.arg])).get(asked.arg)
        if not placed and (node is None or scope.services is not None):
            return None
        return {
            "Node": _node_json(node, asked.arg, self.dc),
            "Services": {i.unit: _service_json(i, name) for name, i, _ in placed},
        }

    async def health_node(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        return [_check_json(i, name) for name, i, _ in await self._on_node(snap, scope, asked)]

    async def health_state(self, snap: Snapshot, scope: Scope, asked: Asked) -> Any:
        if asked.arg not in STATES:
            raise HTTPError(400, f"state {asked.arg!r}: expected one of {', '.join(STATES)}")
        if asked.arg not in ("any", "passing"):
            await discovery.services(snap, scope)  # an index that moves with the catalog
            return []
        return [_check_json(i, name) for name, i, _ in await self._kept(snap, scope, asked)]


async def _call(
    read: Callable[[Snapshot, Scope, Asked], Awaitable[Any]], asked: Asked, snap: Snapshot, scope: Scope
) -> bytes:
    return await discovery.encoded(await read(snap, scope, asked))


#: the reads that name something after their path (``health/service/<name>``)
_WITH_ARG = frozenset(
    {"catalog/service", "catalog/node", "health/service", "health/checks", "health/node", "health/state"}
)


def answer(request: Request, made: bytes, snap: Snapshot) -> Response:
    """A catalog read's JSON with Consul's headers; kept until the next commit."""
    request.scope[READ_AT] = snap.revision
    return Response(made, headers=consul.headers(snap), media_type=JSON)
