"""The HTTP client of the metadata server, used by the CLI (and the filesystem).

A *key* is what a person types: the seed's layout (``5/test1/s4/<unit>/hostname``), a
path in the unit's own view (``self/hostname``, ``service/all_hosts/``), or a path of the
document API (``accounts/5/stacks/test1``, ``hosts/node-a``). Names in keys are written
as the filesystem shows them (percent-encoded where needed), so a name copied from ``ls``
works as it is.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import IO, Any
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import httpx

from .client_tls import TLSConfigError, TLSOptions, once_each, verify_for, why_failed
from .protocol import EXPIRED, FLAVOR, INDEX_HEADER, KEY_ROUTES, PEERS_AT, STORE_HEADER

VIEW_ROOTS = {"self", "service", "stack", "revision"}
#: how often a long-running client looks at its certificate files for a rotation (seconds)
CERT_CHECK = 5.0
log = logging.getLogger("metafs.client")
NO_SERVER = "no server given: use --server URL or set METADATA_CONNECTION_URL"


class ClientError(Exception):
    """A request failed; ``status`` is the HTTP status, or None when no server answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class HistoryLost(ClientError):
    """What the client holds cannot be brought up to date by a delta or a long poll: the
    store behind the server is another (its identity changed: a new or restored store),
    never reached the revision asked from (an older copy put back), or compacted its
    history past it (``--history-retention``). Read it again whole, without ``index``
    or ``since``."""


def server_roots(servers: str | list[str]) -> list[str]:
    """Server base URLs from ``--server`` (comma-separated); a seed-style URL ending in
    ``/v1/kv/`` (``$METADATA_CONNECTION_URL``) is reduced to its root."""
    items = servers.split(",") if isinstance(servers, str) else servers
    roots = []
    for raw in (s.strip() for s in items):
        if not raw:
            continue
        parts = urlsplit(raw if "://" in raw else "http://" + raw)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ClientError(f"server URL {raw!r}: expected http://HOST:PORT")
        path = parts.path.rstrip("/")
        for suffix in ("/v1/kv", "/v1"):
            if path.endswith(suffix):
                path = path[: -len(suffix)]
                break
        roots.append(urlunsplit((parts.scheme, parts.netloc, path, "", "")))
    if not roots:
        raise ClientError(NO_SERVER)
    return roots


def unit_id_of(unit: str) -> str:
    """The unit id from ``$DEPLOYMENT_UNIT_ID`` (``account/stack/service/unit``) or a bare id."""
    return unit.rstrip("/").rsplit("/", 1)[-1]


def key_path(key: str, unit: str | None = None) -> str:
    """The API path for a key (see the module docstring)."""
    segs = [s for s in key.strip("/").split("/") if s]
    trailing = key.endswith("/") and bool(segs)
    if segs and segs[0] in VIEW_ROOTS:
        if not unit:
            raise ClientError(f"key {key!r} is in a unit's view: give --unit or set DEPLOYMENT_UNIT_ID")
        segs = ["view", unit_id_of(unit), *segs]
    elif not segs or segs[0] not in KEY_ROUTES:
        segs = ["kv", *segs]
    path = "/v1/" + "/".join(quote(s, safe="%@:") for s in segs)
    return path + "/" if trailing else path


@dataclass
class Answer:
    status: int
    body: bytes
    index: int
    headers: httpx.Headers
    #: the body's bytes as they crossed the wire (gzip-encoded, most often, when big)
    wire: int = 0

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


def _error_message(resp: httpx.Response) -> str:
    try:
        err = resp.json()["error"]
        return "; ".join([err["message"], *err.get("details", [])])
    except (ValueError, KeyError, TypeError):
        return resp.text.strip().replace("\n", "; ") or resp.reason_phrase


@dataclass(frozen=True, slots=True)
class _Send:
    """One attempt of a request: send it to ``url``."""

    method: str
    url: str
    kw: dict[str, Any] = field(default_factory=dict)


#: the one request loop yields attempts (answered with the response, or the transport
#: error) and pauses (seconds to sleep, answered with None); it returns the answer
Exchange = Generator["_Send | float", "httpx.Response | httpx.TransportError | None", "Answer"]


class _Base:
    """What the sync and async clients share: servers, headers, the request loop with its
    failover order and backoff, errors. Each client only drives :meth:`_exchange`."""

    def __init__(
        self,
        servers: str | list[str],
        token: str | None = None,
        timeout: float = 10.0,
        rounds: int = 3,
        tls: TLSOptions | None = None,
    ) -> None:
        self.roots = server_roots(servers)
        self.headers = {FLAVOR[0]: FLAVOR[1]}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.timeout = timeout
        #: a request tries every server, up to ``rounds`` times, with backoff in between
        self.rounds = max(1, rounds)
        self._current = 0
        # a server that does not accept a connection within 2 s is taken for gone
        self._timeouts = httpx.Timeout(timeout, connect=min(timeout, 2.0))
        try:
            self._verify = verify_for(self.roots, tls or TLSOptions())
        except TLSConfigError as exc:
            raise ClientError(str(exc)) from None
        #: the identity of the store the servers answered from (protocol.STORE_HEADER)
        self.store = ""

    @property
    def current(self) -> str:
        """The server that answered last (the first one tried next)."""
        return self.roots[self._current]

    def _urls(self, path: str) -> Iterator[tuple[int, str]]:
        """Each server in turn, starting with the one that answered last."""
        n = len(self.roots)
        for i in range(n):
            j = (self._current + i) % n
            yield j, self.roots[j] + path

    def _long(self, wait: float) -> httpx.Timeout:
        """Timeouts for a long poll that may be held ``wait`` seconds."""
        return httpx.Timeout(wait + self.timeout, connect=self._timeouts.connect)

    def _exchange(self, method: str, path: str, ok: tuple[int, ...], kw: dict[str, Any]) -> Exchange:
        """The request loop: every server in turn, ``rounds`` times, with backoff between
        rounds; a server that does not answer, or answers 5xx while there are others, is
        skipped. Raises :class:`ClientError` for a status outside ``ok``."""
        errors: list[str] = []
        for round_ in range(self.rounds):
            for j, url in self._urls(path):
                resp = yield _Send(method, url, kw)
                if method == "GET" and isinstance(resp, httpx.RemoteProtocolError):
                    # a kept-alive connection the server closed as idle, found closed only
                    # when reused (a busy client): once more at once, on a new connection
                    resp = yield _Send(method, url, kw)
                if isinstance(resp, httpx.TransportError):
                    errors.append(why_failed(url, resp))
                    continue
                assert resp is not None
                if resp.status_code >= 500 and len(self.roots) > 1:
                    errors.append(f"{url}: HTTP {resp.status_code}")  # another may have a working store
                    continue
                return self._answer(j, resp, ok)
            if round_ + 1 < self.rounds:
                yield min(0.2 * 2**round_, 2.0)
        raise ClientError("server unreachable: " + once_each(errors))

    def _answer(self, j: int, resp: httpx.Response, ok: tuple[int, ...]) -> Answer:
        self._current = j
        store = resp.headers.get(STORE_HEADER, "")
        if store and store != self.store:
            before, self.store = self.store, store
            if before:
                raise HistoryLost(f"store replaced: {before} -> {store} at {self.roots[j]}", resp.status_code)
        if resp.status_code == EXPIRED:
            raise HistoryLost(f"history lost: {_error_message(resp)}", resp.status_code)
        if resp.status_code not in ok:
            raise ClientError(f"{_error_message(resp)} (HTTP {resp.status_code})", resp.status_code)
        index = int(resp.headers.get(INDEX_HEADER, "0") or 0)
        return Answer(resp.status_code, resp.content, index, resp.headers, resp.num_bytes_downloaded)


class MetadataClient(_Base):
    """A synchronous client; tries each server in turn when one does not answer.
    ``transport`` replaces httpx's (``httpx.MockTransport`` in unit tests)."""

    def __init__(
        self,
        servers: str | list[str],
        token: str | None = None,
        timeout: float = 10.0,
        rounds: int = 3,
        transport: httpx.BaseTransport | None = None,
        tls: TLSOptions | None = None,
    ) -> None:
        super().__init__(servers, token, timeout, rounds, tls)
        self._http = httpx.Client(
            headers=self.headers, timeout=self._timeouts, transport=transport, verify=self._verify
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MetadataClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kw: Any) -> Answer:
        """Send a request to the first server that answers; raise :class:`ClientError`
        for a status outside ``ok``."""
        loop = self._exchange(method, path, ok, kw)
        step = next(loop)
        while True:
            result: httpx.Response | httpx.TransportError | None = None
            if isinstance(step, _Send):
                try:
                    result = self._http.request(step.method, step.url, **step.kw)
                except httpx.TransportError as exc:
                    result = exc
            else:
                time.sleep(step)
            try:
                step = loop.send(result)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    def get(self, key: str, unit: str | None = None, as_json: bool = False) -> Answer:
        return self.request("GET", key_path(key, unit), params={"format": "json" if as_json else "text"})

    def put(
        self, key: str, value: bytes, content_type: str = "text/plain", unit: str | None = None
    ) -> Answer:
        return self.request("PUT", key_path(key, unit), content=value, headers={"Content-Type": content_type})

    def delete(self, key: str, unit: str | None = None) -> Answer:
        return self.request("DELETE", key_path(key, unit))

    def load(self, document: bytes, content_type: str) -> Answer:
        """A whole load document, all or nothing; the answer is JSON (revision, changed)."""
        return self.request(
            "POST",
            "/v1/load",
            content=document,
            headers={"Content-Type": content_type},
            params={"format": "json"},
        )

    def create_token(self, kind: str, subject: str) -> dict[str, Any]:
        """Mint a token: ``{"token", "id", "kind", "subject", "created"}`` (shown once)."""
        data: dict[str, Any] = self.request(
            "POST", "/v1/tokens/", json={"kind": kind, "subject": subject}, ok=(201,)
        ).json()
        return data

    def tokens(self) -> dict[str, dict[str, Any]]:
        """Every token's kind, subject and creation time, by id."""
        data: dict[str, dict[str, Any]] = self.request("GET", "/v1/tokens/", params={"format": "json"}).json()
        return data

    def revoke_token(self, token_id: str) -> Answer:
        return self.request("DELETE", f"/v1/tokens/{quote(token_id, safe='')}")

    def backup(self, out: IO[bytes]) -> None:
        """Stream the server's backup document (``GET /v1/backup``) into ``out``; another
        server is tried only while nothing was written (a cut stream raises)."""
        errors: list[str] = []
        timeout = httpx.Timeout(self.timeout, read=max(self.timeout, 300.0), connect=self._timeouts.connect)
        for j, url in self._urls("/v1/backup"):
            written = False
            try:
                with self._http.stream("GET", url, timeout=timeout) as resp:
                    if resp.status_code != 200:
                        resp.read()
                        self._answer(j, resp, (200,))  # raises, with the server's message
                    self._current = j
                    for chunk in resp.iter_bytes():
                        out.write(chunk)
                        written = True
                return
            except httpx.TransportError as exc:
                if written:
                    raise ClientError(f"backup cut short: {why_failed(url, exc)}") from None
                errors.append(why_failed(url, exc))
        raise ClientError("server unreachable: " + once_each(errors))

    def wait(self, key: str, timeout: float, unit: str | None = None, poll: float = 60.0) -> Answer | None:
        """Block until ``key`` exists (if it does not) or its value changes (if it does);
        return the new answer, or None after ``timeout`` seconds."""
        path = key_path(key, unit)
        deadline = time.monotonic() + timeout
        first = self.request("GET", path, ok=(200, 404))
        index = first.index
        while (left := deadline - time.monotonic()) > 0:
            wait = min(left, poll)
            try:
                ans = self.request(
                    "GET",
                    path,
                    ok=(200, 404),
                    params={"index": index, "wait": f"{wait:.3f}"},
                    timeout=self._long(wait),
                )
            except HistoryLost:  # another history: its revisions say nothing of ours
                ans = self.request("GET", path, ok=(200, 404))
                index = 0
            except ClientError as exc:
                if exc.status is not None or deadline - time.monotonic() < 1.0:
                    raise
                time.sleep(0.5)  # no server answered (one restarting): wait on, till the deadline
                continue
            if ans.status == 200 and (first.status == 404 or ans.body != first.body):
                return ans
            index = max(index, ans.index)
        return None


class AsyncMetadataClient(_Base):
    """The asynchronous client (anyio: runs under trio in the filesystem daemon). One round
    over the servers by default: the view cache retries with its own backoff."""

    def __init__(
        self,
        servers: str | list[str],
        token: str | None = None,
        timeout: float = 10.0,
        rounds: int = 1,
        transport: httpx.AsyncBaseTransport | None = None,
        tls: TLSOptions | None = None,
    ) -> None:
        super().__init__(servers, token, timeout, rounds, tls)
        self._tls = tls or TLSOptions()
        self._transport = transport
        self._http = self._new_http()
        #: the pool before the last certificate rotation: it finishes the requests under
        #: way (a parked long poll), and is closed at the next rotation or at the end
        self._retired: httpx.AsyncClient | None = None
        self._stamp = self._files_stamp()
        self._checked = time.monotonic()

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            headers=self.headers, timeout=self._timeouts, transport=self._transport, verify=self._verify
        )

    def _files_stamp(self) -> tuple[int, ...]:
        files = [f for f in (self._tls.ca_file, self._tls.cert_file, self._tls.key_file) if f]
        try:
            return tuple(os.stat(f).st_mtime_ns for f in files)
        except OSError:
            return ()  # being replaced: look again next time

    async def _rotate(self) -> None:
        """A long-running client (the mount daemon) takes rotated certificate files for its
        new connections, looked at every :data:`CERT_CHECK` seconds; files that do not
        load keep the old ones (said once each time they change)."""
        if not (self._tls.ca_file or self._tls.cert_file):
            return
        now = time.monotonic()
        if now - self._checked < CERT_CHECK:
            return
        self._checked = now
        stamp = self._files_stamp()
        if not stamp or stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._verify = verify_for(self.roots, self._tls)
        except TLSConfigError as exc:
            log.warning("certificate files changed but do not load; keeping the old ones: %s", exc)
            return
        if self._retired is not None:
            await self._retired.aclose()
        self._retired, self._http = self._http, self._new_http()
        log.warning("certificate files changed: new connections use them")

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._retired is not None:
            await self._retired.aclose()

    async def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kw: Any) -> Answer:
        await self._rotate()
        loop = self._exchange(method, path, ok, kw)
        step = next(loop)
        while True:
            result: httpx.Response | httpx.TransportError | None = None
            if isinstance(step, _Send):
                try:
                    result = await self._http.request(step.method, step.url, **step.kw)
                except httpx.TransportError as exc:
                    result = exc
            else:
                await anyio.sleep(step)
            try:
                step = loop.send(result)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]

    async def view(
        self, unit_id: str, since: int | None = None, peers: str = "lazy", wait: float | None = None
    ) -> Answer:
        """A unit's whole view with revisions and times (``?format=meta``). ``peers``: how
        ``service/all_hosts`` comes (see :mod:`metafs.catalog.peers`): ``lazy`` (a big
        service's pending, to fetch with :meth:`peers`), ``changes`` (with ``since``: the
        peers changed since), ``all`` (inline; with ``since``, ``{"k": 1}`` per unchanged).
        ``wait``: long-poll, until the view changes after ``since`` (or ``wait`` seconds).
        404 (no such unit) and 403 (not in this token's scope) are answers, not errors."""
        params = {"format": "meta", "peers": peers}
        if since is not None:
            params["since"] = str(since)
        extra: dict[str, Any] = {}
        if wait is not None:
            params.update(index=str(since or 0), wait=f"{wait:.3f}")
            extra["timeout"] = self._long(wait)
        return await self.request(
            "GET", f"/v1/view/{quote(unit_id, safe='')}/", ok=(200, 403, 404), params=params, **extra
        )

    async def peers(self, unit_id: str) -> Answer:
        """Every peer of a unit's service at once: its view's ``service/all_hosts/``."""
        return await self.request(
            "GET",
            f"/v1/view/{quote(unit_id, safe='')}/{'/'.join(PEERS_AT)}/",
            ok=(200, 403, 404),
            params={"format": "meta"},
        )

    async def units(self) -> Answer:
        return await self.request("GET", "/v1/units/", params={"format": "meta"})

    async def watch(self, unit_ids: list[str], with_list: bool, index: int, wait: float) -> Answer:
        """Long-poll until a view among ``unit_ids`` (or the unit list) changes after ``index``."""
        params = {"units": ",".join(unit_ids), "list": "1" if with_list else "0", "index": str(index)}
        params["wait"] = f"{wait:.3f}"
        params["format"] = "json"
        return await self.request("GET", "/v1/watch", params=params, timeout=self._long(wait))
