"""The ``/v1`` API: one route table, built once, and the handlers it names.

Routes (``<...>`` is one path segment, percent-decoded once):

- ``GET /v1/kv/<account>/<stack>/<service>/<unit>/<key...>`` the seed's layout;
- ``GET /v1/view/<unit>/<path...>`` a unit's view, the tree the filesystem shows;
- ``GET /v1/units/`` every unit id (a host-mode mount lists these);
- ``GET /v1/watch?units=<id>,<id>&list=1`` when each unit's view (and the list of units)
  last changed: long-polled, one request keeps many views fresh;
- ``GET|PUT|DELETE /v1/accounts/...``, ``/v1/hosts/...`` the document API;
  ``PUT|DELETE`` on ``/v1/kv/...`` write the same records by their seed path;
- ``GET|POST /v1/tokens/``, ``DELETE /v1/tokens/<id>`` tokens (operators only);
- ``POST /v1/load`` a whole load document, all or nothing;
- Consul's ``/v1/agent|catalog|health/...``, ``/v1/prometheus/targets`` and the web
  page's ``/v1/fleet/...``: :mod:`.discovery_routes`, :mod:`.fleet`.

Every read answers text by default (EC2 style) or JSON (``Accept: application/json`` or
``?format=json``), carries ``ETag``, ``X-Metafs-Index`` (the revision at which that
subtree last changed), ``X-Metafs-Revision`` and ``Last-Modified``, honours
``If-None-Match``, and long-polls with ``?index=<revision>&wait=<duration>``. A ``/v1/kv``
request that speaks Consul's KV protocol (:mod:`.consul`) goes to its own two handlers,
on the same read path.

Past 400 lines because every handler here shares one read path (scope, long poll,
shared answers, rendering) and the request-level checks (guard, token, body limits);
what each protocol's answers look like lives beside it (:mod:`.render`, :mod:`.consul`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from .. import auth, catalog, heap, model, protocol, tree
from ..catalog.bodies import parse_body
from ..catalog.paths import Target, parse_doc_path, seed_to_target
from ..catalog.peers import PeersAsked
from ..catalog.views import ServiceViews
from ..store import Snapshot, Store, StoreError, TooLarge
from . import consul
from .backups import backup_route
from .discovery_routes import DiscoveryRoutes
from .fleet import Fleet
from .history import check_history, in_history
from .http import (
    JSON,
    LONG_POLL,
    PROXY_HEADERS,
    READ_AT,
    TEXT,
    HTTPError,
    check_query,
    error_response,
    parse_wait,
    query_without,
    raw_path,
    split_path,
    wants_json,
)
from .longpoll import ClientGone, LongPolls
from .metrics import ServerMetrics
from .render import RenderedViews, read_response
from .settings import Settings

log = logging.getLogger("metafs.server")

#: what a read answers with: the tree at ``segs`` (the path after ``/v1/``, or after the
#: route's name: see :meth:`Api._reader`), read in ``snap`` for ``scope``; None is a 404
Resolver = Callable[[Snapshot, list[str], catalog.Scope], Awaitable[tree.Node | None]]
#: a route's handler of one method: the request, who asks, the path's segments after ``/v1/``
Handler = Callable[[Request, auth.Principal, list[str]], Awaitable[Response]]
#: another protocol's answer to a read, from what its resolver found (see :meth:`Api.read`)
Render = Callable[[Any, Snapshot], Response]


@dataclass(frozen=True, slots=True)
class Route:
    """One ``/v1/<name>/`` route: its GET, and the other methods it takes on the route
    itself (``/v1/tokens/``) and below it (``/v1/tokens/<id>``)."""

    name: str
    get: Handler | None
    write: Handler | None = None
    on_route: tuple[str, ...] = ()
    below: tuple[str, ...] = ()

    def allowed(self, rest: list[str]) -> list[str]:
        return [*(("GET", "HEAD") if self.get else ()), *(self.below if rest else self.on_route)]


class Api:
    """The handlers of ``/v1``, over the catalog's reads and writes."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        metrics: ServerMetrics,
        operator_digest: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self.operator_digest = operator_digest
        self.reads = catalog.Reads(ServiceViews(settings.view_bytes))
        self.account_scopes = catalog.AccountScopes()
        self.writes = catalog.Writes(
            store, model.Limits(settings.max_labels, settings.max_metadata_keys, settings.max_view_bytes)
        )
        self.polls = LongPolls(store, metrics.long_polls.track_inprogress)
        self.rendered = RenderedViews(settings.rendered_bytes)
        reads, both, writes = self.reads, ("PUT", "DELETE"), ("PUT", "POST", "DELETE")
        found = self.discovery = DiscoveryRoutes(self.read, settings.datacenter, settings.instance_bytes)
        table = [
            Route("kv", self._reader(reads.seed), self._write_record, both, both),
            Route("view", self._view),
            Route("units", self._reader(reads.units)),
            Route("watch", self._watch),
            Route("accounts", self._reader(reads.document, whole=True), self._write_record, both, both),
            Route("hosts", self._reader(reads.document, whole=True), self._write_record, both, both),
            Route("tokens", self._reader(reads.tokens), self._write_token, ("POST",), ("DELETE",)),
            Route("load", None, self._load, ("POST",)),
            Route("backup", backup_route(store)),
            Route("agent", found.consul_get, found.refuse_write, (), writes),
            Route("catalog", found.consul_get, found.refuse_write, (), writes),
            Route("health", found.consul_get, found.refuse_write, (), writes),
            Route("prometheus", found.prometheus_get),
            Route("fleet", Fleet(self.read, found.instances).get),
        ]
        #: the route table, made once
        self.routes = {r.name: r for r in table}
        assert tuple(self.routes) == protocol.ROUTES, "the route table and metafs.protocol disagree"

    async def __call__(self, request: Request) -> Response:
        """Answer one ``/v1/...`` request; every expected error becomes its response."""
        try:
            return await self._route(request)
        except HTTPError as exc:
            return error_response(request, exc)
        except model.ModelError as exc:
            return error_response(request, HTTPError(400, "invalid metadata", exc.details))
        except catalog.CatalogError as exc:
            return error_response(request, HTTPError(exc.status, str(exc), exc.details))
        except TooLarge as exc:
            return error_response(request, HTTPError(413, str(exc)))
        except StoreError as exc:
            return self.store_unavailable(request, exc)

    def store_unavailable(self, request: Request, exc: StoreError) -> Response:
        """The 503 of a request the store failed, counted and logged."""
        self.metrics.store_errors.inc()
        log.error("store unavailable: %s", exc)
        return error_response(request, HTTPError(503, "the metadata store is unavailable"))

    async def _route(self, request: Request) -> Response:
        segs, _ = split_path(raw_path(request.scope), "/v1/")
        if not segs:
            raise HTTPError(
                404, "no such route: /v1/ (see /v1/kv/, /v1/view/, /v1/accounts/, /v1/hosts/, /v1/units/)"
            )
        principal = await self.principal(request, bearer_enough=segs[0] == "prometheus")
        route, rest = self.routes.get(segs[0]), segs[1:]
        if route is None or (route.get is None and rest):
            raise HTTPError(404, f"no such route: /v1/{segs[0]}/")
        method = "GET" if request.method == "HEAD" else request.method
        allowed = route.allowed(rest)
        if method not in allowed:
            where = f"/v1/{route.name}" + ("" if route.get is None else "/")
            raise HTTPError(
                405, f"{request.method} is not allowed on {where}", headers={"Allow": ", ".join(allowed)}
            )
        handler = route.get if method == "GET" else route.write
        if route.name == "kv" and consul.speaks_consul(request):
            handler = self._consul_get if method == "GET" else self._consul_write
        assert handler is not None
        return await handler(request, principal, segs)

    # -- who asks, and what they send ------------------------------------------------

    async def principal(self, request: Request, bearer_enough: bool = False) -> auth.Principal:
        """The SSRF guard, then who is asking: 403 without the metadata header or with
        ``X-Forwarded-For``; 401 without a valid token. ``bearer_enough``: a token in
        ``Authorization`` (``Bearer``, or alone) stands in for the metadata header
        (Prometheus' HTTP SD can send no other; a relayed plain GET carries neither).

        ``X-Consul-Token`` carries a token and stands in for the metadata header: a
        relayed plain GET cannot carry a custom header. A ``?token=`` in the URL (Consul's
        other way) can be put there by whoever makes the server fetch a URL, so it counts
        only beside one of the two headers."""
        name, value = protocol.FLAVOR
        for once in (name, "authorization", consul.TOKEN_HEADER):
            if len(request.headers.getlist(once)) > 1:
                raise HTTPError(400, f"header {once} is given more than once: send it once")
        consul_token = request.headers.get(consul.TOKEN_HEADER)
        bearer = auth.bearer(request.headers.get("authorization"), bare=bearer_enough)
        guarded = consul_token is not None or (bearer_enough and bearer is not None)
        if not guarded and request.headers.get(name, "").lower() != value:
            raise HTTPError(
                403, f"missing header {name}: {value} (required on every /v1 request without X-Consul-Token)"
            )
        for proxied in PROXY_HEADERS:
            if proxied in request.headers:
                raise HTTPError(403, f"requests carrying {proxied} are refused (metadata is not proxied)")
        token = consul_token or bearer or request.query_params.get("token")
        return await self.token_principal(token, "send Authorization: Bearer <token> (or X-Consul-Token)")

    async def token_principal(self, token: str | None, how: str) -> auth.Principal:
        """Who ``token`` stands for (the bootstrap operator's, or one in the store); 401,
        with ``how`` to send one, when there is none or it is not valid."""
        challenge = {"WWW-Authenticate": 'Bearer realm="metafs"'}
        if not token:
            raise HTTPError(401, f"missing token: {how}", headers=challenge)
        if self.operator_digest and auth.same_digest(auth.digest(token), self.operator_digest):
            return auth.Principal("operator", token_id="bootstrap")
        async with self.store.snapshot() as snap:
            principal = await catalog.authenticate(snap, token)
        if principal is None:
            raise HTTPError(401, "invalid or revoked token", headers=challenge)
        return principal

    async def body(self, request: Request) -> bytes:
        """The request body, within ``max_body`` bytes and ``body_timeout`` seconds."""
        limit = self.settings.max_body
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"body of {declared} bytes is over the limit of {limit}")
        chunks, size = [], 0
        try:
            with anyio.fail_after(self.settings.body_timeout):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        raise HTTPError(413, f"body is over the limit of {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise HTTPError(
                408, f"the request body did not arrive within {self.settings.body_timeout:g}s"
            ) from None
        return b"".join(chunks)

    # -- reads -------------------------------------------------------------------------

    async def read(
        self,
        request: Request,
        principal: auth.Principal,
        resolve: Callable[[Snapshot, catalog.Scope], Awaitable[Any]],
        what: str,
        params: frozenset[str] = frozenset(),
        render: Render | None = None,
        repeatable: frozenset[str] = frozenset(),
    ) -> Response:
        """Answer a read: resolve a tree node, long-poll if asked, render, add headers.

        ``render``: another protocol's answer (Consul's, Prometheus'), made from what
        ``resolve`` found (any value): its own parameters only (``repeatable``: those it
        takes more than once), and Consul's rule for ``index``: 0, or one past the store's
        revision (the store was reset, or the client's index is from elsewhere), answers
        at once."""
        allowed = {"index", "wait", *params} if render else {"format", "index", "wait", *params}
        check_query(request, allowed, repeatable)
        q = request.query_params
        index: int | None = None
        if "index" in q:
            if not q["index"].isdigit():
                raise HTTPError(400, f"index={q['index']!r}: expected a revision (a whole number >= 0)")
            index = int(q["index"])
        wait = min(
            parse_wait(q["wait"]) if "wait" in q else self.settings.default_wait, self.settings.max_wait
        )

        async def once(seen: int) -> tuple[Any, Snapshot]:
            async with self.store.snapshot(seen) as snap:
                scope = await catalog.scope_of(snap, principal, self.account_scopes)
                return await resolve(snap, scope), snap

        since = q.get("since", "")
        seen = max(index or 0, int(since) if since.isdigit() else 0)
        # a client that has seen a revision may be answered at any revision from it on
        node, snap = first = await once(seen)
        if render is None:  # Consul's protocol answers such an index at once instead
            check_history(seen, snap, self.store.identity)
        if render is None and isinstance(node, tree.Leaf) and raw_path(request.scope).endswith(b"/"):
            raise HTTPError(404, f"{what} is a value, not a directory: drop the trailing /")
        # an index from before the last change of what is read answers at once; one at or
        # after it (from the future too) waits for a change after it
        scoped = not principal.operator
        consul_now = render is not None and (index == 0 or not in_history(index or 0, snap))
        if index is None or index < snap.changed or consul_now:
            self.metrics.saw_revision(snap.revision)
            if render is not None:
                return render(node, snap)
            return await self._respond(request, node, snap, what, scoped)
        # polls that ask the same thing, as the client spelled it, share rereads
        asked = (principal, raw_path(request.scope), query_without(request.scope["query_string"], LONG_POLL))
        try:
            (node, snap), woken = await self.polls.wait(request, asked, index, wait, first, once)
        except ClientGone:
            return Response(status_code=499)  # nobody is listening any more
        self.metrics.saw_revision(snap.revision)
        if render is not None:  # small answers: each made for itself
            return render(node, snap)
        if not woken:
            return await self._respond(request, node, snap, what, scoped)
        # polls woken together that asked the same thing get the very same response
        headers = request.headers
        shared = (asked, headers.get("accept"), headers.get("if-none-match"), id(snap))
        made = None if self.polls.has_shared(shared) else await self.rendered.big_body(request, node, snap)
        return self.polls.shared(
            shared, lambda: read_response(request, node, snap, what, self.rendered, scoped, made)
        )

    async def _respond(
        self, request: Request, node: tree.Node | None, snap: Snapshot, what: str, scoped: bool
    ) -> Response:
        """A read's response, a big view's body made off the loop first."""
        made = await self.rendered.big_body(request, node, snap)
        return read_response(request, node, snap, what, self.rendered, scoped, made)

    def _reader(
        self, resolve: Resolver, params: frozenset[str] = frozenset(), whole: bool = False
    ) -> Handler:
        """The GET handler of a route whose tree ``resolve`` reads: from the path after the
        route's name (``whole``: the path after ``/v1/``, as the document API reads it)."""

        async def get(request: Request, principal: auth.Principal, segs: list[str]) -> Response:
            at = segs if whole else segs[1:]

            async def resolved(snap: Snapshot, scope: catalog.Scope) -> tree.Node | None:
                return await resolve(snap, at, scope)

            return await self.read(request, principal, resolved, "/v1/" + "/".join(segs), params)

        return get

    async def _view(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        """``/v1/view/<unit>/...``, with ``?since=`` and ``?peers=`` (see catalog/peers.py)."""
        q = request.query_params
        asked = PeersAsked.parse(q.get("peers"), q.get("since"))

        async def resolve(snap: Snapshot, scope: catalog.Scope) -> tree.Node | None:
            return await self.reads.view(snap, segs[1:], scope, asked)

        return await self.read(
            request, principal, resolve, "/v1/" + "/".join(segs), frozenset({"since", "peers"})
        )

    async def _consul_get(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        """A Consul KV read: one key, ``?recurse``, ``?keys``, ``?raw``; blocking with
        ``?index=``."""
        r = consul.kv_read(request, segs[1:], raw_path(request.scope).endswith(b"/"))

        async def resolve(snap: Snapshot, scope: catalog.Scope) -> tree.Node | None:
            return await self.reads.seed(snap, r.at, scope)

        def render(node: tree.Node | None, snap: Snapshot) -> Response:
            request.scope[READ_AT] = snap.revision  # reusable until the next commit
            return consul.read_answer(r, node, snap)

        return await self.read(request, principal, resolve, "/v1/kv", consul.PARAMS["GET"], render)

    async def _consul_write(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        """A Consul KV write (operators): ``PUT`` a value (``?cas=``), ``DELETE`` a value,
        or a record and everything below it with ``?recurse``; ``true`` or ``false``."""
        if not principal.operator:
            raise HTTPError(403, f"a {principal.kind} token may not write: writes need an operator token")
        check_query(request, set(consul.PARAMS[request.method]))
        consul.check_flags(request)
        cas = consul.cas_of(request)
        target = seed_to_target(consul.names_of(segs[1:]))
        try:
            if request.method == "PUT":
                body = await self.body(request)
                result = await self.writes.put(target, body, request.headers.get("content-type", ""), cas)
            elif not target.field and "recurse" not in request.query_params:
                # Consul deletes the one key of that name; a record is no key of metafs's
                return consul.write_answer(cas is None or cas == 0)
            else:
                result = await self._delete(target, cas)
        except catalog.CasFailed:
            return consul.write_answer(False)
        except catalog.NotFound:
            if request.method == "PUT":
                raise
            return consul.write_answer(not cas)  # deleting what is not there: done (Consul)
        self.metrics.saw_revision(result.revision)
        return consul.write_answer(True, result.revision)

    async def _watch(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        if segs[1:]:
            raise HTTPError(404, "no such route: /v1/watch/" + "/".join(segs[1:]))
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
            return await self.reads.watch(snap, units, with_list, scope)

        return await self.read(request, principal, resolve, "/v1/watch", frozenset({"units", "list"}))

    # -- writes ------------------------------------------------------------------------

    def _operator(self, request: Request, principal: auth.Principal, refusal: str) -> None:
        if not principal.operator:
            raise HTTPError(403, f"a {principal.kind} token may not {refusal}")
        check_query(request, {"format"})

    async def _write_record(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        """PUT and DELETE of a record or a field: by seed path (``kv``) or document path."""
        self._operator(request, principal, "write: writes need an operator token")
        target = seed_to_target(segs[1:]) if segs[0] == "kv" else parse_doc_path(segs)
        if request.method == "DELETE":
            return self.written(request, await self._delete(target))
        body = await self.body(request)
        result = await self.writes.put(target, body, request.headers.get("content-type", ""))
        return self.written(request, result)

    async def _delete(self, target: Target, cas: int | None = None) -> catalog.WriteResult:
        """Delete what ``target`` names; a deleted account, stack or service takes the
        views and bodies kept for it along (what it describes is gone)."""
        result = await self.writes.delete(target, cas)
        if target.kind in ("account", "stack", "service") and not target.field:
            self.reads.views.drop(target.ids)
            self.rendered.drop(target.ids)
            self.discovery.instances.drop(target.ids)
        if result.big:
            # reading every unit record to delete left its heap behind (a 66,000-unit
            # account: 72 -> 132 MB RSS, kept): hand it back, as after a big load (not
            # after a small one: the collection in trim holds the GIL for ~20 ms)
            await anyio.to_thread.run_sync(heap.trim)
        return result

    async def _load(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        self._operator(request, principal, "load documents: that needs an operator token")
        body = await self.body(request)
        big = len(body) >= heap.TRIM_AFTER
        with heap.collections_paused() if big else contextlib.nullcontext():
            try:
                return await self._load_document(request, body)
            finally:
                del body
                if big:  # the document parsed and validated left its heap behind
                    await anyio.to_thread.run_sync(heap.trim)

    async def _load_document(self, request: Request, body: bytes) -> Response:
        # parsed and validated off the event loop (parse_body, Writes.load): a 15 MB JSON
        # document is ~0.25 s of parsing (a YAML one, pure Python, ~60 s)
        content_type = request.headers.get("content-type", "")
        data = await anyio.to_thread.run_sync(parse_body, body, content_type, "load document")
        del body  # the document's bytes are not needed past here
        if not isinstance(data, dict):
            raise HTTPError(400, "load document: expected a mapping with accounts and/or hosts")
        return self.written(request, await self.writes.load(data, give_up=True))

    async def _write_token(self, request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        """POST mints a token (shown once), DELETE of ``/v1/tokens/<id>`` revokes one."""
        self._operator(request, principal, "write: writes need an operator token")
        rest = segs[1:]
        if request.method == "DELETE":
            if len(rest) != 1:
                raise HTTPError(404, "no such token path: use /v1/tokens/<id>")
            return self.written(request, await self.writes.revoke_token(rest[0]))
        data = parse_body(await self.body(request), request.headers.get("content-type", ""), "token")
        if not isinstance(data, dict) or set(data) - {"kind", "subject"} or "kind" not in data:
            raise HTTPError(
                400, 'token: expected {"kind": "operator"|"host"|"unit"|"reader", "subject": NAME}'
            )
        token, info = await self.writes.create_token(str(data["kind"]), str(data.get("subject", "")))
        body = json.dumps({"token": token, **info}) + "\n"
        return Response(body, 201, media_type=JSON, headers={"Cache-Control": "no-store"})

    def written(self, request: Request, result: catalog.WriteResult) -> Response:
        self.metrics.saw_revision(result.revision)
        headers = {protocol.REVISION_HEADER: str(result.revision)}
        if wants_json(request):
            body = json.dumps({"revision": result.revision, "changed": result.changed}) + "\n"
            return Response(body, headers=headers, media_type=JSON)
        return Response(
            f"revision {result.revision} ({result.changed} records changed)\n",
            headers=headers,
            media_type=TEXT,
        )
