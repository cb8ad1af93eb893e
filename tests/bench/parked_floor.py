"""The floor for the long-poll figure: a one-screen ASGI app on the same uvicorn (uvloop,
httptools) that parks every GET until a PUT arrives, then answers all of them with a
body and as many headers as a metafs read carries. Nothing of metafs is in it.

Usage: ``python parked_floor.py PORT`` (serves 127.0.0.1:PORT until killed).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn

_woken = asyncio.Event()
_HEADERS = [
    (b"content-type", b"text/plain; charset=utf-8"),
    (b"content-length", b"6"),
    (b"x-metafs-index", b"12"),
    (b"x-metafs-revision", b"12"),
    (b"etag", b'"12.text"'),
    (b"cache-control", b"no-cache"),
    (b"last-modified", b"Thu, 26 Nov 2026 05:00:00 GMT"),
    (b"x-metafs-kind", b"value"),
]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["method"] == "PUT":
        _woken.set()
    elif scope["path"] != "/healthz":
        await _woken.wait()
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": b"woken\n"})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="error",
        access_log=False,
        proxy_headers=False,
    )
