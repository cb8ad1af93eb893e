"""The service-discovery routes on the API's read path: Consul's catalog, health and
agent reads (:mod:`.consul_catalog`) and Prometheus' HTTP SD (:mod:`.prometheus_sd`),
over one cache of decoded instances."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .. import auth
from ..catalog.discovery import Instances
from . import consul_catalog, prometheus_sd
from .http import HTTPError

#: ``Api.read``: request, principal, resolve, what, params, render, repeatable params
Read = Callable[..., Awaitable[Response]]


class DiscoveryRoutes:
    """GET handlers of ``/v1/agent/``, ``/v1/catalog/``, ``/v1/health/`` and
    ``/v1/prometheus/targets``, and the refusal of writes there."""

    def __init__(self, read: Read, datacenter: str, instance_bytes: int) -> None:
        self.read = read
        self.instances = Instances(instance_bytes)
        self.consul = consul_catalog.ConsulCatalog(datacenter, self.instances)
        self.targets = prometheus_sd.PrometheusTargets(self.instances)

    async def consul_get(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        made = self.consul.made(segs[0], segs[1:], request)

        def render(found: Any, snap: Any) -> Response:
            return consul_catalog.answer(request, found, snap)

        params = consul_catalog.PARAMS | consul_catalog.REPEATABLE
        return await self.read(
            request, principal, made, "/v1/" + "/".join(segs), params, render, consul_catalog.REPEATABLE
        )

    async def refuse_write(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        raise HTTPError(405, consul_catalog.READ_ONLY, headers={"Allow": "GET, HEAD"})

    async def prometheus_get(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        if segs[1:] != ["targets"]:
            raise HTTPError(404, f"no such route: /v1/{'/'.join(segs)} (see /v1/prometheus/targets)")

        def render(found: Any, snap: Any) -> Response:
            return prometheus_sd.answer(request, found, snap)

        return await self.read(
            request, principal, self.targets.made, "/v1/prometheus/targets", frozenset(), render
        )
