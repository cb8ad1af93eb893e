"""One at a time per key: the first caller does the work; those who ask for the same key
meanwhile wait (bounded), then look for what it left. After one change to a big service
every client asks the server for the same things within milliseconds: a service view's
build, its deletions since a revision, the stamps of its prefixes over etcd."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Hashable
from typing import Generic, TypeVar

import anyio

K = TypeVar("K", bound=Hashable)


class Flights(Generic[K]):
    """The work in flight, by key: one event each, gone when the work is done."""

    def __init__(self) -> None:
        self._events: dict[K, anyio.Event] = {}

    def __len__(self) -> int:
        return len(self._events)

    @contextlib.asynccontextmanager
    async def first(self, key: K, wait: float) -> AsyncIterator[bool]:
        """Whether the caller is the first for ``key``; a later one is let in once the
        first is done (or after ``wait`` seconds), to find what it left or do the work
        itself. The first's end (done, failed or cancelled) lets the others in."""
        event = self._events.get(key)
        if event is not None:
            with anyio.move_on_after(wait):
                await event.wait()
            yield False
            return
        event = self._events[key] = anyio.Event()
        try:
            yield True
        finally:
            del self._events[key]
            event.set()
