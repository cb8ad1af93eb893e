"""The metadata server as one ASGI application: ``/v1`` (:mod:`.api`) behind the answers
kept until the next commit (:mod:`.answers`) and the metrics middleware, Starlette for
the rest, and a lifespan that opens the store and sweeps abandoned long polls.

- ``/v1/...`` the API (see :mod:`.api`);
- ``GET /healthz`` (answers with the store's revision), ``GET /metrics`` (Prometheus);
- ``GET /ui``, ``/openapi.json`` (see :mod:`.static`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from functools import partial
from typing import Protocol

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .. import auth
from ..protocol import REVISION_HEADER, STORE_HEADER
from ..store import Store, StoreError
from . import static
from .answers import AnswerCache
from .api import Api
from .compaction import compact_forever
from .encoding import compressed
from .http import TEXT, HTTPError, error_response, raw_path
from .metrics import ServerMetrics, exposition
from .settings import Settings


class Kept(Protocol):
    """A cache of the server: how many entries, and their bytes."""

    @property
    def size(self) -> int: ...

    def __len__(self) -> int: ...


def _size(cache: Kept) -> int:
    return cache.size


class MetadataServer:
    """The HTTP API over a store; ``app`` is the ASGI application."""

    def __init__(
        self, store: Store, settings: Settings | None = None, operator_digest: str | None = None
    ) -> None:
        self.store = store
        self.settings = settings or Settings()
        self.metrics = ServerMetrics()
        self.api = Api(store, self.settings, self.metrics, operator_digest)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: why the store could not be opened at start (a newer format, etcd refusing us)
        self.startup_error: StoreError | None = None
        self.starlette = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
                Route("/metrics", self.metrics_page, methods=["GET", "HEAD"]),
                Route("/ui", static.ui, methods=["GET", "HEAD"]),
                Route("/ui/{name}", static.ui, methods=["GET", "HEAD"]),
                Route("/openapi.json", static.openapi_document, methods=["GET", "HEAD"]),
                # /v1/... does not come here: see _route
            ],
            lifespan=self._lifespan,
        )
        self.answers = AnswerCache(
            self._route,
            store.head,
            entries=self.settings.answer_cache,
            max_bytes=self.settings.answer_bytes,
            on_reuse=self.metrics.answers_reused.inc,
        )
        #: the ASGI application: the routes, behind the answers kept, measured
        self.app = self.metrics.middleware(self.answers)
        kept: dict[str, Kept] = {
            "answers": self.answers,
            "views": self.api.reads.views,
            "rendered": self.api.rendered,
            "instances": self.api.discovery.instances,
            **store.caches(),
        }
        for name, cache in kept.items():
            self.metrics.cache_bytes.labels(name).set_function(partial(_size, cache))
            self.metrics.cache_entries.labels(name).set_function(partial(len, cache))
        store.on_replaced = self.forget

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """``/v1/...`` straight to its handler; the rest (and the lifespan) through Starlette.

        The API's handlers route, check methods and turn every expected error into a
        response themselves, so Starlette's router and exception layers only cost time
        and memory on the hot path: 10,000 woken long polls took 2.4-2.5x a bare ASGI
        app's time with them, 2.0-2.5x without, and held 290 MB, 239 MB without
        (``make bench``). An unexpected exception still ends as a logged 500 (uvicorn's)."""
        if scope["type"] == "http" and raw_path(scope).startswith(b"/v1/"):
            return self._v1(scope, receive, send)
        return self.starlette(scope, receive, send)

    async def _v1(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.api(request)
        if self.store.identity:  # every answer says which store it is from
            response.headers.setdefault(STORE_HEADER, self.store.identity)
        response = await compressed(request, response)
        await response(scope, receive, send)

    def forget(self) -> None:
        """The store went back in time under this server (see ``Store.on_replaced``):
        what is kept by revision may match the new history's revisions with other
        contents; drop it all."""
        self.api.reads.views.drop(())
        self.api.rendered.drop(())
        self.api.discovery.instances.drop(())
        self.api.account_scopes.clear()
        self.answers.clear()

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    await stack.enter_async_context(self.store.running())
                except StoreError as exc:  # uvicorn would only log it: run.serve raises it
                    self.startup_error = exc
                    raise
                tg = await stack.enter_async_context(anyio.create_task_group())
                tg.start_soon(self.api.polls.reap_disconnected)
                retention = self.settings.history_retention
                tg.start_soon(compact_forever, self.store, retention, self.metrics, self.answers.clear)
                yield
                tg.cancel_scope.cancel()
        finally:
            await self.store.close()

    def stop_soon(self) -> None:
        """Answer every open long poll now (callable from a signal handler), so that a
        stop does not wait for them to time out."""
        self.api.polls.closing = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.store.release_waiters)

    async def healthz(self, request: Request) -> Response:
        """``ok`` while the store answers; the store's revision only to an operator token
        (with the metadata header), as it tells how often every account is written."""
        try:
            rev = await self.store.revision()
        except StoreError as exc:
            return self.api.store_unavailable(request, exc)
        if "authorization" in request.headers and await self._is_operator(request):
            return Response(f"ok revision {rev}\n", headers={REVISION_HEADER: str(rev)}, media_type=TEXT)
        return Response("ok\n", media_type=TEXT)

    async def _metrics_refused(self, request: Request) -> Response | None:
        """401 without a valid token, 403 for a token that may not read everything."""
        try:
            token = auth.bearer(request.headers.get("authorization"))
            principal = await self.api.token_principal(token, "/metrics needs an operator or reader token")
        except HTTPError as exc:
            return error_response(request, exc)
        except StoreError as exc:
            return self.api.store_unavailable(request, exc)
        if principal.kind not in ("operator", "reader") or principal.subject:
            kind = "one account's reader" if principal.kind == "reader" else "a " + principal.kind
            why = f"{kind} token may not read /metrics: it needs an operator or every account's reader token"
            return error_response(request, HTTPError(403, why))
        return None

    async def _is_operator(self, request: Request) -> bool:
        try:
            return (await self.api.principal(request)).operator
        except (HTTPError, StoreError):
            return False

    async def metrics_page(self, request: Request) -> Response:
        """Prometheus metrics: counts and timings by route, never ids, names or values.
        Open by default; with ``--metrics-auth token`` only to an operator or reader token
        (a bearer token alone: Prometheus cannot send the metadata header)."""
        if self.settings.metrics_auth == "token":
            refused = await self._metrics_refused(request)
            if refused is not None:
                return refused
        body, content_type = exposition(self.metrics.registry)
        return Response(body, headers={"Content-Type": content_type})
