"""gzip for the clients that ask (``Accept-Encoding: gzip``): answers over
:data:`MIN_SIZE` bytes are compressed, with ``Vary: Accept-Encoding``, and a client that
did not ask never gets gzip bytes (the answers kept until the next commit are keyed by
``Accept-Encoding`` too: see answers.py). Listing ``all_hosts/`` of a 1,000-unit service is
~1 MB of JSON on every host that lists it; gzip makes it a tenth of that. Big bodies are
compressed in a worker thread, so the loop never holds the GIL for one."""

from __future__ import annotations

import functools
import gzip

import anyio
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .http import PIECE, PiecewiseResponse

#: answers smaller than this go as they are (gzip's header and the CPU are not worth it)
MIN_SIZE = 1024
#: level 1: ~5x on metafs's JSON at a fraction of the default level's CPU
LEVEL = 1
#: bodies this big are compressed off the event loop
IN_THREAD = 256 * 1024


def wants_gzip(request: Request) -> bool:
    for part in request.headers.get("accept-encoding", "").split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


async def compressed(request: Request, response: Response) -> Response:
    """``response`` gzip-encoded when the client asks and it is worth it, else as it is
    (``Vary: Accept-Encoding`` on both, so no cache in between mixes them)."""
    if isinstance(response, StreamingResponse) or response.status_code in (204, 304):
        return response
    body = response.body
    response.headers.setdefault("Vary", "Accept-Encoding")
    if len(body) < MIN_SIZE or "content-encoding" in response.headers or not wants_gzip(request):
        return response
    # one response may go to many clients (long polls woken together share it: see
    # longpoll.py): compressed once, for all of them
    packed: bytes | None = getattr(response, "_gzipped", None)
    if packed is None:
        if len(body) >= IN_THREAD:
            packed = await anyio.to_thread.run_sync(functools.partial(gzip.compress, body, LEVEL, mtime=0))
        else:
            packed = gzip.compress(body, LEVEL, mtime=0)
        response._gzipped = packed  # type: ignore[attr-defined]
    headers = {k: v for k, v in response.headers.items() if k not in ("content-length",)}
    headers["Content-Encoding"] = "gzip"
    respond = PiecewiseResponse if len(packed) > PIECE else Response
    return respond(packed, response.status_code, headers)
