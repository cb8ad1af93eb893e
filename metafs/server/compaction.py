"""History compaction in the background: every ``min(retention, 5 min)`` the tombstones of
deletes older than ``--history-retention`` are removed (the store does it in batches that
never hold a reader up) and the compacted revision rises; reads from below it answer 410
(see :meth:`metafs.server.api.Api.read`), and clients refetch whole."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import anyio

from ..store import Store, StoreError
from ..store.base import Compaction
from .metrics import ServerMetrics

log = logging.getLogger("metafs.server")

#: compaction runs at least this often, whatever the retention (seconds)
MOST_APART = 300.0
#: the first run, this long after the server starts (history from before the start)
FIRST_AFTER = 1.0


async def compact_forever(
    store: Store, retention: float, metrics: ServerMetrics, moved: Callable[[], None] = lambda: None
) -> None:
    """Compact now and then until cancelled; a failed run is counted and logged, and the
    next one tries again. ``moved`` is called when the compacted revision rose: answers
    kept until the next commit carry the old one (a scoped token's revision is at least
    the compacted one), and a client polling on from such an answer would be expired."""
    await anyio.sleep(min(FIRST_AFTER, retention))
    last = -1
    while True:
        done = await compact_once(store, retention, metrics)
        if done is not None and done.compacted != last:
            last = done.compacted
            moved()
        await anyio.sleep(min(retention, MOST_APART))


async def compact_once(store: Store, retention: float, metrics: ServerMetrics) -> Compaction | None:
    """One run, measured; None when the store failed."""
    started = time.monotonic()
    try:
        done = await store.compact(time.time() - retention)
    except StoreError as exc:
        metrics.compactions.labels("error").inc()
        log.warning("compaction failed (the next run tries again): %s", exc)
        return None
    metrics.compaction_seconds.observe(time.monotonic() - started)
    metrics.compactions.labels("ok").inc()
    metrics.compacted.set(done.compacted)
    metrics.tombstones.set(done.kept)
    metrics.compacted_tombstones.inc(done.removed)
    if done.removed:
        log.info(
            "compacted %d tombstones older than %gs; compacted revision %d, %d kept",
            done.removed,
            retention,
            done.compacted,
            done.kept,
        )
    return done
