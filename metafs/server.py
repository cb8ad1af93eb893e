"""The metadata server: a Starlette app over a :class:`~metafs.catalog.Catalog`, run by uvicorn.

Routes (``<...>`` is one path segment, percent-decoded once):

- ``GET /v1/kv/<account>/<stack>/<service>/<unit>/<key...>`` the seed's layout;
- ``GET /v1/view/<unit>/<path...>`` a unit's view, the tree the filesystem shows;
- ``GET /v1/units/`` every unit id (a host-mode mount lists these);
- ``GET /v1/watch?units=<id>,<id>&list=1`` when each unit's view (and the list of units)
  last changed: long-polled, one request keeps many views fresh;
- ``GET|PUT|DELETE /v1/accounts/...``, ``/v1/hosts/...`` the document API;
  ``PUT|DELETE`` on ``/v1/kv/...`` write the same records by their seed path;
- ``POST /v1/load`` a whole load document, all or nothing;
- ``GET /healthz`` (answers with the store's revision), ``GET /metrics`` (Prometheus).

Every read answers text by default (EC2 style) or JSON (``Accept: application/json`` or
``?format=json``), carries ``ETag``, ``X-Metafs-Index`` (the revision at which that
subtree last changed), ``X-Metafs-Revision`` and ``Last-Modified``, honours
``If-None-Match``, and long-polls with ``?index=<revision>&wait=<duration>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import re
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from importlib import resources
from pathlib import Path
from types import FrameType
from urllib.parse import unquote

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from . import auth, catalog, model, openapi, tree
from .answers import AnswerCache, query_without, raw_path
from .catalog import Catalog, CatalogError
from .metrics import ServerMetrics, exposition
from .store import Snapshot, Store, StoreError, TooLarge, open_store

log = logging.getLogger("metafs.server")

TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"
MAX_SEGMENT = 255
_WAIT_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Settings:
    """Limits of the server; each one is a ``metafs serve`` option."""

    max_wait: float = 600.0  # a long poll never waits longer than this (seconds)
    default_wait: float = 300.0  # how long ``?index=`` waits when ``wait`` is not given
    max_body: int = 16 * 1024 * 1024  # bytes in a write or a load document
    max_watch: int = 10_000  # units in one /v1/watch
    body_timeout: float = 30.0  # a request body must arrive within this (seconds)
    answer_cache: int = 4096  # read answers kept until the next commit (0: none; see answers.py)


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        details: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.details = details or []
        self.headers = headers or {}


def wants_json(request: Request) -> bool:
    fmt = request.query_params.get("format")
    if fmt in ("json", "meta", "text"):
        return fmt != "text"
    return "application/json" in request.headers.get("accept", "")


def error_response(request: Request, exc: HTTPError) -> Response:
    if wants_json(request):
        body = json.dumps({"error": {"status": exc.status, "message": str(exc), "details": exc.details}})
        return Response(body + "\n", exc.status, exc.headers, media_type=JSON)
    text = "\n".join([str(exc), *exc.details]) + "\n"
    return Response(text, exc.status, exc.headers, media_type=TEXT)


def split_path(raw: bytes, prefix: str) -> tuple[list[str], bool]:
    """The percent-decoded segments after ``prefix``, and whether a ``/`` ended the path.

    Splitting the raw path before decoding keeps ``%2F`` inside a segment (a label key
    ``io.example/role``) apart from the ``/`` between segments.
    """
    try:
        path = raw.decode("ascii")
    except UnicodeDecodeError:
        raise HTTPError(400, "the request path is not ASCII (percent-encode it)") from None
    rest = path[len(prefix) :]
    trailing = rest.endswith("/") or rest == ""
    parts = rest.split("/")
    if trailing:
        parts = parts[:-1]
    segs = []
    for i, part in enumerate(parts):
        try:
            seg = unquote(part, errors="strict")
        except UnicodeDecodeError:
            raise HTTPError(400, f"path segment {i + 1} is not UTF-8 after percent-decoding") from None
        if seg == "":
            raise HTTPError(400, f"empty path segment at position {i + 1} (a doubled '/')")
        if seg in (".", ".."):
            raise HTTPError(400, f"path segment {i + 1} is {seg!r}: relative segments are not allowed")
        if _CONTROL.search(seg):
            raise HTTPError(400, f"path segment {i + 1} contains a control character")
        if len(seg) > MAX_SEGMENT:
            raise HTTPError(400, f"path segment {i + 1} is longer than {MAX_SEGMENT} characters")
        segs.append(seg)
    return segs, trailing


def parse_wait(text: str) -> float:
    m = _WAIT_RE.match(text)
    if not m:
        raise HTTPError(400, f"wait={text!r}: expected a duration like 30s, 500ms, 2m or 10")
    value = float(m.group(1))
    return value / 1000 if m.group(2) == "ms" else value * 60 if m.group(2) == "m" else value


def check_query(request: Request, allowed: set[str]) -> None:
    for name in request.query_params:
        if name not in allowed:
            raise HTTPError(400, f"unknown query parameter {name!r} (allowed: {', '.join(sorted(allowed))})")
    fmt = request.query_params.get("format")
    if fmt is not None and fmt not in ("text", "json", "meta"):
        raise HTTPError(400, f"format={fmt!r}: expected text, json or meta")


Resolver = Callable[[Snapshot, catalog.Scope], Awaitable[tree.Node | None]]
FLAVOR = ("metadata-flavor", "metafs")


class MetadataServer:
    """The HTTP API over a catalog; ``app`` is the ASGI application."""

    def __init__(
        self, store: Store, settings: Settings | None = None, operator_digest: str | None = None
    ) -> None:
        self.store = store
        self.operator_digest = operator_digest
        self.catalog = Catalog(store)
        self.settings = settings or Settings()
        self.closing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._parked: dict[asyncio.Task[object], Request] = {}  # long polls waiting, by task
        self._reaped: set[asyncio.Task[object]] = set()  # ... and those cancelled: client gone
        self._memo_rev = 0
        self._memo: dict[tuple[object, ...], asyncio.Future[tuple[tree.Node | None, Snapshot]]] = {}
        self._answers: dict[tuple[object, ...], Response] = {}
        self.metrics = ServerMetrics()
        self.starlette = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
                Route("/metrics", self.metrics_page, methods=["GET", "HEAD"]),
                Route("/ui", self.ui, methods=["GET", "HEAD"]),
                Route("/ui/{name}", self.ui, methods=["GET", "HEAD"]),
                Route("/openapi.json", self.openapi, methods=["GET", "HEAD"]),
                # /v1/... does not come here: see _route
            ],
            lifespan=self._lifespan,
        )
        self.answers = AnswerCache(
            self._route,
            store.head,
            entries=self.settings.answer_cache,
            on_reuse=self.metrics.answers_reused.inc,
        )
        #: the ASGI application: the routes, behind the answers kept, measured
        self.app = self.metrics.middleware(self.answers)

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """``/v1/...`` straight to its handler; the rest (and the lifespan) through Starlette.

        The API's handlers route, check methods and turn every expected error into a
        response themselves (``_guard``), so Starlette's router and exception layers only
        cost time and memory on the hot path: 10,000 woken long polls took 2.4-2.5x a
        bare ASGI app's time with them, 2.0-2.5x without, and held 290 MB, 239 MB without
        (``make bench``). An unexpected exception still ends as a logged 500 (uvicorn's)."""
        if scope["type"] == "http" and raw_path(scope).startswith(b"/v1/"):
            return self._v1_direct(scope, receive, send)
        return self.starlette(scope, receive, send)

    async def _v1_direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        if raw_path(scope) == b"/v1/load" and scope["method"] == "POST":
            response = await self.load(request)
        else:
            response = await self.v1(request)
        await response(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self._loop = asyncio.get_running_loop()
        try:
            async with self.store.running(), anyio.create_task_group() as tg:
                tg.start_soon(self._reap_disconnected)
                yield
                tg.cancel_scope.cancel()
        finally:
            await self.store.close()

    async def _reap_disconnected(self, interval: float = 2.0) -> None:
        """End the long polls whose clients went away (Starlette does not notice; a mount
        abandons a poll each time a view joins). One sweep for all parked polls every
        ``interval`` seconds cancels the task of each that lost its client: a watcher task
        per poll cost 3.5 KB and ~1 s of cancellations per 10,000 polls, a cancel scope
        per poll ~0.5 KB (measured with ``make bench``)."""
        while True:
            await anyio.sleep(interval)
            for i, (task, request) in enumerate(list(self._parked.items())):
                if task not in self._reaped and await _gone(request):
                    self._reaped.add(task)
                    task.cancel()
                if i % 500 == 499:
                    await anyio.sleep(0)  # let requests run during a long sweep

    async def _reread(
        self,
        woke: int,
        key: tuple[object, ...],
        once: Callable[[], Awaitable[tuple[tree.Node | None, Snapshot]]],
    ) -> tuple[tree.Node | None, Snapshot]:
        """A woken long poll's new answer, computed once for every poll woken by the same
        revision that asks the same thing as the same principal (10,000 polls of one key
        wake together). A later revision's answer is as good: the client polls again
        from the index it gets."""
        if woke > self._memo_rev:
            self._memo_rev, self._memo, self._answers = woke, {}, {}
        pending = self._memo.get(key)
        if pending is None:
            pending = self._memo[key] = asyncio.get_running_loop().create_future()
            try:
                pending.set_result(await once())
            except BaseException as exc:
                self._memo.pop(key, None)
                pending.cancel()
                raise exc from None
            return pending.result()
        if pending.done() and not pending.cancelled():
            return pending.result()  # the usual case: no shield (a future and callbacks each)
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if pending.cancelled():  # the computing request went away: compute our own
                return await once()
            raise

    def stop_soon(self) -> None:
        """Answer every open long poll now (callable from a signal handler), so that a
        stop does not wait for them to time out."""
        self.closing = True
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.store.release_waiters)

    # -- plumbing ------------------------------------------------------------------

    async def _guard(self, request: Request, handler: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await handler()
        except HTTPError as exc:
            return error_response(request, exc)
        except model.ModelError as exc:
            return error_response(request, HTTPError(400, "invalid metadata", exc.details))
        except CatalogError as exc:
            return error_response(request, HTTPError(exc.status, str(exc), exc.details))
        except TooLarge as exc:
            return error_response(request, HTTPError(413, str(exc)))
        except StoreError as exc:
            self.metrics.store_errors.inc()
            log.error("store unavailable: %s", exc)
            return error_response(request, HTTPError(503, "the metadata store is unavailable"))

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.settings.max_body:
            raise HTTPError(413, f"body of {declared} bytes is over the limit of {self.settings.max_body}")
        chunks, size = [], 0
        try:
            with anyio.fail_after(self.settings.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > self.settings.max_body:
                        raise HTTPError(413, f"body is over the limit of {self.settings.max_body} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise HTTPError(
                408, f"the request body did not arrive within {self.settings.body_timeout:g}s"
            ) from None
        return b"".join(chunks)

    async def _principal(self, request: Request) -> auth.Principal:
        """The SSRF guard, then who is asking: 403 without the metadata header or with
        ``X-Forwarded-For``; 401 without a valid token."""
        if request.headers.get(FLAVOR[0], "").lower() != FLAVOR[1]:
            raise HTTPError(403, "missing header Metadata-Flavor: metafs (required on every /v1 request)")
        if "x-forwarded-for" in request.headers:
            raise HTTPError(403, "requests carrying X-Forwarded-For are refused (metadata is not proxied)")
        token = auth.bearer(request.headers.get("authorization"))
        challenge = {"WWW-Authenticate": 'Bearer realm="metafs"'}
        if token is None:
            raise HTTPError(401, "missing token: send Authorization: Bearer <token>", headers=challenge)
        if self.operator_digest and auth.same_digest(auth.digest(token), self.operator_digest):
            return auth.Principal("operator", token_id="bootstrap")
        async with self.store.snapshot() as snap:
            principal = await catalog.authenticate(snap, token)
        if principal is None:
            raise HTTPError(401, "invalid or revoked token", headers=challenge)
        return principal

    async def read(
        self,
        request: Request,
        principal: auth.Principal,
        resolve: Resolver,
        what: str,
        params: frozenset[str] = frozenset(),
    ) -> Response:
        """Answer a read: resolve a tree node, long-poll if asked, render, add headers."""
        check_query(request, {"format", "index", "wait", *params})
        q = request.query_params
        index: int | None = None
        if "index" in q:
            if not q["index"].isdigit():
                raise HTTPError(400, f"index={q['index']!r}: expected a revision (a whole number >= 0)")
            index = int(q["index"])
        wait = min(
            parse_wait(q["wait"]) if "wait" in q else self.settings.default_wait, self.settings.max_wait
        )

        async def once() -> tuple[tree.Node | None, Snapshot]:
            async with self.store.snapshot() as snap:
                scope = await catalog.scope_of(snap, principal)
                return await resolve(snap, scope), snap

        node, snap = await once()
        shared: tuple[object, ...] | None = None  # set when this answer may be shared
        if index is not None and snap.changed <= index <= snap.revision:
            deadline = time.monotonic() + wait
            memo_key = (principal, raw_path(request.scope), _answer_query(request))
            task = asyncio.current_task()
            assert task is not None
            with self.metrics.long_polls.track_inprogress():
                # a client that goes away ends its long poll (see _reap_disconnected)
                self._parked[task] = request
                try:
                    while not self.closing and (left := deadline - time.monotonic()) > 0:
                        woke = await self.store.wait(snap.prefixes, index, left)
                        if woke is None:
                            break
                        node, snap = await self._reread(woke, memo_key, once)
                        if snap.changed > index:
                            headers = request.headers
                            shared = (memo_key, headers.get("accept"), headers.get("if-none-match"), id(snap))
                            break
                except asyncio.CancelledError:
                    if task not in self._reaped:
                        raise
                    task.uncancel()
                    return Response(status_code=499)  # nobody is listening any more
                finally:
                    del self._parked[task]
                    self._reaped.discard(task)
        self.metrics.saw_revision(snap.revision)
        if shared is None:
            return self._answer(request, node, snap, what)
        # polls woken together that asked the same thing get the very same response
        # object (Starlette's Response holds only its status, headers and body)
        answer = self._answers.get(shared)
        if answer is None:
            answer = self._answers[shared] = self._answer(request, node, snap, what)
        return answer

    def _answer(self, request: Request, node: tree.Node | None, snap: Snapshot, what: str) -> Response:
        """A read's response: headers from the snapshot, body in the asked format."""
        q = request.query_params
        fmt = q.get("format") or ("json" if wants_json(request) else "text")
        headers = {
            "X-Metafs-Index": str(snap.changed),
            "X-Metafs-Revision": str(snap.revision),
            "ETag": f'"{snap.changed}.{fmt}"',
            "Cache-Control": "no-cache",
        }
        if snap.changed_time:
            headers["Last-Modified"] = formatdate(snap.changed_time, usegmt=True)
        if node is None:
            raise HTTPError(404, f"not found: {what}", headers=headers)
        headers["X-Metafs-Kind"] = "value" if isinstance(node, tree.Leaf) else "directory"
        if headers["ETag"] in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
            return Response(status_code=304, headers=headers)
        if fmt == "text":
            return Response(tree.render_text(node), headers=headers, media_type=TEXT)
        shown = node
        since = q.get("since")
        if since is not None:
            if fmt != "meta" or not since.isdigit():
                raise HTTPError(400, f"since={since!r}: expected a revision, with format=meta")
            kept = shown.unchanged_since(int(since)) if isinstance(shown, catalog.UnitView) else set()
            delta = tree.to_meta_keeping(shown, kept)
            return Response(json.dumps(delta, separators=(",", ":")) + "\n", headers=headers, media_type=JSON)

        def make() -> bytes:
            data = tree.to_meta(shown) if fmt == "meta" else tree.to_json(shown)
            return (json.dumps(data, separators=(",", ":")) + "\n").encode()

        body = node.render(fmt, make) if isinstance(node, catalog.UnitView) else make()
        return Response(body, headers=headers, media_type=JSON)

    def written(self, request: Request, result: catalog.WriteResult) -> Response:
        self.metrics.saw_revision(result.revision)
        headers = {"X-Metafs-Revision": str(result.revision)}
        if wants_json(request):
            body = json.dumps({"revision": result.revision, "changed": result.changed}) + "\n"
            return Response(body, headers=headers, media_type=JSON)
        return Response(
            f"revision {result.revision} ({result.changed} records changed)\n",
            headers=headers,
            media_type=TEXT,
        )

    # -- routes --------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        async def handle() -> Response:
            rev = await self.store.revision()
            return Response(f"ok revision {rev}\n", headers={"X-Metafs-Revision": str(rev)}, media_type=TEXT)

        return await self._guard(request, handle)

    async def metrics_page(self, request: Request) -> Response:
        """Prometheus metrics. No token needed (scrapers rarely send one): they carry
        counts and timings by route, never ids, names or values."""
        body, content_type = exposition(self.metrics.registry)
        return Response(body, headers={"Content-Type": content_type})

    async def ui(self, request: Request) -> Response:
        """The read-only web page (``metafs/ui/``). The page holds no data: its script reads
        ``/v1/accounts/`` with the operator token the person gives it."""
        name = request.path_params.get("name", "index.html")
        if name not in UI_FILES:
            return error_response(request, HTTPError(404, f"not found: /ui/{name}"))
        body = (resources.files("metafs") / "ui" / name).read_bytes()
        return Response(body, media_type=UI_FILES[name], headers=UI_HEADERS)

    async def openapi(self, request: Request) -> Response:
        return Response(json.dumps(openapi.document()), media_type=JSON)

    async def load(self, request: Request) -> Response:
        async def handle() -> Response:
            principal = await self._principal(request)
            if not principal.operator:
                raise HTTPError(
                    403, f"a {principal.kind} token may not load documents: that needs an operator token"
                )
            check_query(request, {"format"})
            body = await self._body(request)
            data = catalog.parse_body(body, request.headers.get("content-type", ""), "load document")
            if not isinstance(data, dict):
                raise HTTPError(400, "load document: expected a mapping with accounts and/or hosts")
            return self.written(request, await self.catalog.load(data))

        return await self._guard(request, handle)

    async def v1(self, request: Request) -> Response:
        async def handle() -> Response:
            segs, _ = split_path(raw_path(request.scope), "/v1/")
            if not segs:
                raise HTTPError(
                    404, "no such route: /v1/ (see /v1/kv/, /v1/view/, /v1/accounts/, /v1/hosts/, /v1/units/)"
                )
            route, rest = segs[0], segs[1:]
            method = "GET" if request.method == "HEAD" else request.method
            what = "/v1/" + "/".join(segs)

            principal = await self._principal(request)
            readers: dict[str, Resolver] = {
                "kv": lambda snap, scope: catalog.seed_tree(snap, rest, scope, self.catalog.views),
                "view": lambda snap, scope: self._view(snap, scope, rest),
                "units": lambda snap, scope: self._units(snap, scope, rest),
                "accounts": lambda snap, scope: self._document(snap, scope, segs),
                "hosts": lambda snap, scope: self._document(snap, scope, segs),
                "tokens": lambda snap, scope: self._tokens(snap, scope, rest),
            }
            writable = {"kv": ["PUT", "DELETE"], "accounts": ["PUT", "DELETE"], "hosts": ["PUT", "DELETE"]}
            writable["tokens"] = ["DELETE"] if rest else ["POST"]
            if route == "load" and not rest:
                raise HTTPError(
                    405, f"{request.method} is not allowed on /v1/load", headers={"Allow": "POST"}
                )
            if route not in readers and route != "watch":
                raise HTTPError(404, f"no such route: /v1/{route}/")
            allowed = ["GET", "HEAD", *writable.get(route, [])]
            if method not in allowed:
                raise HTTPError(
                    405,
                    f"{request.method} is not allowed on /v1/{route}/",
                    headers={"Allow": ", ".join(allowed)},
                )
            if method == "GET" and route == "watch":
                return await self._watch(request, principal, rest)
            if method == "GET":
                extra = frozenset({"since"}) if route == "view" else frozenset()
                return await self.read(request, principal, readers[route], what, extra)
            if not principal.operator:
                raise HTTPError(403, f"a {principal.kind} token may not write: writes need an operator token")
            check_query(request, {"format"})
            if route == "tokens":
                return await self._token_write(request, method, rest)
            target = catalog.seed_to_target(rest) if route == "kv" else catalog.parse_doc_path(segs)
            if method == "DELETE":
                return self.written(request, await self.catalog.delete(target))
            body = await self._body(request)
            result = await self.catalog.put(target, body, request.headers.get("content-type", ""))
            return self.written(request, result)

        return await self._guard(request, handle)

    async def _watch(self, request: Request, principal: auth.Principal, rest: list[str]) -> Response:
        if rest:
            raise HTTPError(404, "no such route: /v1/watch/" + "/".join(rest))
        units = [u for u in request.query_params.get("units", "").split(",") if u]
        for u in units:
            try:
                model.check_name(u)
            except ValueError as exc:
                raise HTTPError(400, f"units: {exc}") from None
        if len(units) > self.settings.max_watch:
            raise HTTPError(400, f"units: at most {self.settings.max_watch} units in one watch")
        with_list = request.query_params.get("list", "0") not in ("0", "false", "")

        async def resolve(snap: Snapshot, scope: catalog.Scope) -> tree.Node:
            return await catalog.watch_tree(snap, units, with_list, scope)

        return await self.read(request, principal, resolve, "/v1/watch", frozenset({"units", "list"}))

    async def _view(self, snap: Snapshot, scope: catalog.Scope, rest: list[str]) -> tree.Node | None:
        if not rest:
            return await catalog.units_tree(snap, scope)
        catalog.check_id(rest[0], "unit id")
        scope.require_unit(rest[0])
        view = await catalog.view_tree(snap, rest[0], self.catalog.views)
        return tree.descend(view, rest[1:]) if view else None

    async def _units(self, snap: Snapshot, scope: catalog.Scope, rest: list[str]) -> tree.Node | None:
        return tree.descend(await catalog.units_tree(snap, scope), rest)

    async def _document(self, snap: Snapshot, scope: catalog.Scope, segs: list[str]) -> tree.Node | None:
        scope.require_operator()
        return await catalog.document_tree(snap, segs)

    async def _tokens(self, snap: Snapshot, scope: catalog.Scope, rest: list[str]) -> tree.Node | None:
        scope.require_operator()
        return tree.descend(await catalog.tokens_tree(snap), rest)

    async def _token_write(self, request: Request, method: str, rest: list[str]) -> Response:
        if method == "DELETE":
            if len(rest) != 1:
                raise HTTPError(404, "no such token path: use /v1/tokens/<id>")
            return self.written(request, await self.catalog.revoke_token(rest[0]))
        data = catalog.parse_body(await self._body(request), request.headers.get("content-type", ""), "token")
        if not isinstance(data, dict) or set(data) - {"kind", "subject"} or "kind" not in data:
            raise HTTPError(400, 'token: expected {"kind": "operator"|"host"|"unit", "subject": NAME}')
        token, info = await self.catalog.create_token(str(data["kind"]), str(data.get("subject", "")))
        body = json.dumps({"token": token, **info}) + "\n"
        return Response(body, 201, media_type=JSON, headers={"Cache-Control": "no-store"})


async def _gone(request: Request) -> bool:
    """Whether the client of a parked request went away. uvicorn marks the request's
    cycle ``disconnected`` when the connection is lost: reading that flag costs ~0.2 µs,
    where Starlette's ``is_disconnected()`` (a cancelled receive) cost ~50 µs, a quarter
    of a core for 10,000 parked polls swept every 2 s, competing with their wake-up."""
    cycle = getattr(request.receive, "__self__", None)
    flag = getattr(cycle, "disconnected", None)
    if isinstance(flag, bool):
        return flag
    return await request.is_disconnected()  # another ASGI server: ask it


def _answer_query(request: Request) -> bytes:
    """The raw query an answer depends on: without ``index`` and ``wait``, the rest as the
    client wrote it (sorted, ``format=json&format=text`` and its reverse would meet)."""
    return query_without(request.scope.get("query_string", b""), _LONG_POLL_PARAMS)


_LONG_POLL_PARAMS = frozenset({"index", "wait"})


UI_FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
#: the page may load its own script and style and talk to this server, nothing else
UI_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def serve(
    listen: str,
    store_url: str,
    settings: Settings | None = None,
    log_level: str = "info",
    operator_token_file: Path | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT."""
    import uvicorn

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8500")
    operator_digest, token_path = auth.operator_token(operator_token_file)
    if token_path is not None:
        log.info("operator token in %s", token_path)
    server = MetadataServer(open_store(store_url), settings, operator_digest)
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(
        server.app,
        host=host.strip("[]"),
        port=int(port),
        loop=loop,
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=log_level,
        log_config=None,  # logging is ours (metafs.logs): one format, tokens redacted
        timeout_graceful_shutdown=2,
        server_header=False,
        # X-Forwarded-* are refused, not believed (see _principal); and one middleware
        # less is one coroutine frame less on each of 10,000 parked long polls
        proxy_headers=False,
    )
    log.info("store %s", store_url)
    # 10,000 parked long polls are about a million objects that live until answered. With
    # Python's default thresholds, full collections of all of them (up to 0.64 s each,
    # collecting nothing) came every few hundred ms while they parked, and one during
    # their wake-up (0.65-1.76 s for all 10,000 to be answered). A young generation of
    # 50,000 objects, whose survivors go straight to the old one, keeps every pause under
    # ~65 ms (make bench); old-generation collections still run when it grows by a quarter.
    gc.set_threshold(50_000, 1, 100)
    # uvicorn re-raises the signal that stopped it once it has shut down; a handler of
    # our own makes that a no-op, so a clean SIGTERM/SIGINT stop exits with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)

    class _Uvicorn(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            server.stop_soon()

    _Uvicorn(config).run()
