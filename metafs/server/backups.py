"""``GET /v1/backup``'s body: one store snapshot, every live key in key order, written as
the backup document (metafs/backup.py) a batch at a time, so that a 100,000-unit store is
never one string in memory and the loop runs between batches."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .. import auth, backup
from ..store import Store
from .http import HTTPError, check_query

log = logging.getLogger("metafs.server")


def backup_route(store: Store) -> Callable[[Request, auth.Principal, list[str]], Awaitable[Response]]:
    """The handler of ``GET /v1/backup`` (operators): the backup document, streamed while
    writers go on."""

    async def get(request: Request, principal: auth.Principal, segs: list[str]) -> Response:
        if segs[1:]:
            raise HTTPError(404, "no such route: /v1/backup/" + "/".join(segs[1:]))
        if not principal.operator:
            raise HTTPError(
                403, f"a {principal.kind} token may not take a backup: that needs an operator token"
            )
        check_query(request, set())
        return StreamingResponse(
            backup_lines(store), media_type="application/x-ndjson", headers={"Cache-Control": "no-store"}
        )

    return get


async def backup_lines(store: Store) -> AsyncIterator[bytes]:
    """The document's lines, grouped by batch. The header needs the snapshot's revision,
    which a backend may fix only at its first read: it goes out with the first batch."""
    counts = backup.Counts()
    async with store.snapshot() as snap, contextlib.aclosing(snap.scan()) as batches:
        started = False
        async for batch in batches:
            chunk = []
            if not started:
                started = True
                chunk.append(head := backup.header(snap.revision, store.identity))
                counts.digest.update(head)
            for item in batch:
                line = backup.record(item)
                counts.add(item.key, line)
                chunk.append(line)
            yield b"".join(chunk)
        if not started:  # an empty store
            head = backup.header(snap.revision or await store.revision(), store.identity)
            counts.digest.update(head)
            yield head
        yield counts.end()
        log.info("backup at revision %d: %d records", snap.revision, counts.records)
