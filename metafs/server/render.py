"""A read's response: the headers a snapshot gives it, the body in the format asked.

The JSON of a whole unit view (``?format=meta``, what every mount fetches) costs more to
make than everything else in a request, and the views of one service's units all change
together: :class:`RenderedViews` keeps the last body made for each unit and format, with
what it was made from, under a byte bound.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from email.utils import formatdate
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from .. import heap, tree
from ..catalog.views import UnitView
from ..lru import LRU
from ..protocol import INDEX_HEADER, KIND_HEADER, REVISION_HEADER
from ..store import Snapshot
from .http import JSON, PIECE, READ_AT, TEXT, HTTPError, PiecewiseResponse, wants_json

Made = tuple[tuple[int, ...], int]  # what a view was rendered from: its service view's revisions, its own


class RenderedViews:
    """The last rendered body of each unit's whole view, by format: one per unit, not
    one per revision. Least recently used out first once their total passes
    ``max_bytes`` (0 keeps none); a service's are dropped when it is deleted."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        #: (unit id, format) -> (what it was made from, the body, its service's ids)
        self._bodies: LRU[tuple[str, str], tuple[Made, bytes, tuple[str, ...]]] = LRU(
            lambda kept: len(kept[1]), max_bytes
        )

    def __len__(self) -> int:
        return len(self._bodies)

    @property
    def size(self) -> int:
        return self._bodies.size

    def body(self, view: UnitView, fmt: str, make: Callable[[], bytes]) -> bytes:
        """``make()``'s bytes, made once per unit, format and state of the view."""
        body = self.kept(view, fmt)
        if body is None:
            body = make()
            self.keep(view, fmt, body)
        return body

    def kept(self, view: UnitView, fmt: str) -> bytes | None:
        """The body kept for ``view`` in ``fmt`` if made from the view as it is now."""
        if view.shared is None:
            return None
        kept = self._bodies.get((view.unit_id, fmt))
        return kept[1] if kept is not None and kept[0] == (view.shared.revs, view.rev) else None

    def keep(self, view: UnitView, fmt: str, body: bytes) -> None:
        if view.shared is None:
            return
        key = (view.unit_id, fmt)
        if len(body) <= self.max_bytes:
            self._bodies.put(key, ((view.shared.revs, view.rev), body, view.shared.ids))
        else:
            self._bodies.pop(key)

    async def big_body(self, request: Request, node: tree.Node | None, snap: Snapshot) -> bytes | None:
        """The body of a big whole view (a service of :data:`BIG_VIEW` records or more,
        as JSON), made in a worker thread and dumped piece by piece: on the loop, a
        66,000-unit service's 63 MB view held every request for 9 s. None: not big, or
        not a whole view (:func:`read_response` makes it)."""
        q = request.query_params
        fmt = asked_format(request)
        if (
            not isinstance(node, UnitView)
            or node.shared is None
            or len(node.shared.records) < BIG_VIEW
            or fmt not in ("json", "meta")
            or "since" in q
            or etag(snap, fmt, node) in request.headers.get("if-none-match", "")  # a 304
        ):
            return None
        key = fmt + node.variant
        body = self.kept(node, key)
        if body is None:
            body = await anyio.to_thread.run_sync(_whole_body, node, fmt)
            self.keep(node, key, body)
        return body

    def drop(self, prefix: tuple[str, ...]) -> None:
        """Drop the bodies of every unit of the services at or below ``prefix`` (an
        account, a stack or a service: what a delete removed)."""
        for key in self._bodies:
            kept = self._bodies.peek(key)
            if kept is not None and kept[2][: len(prefix)] == prefix:
                self._bodies.pop(key)


#: a service view of this many records is rendered off the event loop (see big_body)
BIG_VIEW = 2_000


def etag(snap: Snapshot, fmt: str, node: tree.Node | None) -> str:
    """A read's ETag: where what it read last changed, in its format (and a view's form
    of its peers, ``+lazy``: a lazy and a whole view are different bodies)."""
    variant = node.variant if isinstance(node, UnitView) else ""
    return f'"{snap.changed}.{fmt}{variant}"'


def _whole_body(node: UnitView, fmt: str) -> bytes:
    data = tree.to_meta_swapping(node, node.swaps or {}) if fmt == "meta" else tree.to_json(node)
    try:
        chunks: list[bytes] = []
        batch: list[str] = []
        size = 0
        for piece in json_pieces(data):
            batch.append(piece)
            size += len(piece)
            if size >= _CHUNK:  # ~1 MB joined and encoded at a time: no C call holds the GIL long
                chunks.append("".join(batch).encode())
                batch, size = [], 0
        batch.append("\n")
        chunks.append("".join(batch).encode())
        return b"".join(chunks)
    finally:
        heap.dismantle(data)  # freed at once, its millions of objects held the GIL


def json_pieces(data: Any, depth: int = 0) -> Iterator[str]:
    """The compact JSON of ``data`` as many small strings: one ``json.dumps`` of a 63 MB
    view is one C call holding the GIL for ~4 s, and joining nested strings level by level
    copied the whole body at every level (~0.6 s with the GIL held). Every container above
    depth 8 (where a view's peers are) is taken apart, and below it those of more than 16
    items."""
    if not isinstance(data, dict | list) or (depth >= _WHOLE_BELOW and len(data) <= _SMALL):
        yield json.dumps(data, separators=(",", ":"))
        return
    if isinstance(data, list):
        yield "["
        for i, v in enumerate(data):
            if i:
                yield ","
            yield from json_pieces(v, depth + 1)
        yield "]"
        return
    yield "{"
    for i, (k, v) in enumerate(data.items()):
        yield ("," if i else "") + json.dumps(str(k)) + ":"
        yield from json_pieces(v, depth + 1)
    yield "}"


_WHOLE_BELOW = 8
_SMALL = 16
_CHUNK = 1 << 20


def asked_format(request: Request) -> str:
    """``?format=``, else ``json`` if the request accepts it, else ``text``."""
    return request.query_params.get("format") or ("json" if wants_json(request) else "text")


def read_response(
    request: Request,
    node: tree.Node | None,
    snap: Snapshot,
    what: str,
    rendered: RenderedViews,
    scoped: bool = False,
    made: bytes | None = None,
) -> Response:
    """A read's response: headers from the snapshot, body in the asked format.

    ``scoped`` (a unit or host token): ``X-Metafs-Revision`` is the last revision at which
    anything this answer read changed, not the store's, which would show a container how
    often every account is written. It is still a revision the answer is fresh at.
    ``made``: the body, made already (see :meth:`RenderedViews.big_body`)."""
    q = request.query_params
    fmt = asked_format(request)
    request.scope[READ_AT] = snap.revision
    headers = {
        INDEX_HEADER: str(snap.changed),
        # scoped: at least the compacted revision, so that a client that polls on is never
        # overtaken by compaction while it holds an answer (see api.Api.read's 410)
        REVISION_HEADER: str(max(snap.changed, snap.compacted) if scoped else snap.revision),
        "ETag": etag(snap, fmt, node),
        "Cache-Control": "no-cache",
    }
    if snap.changed_time:
        headers["Last-Modified"] = formatdate(snap.changed_time, usegmt=True)
    if node is None:
        raise HTTPError(404, f"not found: {what}", headers=headers)
    headers[KIND_HEADER] = "value" if isinstance(node, tree.Leaf) else "directory"
    if headers["ETag"] in {t.strip() for t in request.headers.get("if-none-match", "").split(",")}:
        return Response(status_code=304, headers=headers)
    if fmt == "text":
        return Response(tree.render_text(node), headers=headers, media_type=TEXT)
    since = q.get("since")
    swaps = node.swaps if isinstance(node, UnitView) else None
    if (since is not None or swaps) and fmt != "meta":
        raise HTTPError(400, "since= and peers= need format=meta (the form with revisions)")
    if since is not None:
        if not since.isdigit():
            raise HTTPError(400, f"since={since!r}: expected a revision, with format=meta")
        if swaps is None:  # peers=all: a {"k":1} for every subtree unchanged since
            kept = node.unchanged_since(int(since)) if isinstance(node, UnitView) else ()
            swaps = dict.fromkeys(kept, tree.KEEP)
        delta = tree.to_meta_swapping(node, swaps)
        return Response(json.dumps(delta, separators=(",", ":")) + "\n", headers=headers, media_type=JSON)

    def make() -> bytes:
        data = tree.to_meta_swapping(node, swaps or {}) if fmt == "meta" else tree.to_json(node)
        return (json.dumps(data, separators=(",", ":")) + "\n").encode()

    if made is not None:
        body = made
    else:
        body = rendered.body(node, fmt + node.variant, make) if isinstance(node, UnitView) else make()
    respond = PiecewiseResponse if len(body) > PIECE else Response
    return respond(body, headers=headers, media_type=JSON)
