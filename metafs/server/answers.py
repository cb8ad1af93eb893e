"""Answers to reads, reused until the next commit: the server's hot path.

Between two commits, the answer to a ``GET /v1/...`` depends on the request alone: its
path, its query and the headers the server looks at (``Accept``, ``Authorization``,
``If-None-Match``, ``Metadata-Flavor``, ``X-Consul-Token``). So the bytes of a 200 or 304 are kept and sent
again as they are, skipping routing, the token check, the store reads and the rendering
(one GET of a key went from ~220 to ~50 µs of the server's time; ``make bench``).

An answer is kept with the revision it was read at (what the read left at ``READ_AT`` in
the ASGI scope) and reused
only while the store's :meth:`~metafs.store.base.Store.head` still is that revision: any
commit, from this process or another, drops them all. Tokens live in the store, so the
answers a revoked token got go with the commit that revoked it. Long polls (``index`` or
``wait``), other methods, requests with ``X-Forwarded-For`` or ``Forwarded`` (which the server refuses),
answers other than 200/304 and stores without a cheap head (etcd) pass straight through.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..lru import LRU
from . import consul
from .http import LONG_POLL, PROXY_HEADERS, READ_AT, has_param, raw_path

#: the request headers an answer depends on (see ``Api.principal`` and ``Api.read``):
#: every header that carries a token or changes the answer's shape
KEYED_HEADERS = frozenset(
    {
        b"accept",
        b"accept-encoding",  # a gzip answer is never sent to a client that did not ask for it
        b"authorization",
        b"if-none-match",
        b"metadata-flavor",
        consul.TOKEN_HEADER.lower().encode(),
    }
)

_PROXIED = frozenset(h.lower().encode() for h in PROXY_HEADERS)

Key = tuple[bytes, bytes, tuple[tuple[bytes, bytes], ...]]


@dataclass(slots=True, frozen=True)
class _Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


#: never kept: a long poll, and a delta (``?since=``), made against what one client
#: holds: asked once (after one change each of 1,000 clients' was kept, 8% of the
#: server's time)
NEVER_KEPT = LONG_POLL | {"since"}


def answer_key(scope: Scope) -> Key | None:
    """What a read's answer depends on besides the revision; None: never reuse it.

    Exactly what routing reads: the raw path and the raw query (two spellings of one
    decoded path may be two different keys; see :func:`raw_path`)."""
    query: bytes = scope.get("query_string", b"")
    if has_param(query, NEVER_KEPT):
        return None
    picked = []
    for name, value in scope["headers"]:
        if name in KEYED_HEADERS:
            picked.append((name, value))
        elif name in _PROXIED:
            return None
    return (raw_path(scope), query, tuple(picked))


class AnswerCache:
    """ASGI middleware: reuse the answers of ``app`` to reads while nothing is committed.

    ``head`` tells the store's latest revision without waiting (None: do not reuse);
    ``entries`` and ``max_bytes`` bound how many answers are kept and their bodies' total
    size (least recently used go first), ``max_body`` how big one may be."""

    def __init__(
        self,
        app: ASGIApp,
        head: Callable[[], int | None],
        *,
        entries: int,
        max_bytes: int,
        max_body: int = 1 << 20,
        on_reuse: Callable[[], object] = lambda: None,
    ) -> None:
        self.app = app
        self.head = head
        self.entries = entries
        self.max_bytes = max_bytes
        self.max_body = max_body
        self.on_reuse = on_reuse
        self._revision: int | None = None
        self._answers: LRU[Key, _Answer] = LRU(lambda a: len(a.body), max_bytes, max(entries, 1))

    def __len__(self) -> int:
        return len(self._answers)

    def clear(self) -> None:
        """Forget every answer (the store went back in time: revisions are reused)."""
        self._answers.clear()
        self._revision = None

    @property
    def size(self) -> int:
        """The kept bodies' total size in bytes."""
        return self._answers.size

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        # not a coroutine itself: what passes through (a parked long poll) keeps no frame
        # of this middleware on its stack (~0.5 KB each, 5 MB for 10,000 polls)
        if (
            self.entries <= 0
            or scope["type"] != "http"
            or scope["method"] != "GET"
            or not raw_path(scope).startswith(b"/v1/")
            or (key := answer_key(scope)) is None
            or (revision := self.head()) is None
        ):
            return self.app(scope, receive, send)
        return self._answer(scope, receive, send, key, revision)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, key: Key, revision: int) -> None:
        """Send the kept answer, or make one and keep it."""
        if revision != self._revision:  # something was committed: every answer is old
            self._answers.clear()
            self._revision = revision
        answer = self._answers.get(key)
        if answer is not None:
            self.on_reuse()
            await send({"type": "http.response.start", "status": answer.status, "headers": answer.headers})
            await send({"type": "http.response.body", "body": answer.body})
            return

        start: Message | None = None
        chunks: list[bytes] = []
        whole = False
        size = 0

        async def keep(message: Message) -> None:
            nonlocal start, whole, size
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunk = message.get("body", b"")
                size += len(chunk)
                if size <= self.max_body:  # a bigger one is never kept: not even joined
                    chunks.append(chunk)
                whole = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, keep)
        if start is None or not whole or size > self.max_body or start["status"] not in (200, 304):
            return
        headers = [(bytes(k), bytes(v)) for k, v in start.get("headers", [])]
        read_at = scope.get(READ_AT)
        body = b"".join(chunks)
        # kept only if read at the revision that is still the head: a commit that landed
        # while this answer was made makes it old at once
        if (
            read_at == revision
            and self._revision == revision
            and self.head() == revision
            and len(body) <= min(self.max_body, self.max_bytes)
            and key not in self._answers  # another request made it meanwhile
        ):
            self._answers.put(key, _Answer(start["status"], headers, body))
