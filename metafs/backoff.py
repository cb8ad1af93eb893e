"""Waiting between tries of something that failed: a delay that doubles from the least to
the most, and goes back to the least once a try works (the mount's watcher and first
fetches, the etcd store's calls and watch)."""

from __future__ import annotations

import anyio


class Backoff:
    """The delay before the next try; :meth:`wait` sleeps it and doubles it."""

    __slots__ = ("delay", "least", "most")

    def __init__(self, least: float, most: float) -> None:
        self.least, self.most = least, most
        self.delay = least

    async def wait(self) -> None:
        await anyio.sleep(self.delay)
        self.delay = min(self.delay * 2, self.most)

    def reset(self) -> None:
        """A try worked: the next failure waits the least again."""
        self.delay = self.least
