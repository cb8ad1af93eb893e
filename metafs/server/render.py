"""A read's response: the headers a snapshot gives it, the body in the format asked.

The JSON of a whole unit view (``?format=meta``, what every mount fetches) costs more to
make than everything else in a request, and the views of one service's units all change
together: :class:`RenderedViews` keeps the last body made for each unit and format, with
what it was made from, under a byte bound.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from email.utils import formatdate

from starlette.requests import Request
from starlette.responses import Response

from .. import tree
from ..catalog.views import UnitView
from ..lru import LRU
from ..protocol import INDEX_HEADER, KIND_HEADER, REVISION_HEADER
from ..store import Snapshot
from .http import JSON, READ_AT, TEXT, HTTPError, wants_json

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
        if view.shared is None:
            return make()
        made: Made = (view.shared.revs, view.rev)
        key = (view.unit_id, fmt)
        kept = self._bodies.get(key)
        if kept is not None and kept[0] == made:
            return kept[1]
        body = make()
        if len(body) <= self.max_bytes:
            self._bodies.put(key, (made, body, view.shared.ids))
        else:
            self._bodies.pop(key)
        return body

    def drop(self, prefix: tuple[str, ...]) -> None:
        """Drop the bodies of every unit of the services at or below ``prefix`` (an
        account, a stack or a service: what a delete removed)."""
        for key in self._bodies:
            kept = self._bodies.peek(key)
            if kept is not None and kept[2][: len(prefix)] == prefix:
                self._bodies.pop(key)


def read_response(
    request: Request,
    node: tree.Node | None,
    snap: Snapshot,
    what: str,
    rendered: RenderedViews,
    scoped: bool = False,
) -> Response:
    """A read's response: headers from the snapshot, body in the asked format.

    ``scoped`` (a unit or host token): ``X-Metafs-Revision`` is the last revision at which
    anything this answer read changed, not the store's, which would show a container how
    often every account is written. It is still a revision the answer is fresh at."""
    q = request.query_params
    fmt = q.get("format") or ("json" if wants_json(request) else "text")
    request.scope[READ_AT] = snap.revision
    headers = {
        INDEX_HEADER: str(snap.changed),
        REVISION_HEADER: str(snap.changed if scoped else snap.revision),
        "ETag": f'"{snap.changed}.{fmt}"',
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
    if since is not None:
        if fmt != "meta" or not since.isdigit():
            raise HTTPError(400, f"since={since!r}: expected a revision, with format=meta")
        kept = node.unchanged_since(int(since)) if isinstance(node, UnitView) else set()
        delta = tree.to_meta_keeping(node, kept)
        return Response(json.dumps(delta, separators=(",", ":")) + "\n", headers=headers, media_type=JSON)

    def make() -> bytes:
        data = tree.to_meta(node) if fmt == "meta" else tree.to_json(node)
        return (json.dumps(data, separators=(",", ":")) + "\n").encode()

    body = rendered.body(node, fmt, make) if isinstance(node, UnitView) else make()
    return Response(body, headers=headers, media_type=JSON)
