"""What the server serves from its package rather than its store: the read-only web page
(``/ui``) and the OpenAPI document (``/openapi.json``)."""

from __future__ import annotations

import json
from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from . import openapi
from .http import JSON, HTTPError, error_response

UI_FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
#: the page may load its own script and style and talk to this server, nothing else
UI_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
    " form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def ui(request: Request) -> Response:
    """The read-only web page (``metafs/ui/``). The page holds no data: its script reads
    ``/v1/accounts/`` with the operator token the person gives it."""
    name = request.path_params.get("name", "index.html")
    if name not in UI_FILES:
        return error_response(request, HTTPError(404, f"not found: /ui/{name}"))
    body = (resources.files("metafs") / "ui" / name).read_bytes()
    return Response(body, media_type=UI_FILES[name], headers=UI_HEADERS)


async def openapi_document(request: Request) -> Response:
    return Response(json.dumps(openapi.document()), media_type=JSON)
