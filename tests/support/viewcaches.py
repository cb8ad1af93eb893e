"""The mount's view cache running without its kernel side, for the tests and the bench
that drive it directly (tests/bench/fleet.py runs 1,000 of them)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from metafs.client import AsyncMetadataClient
from metafs.mount.viewcache import ViewCache
from metafs.tree import Dir
from tests.support.servers import OPERATOR_TOKEN


class Told:
    """A :class:`~metafs.mount.viewcache.ViewListener` with no kernel to tell: each
    changed view is handed to ``changed`` (where the kernel would be told)."""

    def __init__(self, changed: Callable[[str], None]) -> None:
        self.changed = changed

    def views_swapped(self, unit_ids: list[str]) -> None:
        pass

    def view_changed(self, unit_id: str, old: Dir | None, new: Dir | None) -> None:
        self.changed(unit_id)

    def list_changed(self, old: Dir, new: Dir) -> None:
        pass

    def keeps(self, unit_id: str) -> bool:
        return True


@asynccontextmanager
async def running_cache(url: str, timeout: float = 120) -> AsyncIterator[ViewCache]:
    """A unit-mode view cache of ``url`` with the operator token, running until the block ends."""
    client = AsyncMetadataClient(url, OPERATOR_TOKEN, timeout=timeout)
    cache = ViewCache(
        client,
        Told(lambda _: None),
        host_mode=False,
        fetch_timeout=timeout,
        poll_wait=300,
        view_ttl=600,
        max_bytes=256 << 20,
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run)
            yield cache
            nursery.cancel_scope.cancel()
    finally:
        await client.aclose()
