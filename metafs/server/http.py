"""HTTP plumbing of the API: errors as responses, the raw path split into segments, the
query checked, durations parsed. Nothing here knows the catalog."""

from __future__ import annotations

import json
import re
from urllib.parse import unquote, unquote_plus

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

TEXT = "text/plain; charset=utf-8"
JSON = "application/json; charset=utf-8"
MAX_SEGMENT = 255
_WAIT_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: the query parameters that make a read a long poll
LONG_POLL = frozenset({"index", "wait"})
#: headers a proxy adds: a request carrying one was relayed, and is refused (SSRF guard)
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded")
#: the ASGI scope key under which a read leaves the store revision it was read at, for
#: the answer cache (the ``X-Metafs-Revision`` a scoped token gets is not that revision)
READ_AT = "metafs.read_at"


class PiecewiseResponse(Response):
    """A response whose body goes to the server :data:`PIECE` bytes at a time, each after
    the one before left the write buffer: one ``transport.write`` of a 63 MB view copied it
    whole into asyncio's buffer on the loop (~0.2 s), and a slow client held it all."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        view = memoryview(self.body)
        for at in range(0, len(view), PIECE):
            piece = bytes(view[at : at + PIECE])
            await send({"type": "http.response.body", "body": piece, "more_body": at + PIECE < len(view)})
        if not view:
            await send({"type": "http.response.body", "body": b""})


#: what :class:`PiecewiseResponse` hands the server at a time
PIECE = 1 << 20


class HTTPError(Exception):
    """An answer other than 200: its status, message, detail lines and headers."""

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


def raw_path(scope: Scope) -> bytes:
    """The request path as the client spelled it, as routing splits it: ``a%2Fb`` is one
    segment and ``a/b`` two, where the decoded ``scope["path"]`` makes them the same."""
    raw: bytes | None = scope.get("raw_path")
    return raw.split(b"?", 1)[0] if raw else scope["path"].encode()


def param_name(part: bytes) -> str:
    """A raw query parameter's name, decoded as the server decodes it (``ind%65x`` is
    ``index``)."""
    name = part.split(b"=", 1)[0]
    return unquote_plus(name.decode("latin-1")) if b"%" in name or b"+" in name else name.decode("latin-1")


def query_without(query: bytes, names: frozenset[str]) -> bytes:
    """The raw query without the parameters in ``names``; the others in their order and
    spelling (the server reads the last of repeated parameters: order matters)."""
    return b"&".join(p for p in query.split(b"&") if param_name(p) not in names)


def has_param(query: bytes, names: frozenset[str]) -> bool:
    """Whether the raw query has a parameter named one of ``names``."""
    return bool(query) and any(param_name(p) in names for p in query.split(b"&"))


def is_long_poll(query: bytes) -> bool:
    return has_param(query, LONG_POLL)


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


def check_query(request: Request, allowed: set[str], repeatable: frozenset[str] = frozenset()) -> None:
    """400 for a parameter not ``allowed``, or given twice and not ``repeatable``."""
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in allowed:
            raise HTTPError(400, f"unknown query parameter {name!r} (allowed: {', '.join(sorted(allowed))})")
        if name in seen and name not in repeatable:
            raise HTTPError(400, f"query parameter {name!r} is given more than once")
        seen.add(name)
    fmt = request.query_params.get("format")
    if fmt is not None and fmt not in ("text", "json", "meta"):
        raise HTTPError(400, f"format={fmt!r}: expected text, json or meta")
