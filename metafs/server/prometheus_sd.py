"""Prometheus' HTTP service discovery (``http_sd_configs``) on ``/v1/prometheus/targets``:
one target group per unit that has an address, labelled with what metafs knows of it.

Prometheus sends nothing but ``Authorization: Bearer`` (``authorization: {credentials:
...}``), so this route takes a bearer token without the metadata header: see the security
model for why that is guard enough. Each token sees the units it may read.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..catalog import Scope, discovery
from ..catalog.discovery import Instance, Instances, Node
from ..store import Snapshot
from . import consul
from .http import JSON, READ_AT

PREFIX = "__meta_metafs_"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def label_name(name: str) -> str:
    """A label name as Prometheus sanitises one: every character outside
    ``[a-zA-Z0-9_]`` becomes ``_``."""
    return _INVALID.sub("_", name)


def target_group(inst: Instance, node: Node | None) -> dict[str, Any]:
    a, t, s = inst.ids
    port = inst.scrape_port
    labels = {
        PREFIX + "unit_id": inst.unit,
        PREFIX + "account": a,
        PREFIX + "stack": t,
        PREFIX + "service": s,
        PREFIX + "host": inst.host,
        PREFIX + "hostname": inst.hostname,
        PREFIX + "cardinal_value": str(inst.cardinal),
    }
    if node is not None and node.address:
        labels[PREFIX + "host_address"] = node.address
    for prefix, own in ((PREFIX + "service_label_", inst.service_labels), (PREFIX + "label_", inst.labels)):
        for k, v in own.items():
            labels[prefix + label_name(k)] = v
    target = inst.address if port is None else f"{inst.address}:{port}"
    if ":" in inst.address and port is not None:  # IPv6
        target = f"[{inst.address}]:{port}"
    return {"targets": [target], "labels": labels}


class PrometheusTargets:
    """``GET /v1/prometheus/targets``: every unit with an address that the scope may read."""

    def __init__(self, instances: Instances) -> None:
        self.instances = instances

    async def made(self, snap: Snapshot, scope: Scope) -> bytes:
        """The target groups, as JSON."""
        placed = await discovery.in_scope(snap, scope, self.instances)
        found = [i for _, service in placed for i in service.instances if i.address]
        nodes = await discovery.nodes(snap, {i.host for i in found})
        return await discovery.encoded([target_group(i, nodes.get(i.host)) for i in found])


def answer(request: Request, body: bytes, snap: Snapshot) -> Response:
    """The target groups, with an ETag of their bytes (304 to a client that has them)."""
    request.scope[READ_AT] = snap.revision
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {**consul.headers(snap), "ETag": etag}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(body, headers=headers, media_type=JSON)
