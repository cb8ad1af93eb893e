"""Long polls: reads that wait for their subtree to change (``?index=&wait=``).

A poll parks on the store's waiters until a commit touches what it read, then reads
again. Polls woken by one revision that ask the same thing share that reread, and the
very response object (10,000 polls of one key wake together). Clients that went away
are found by one sweep every few seconds, not by a task per poll.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from contextlib import AbstractContextManager

import anyio
from starlette.requests import Request
from starlette.responses import Response

from ..store import Snapshot, Store
from ..tree import Node

Read = tuple[Node | None, Snapshot]


class ClientGone(Exception):
    """The client of a parked poll went away (answered 499, to nobody)."""


class LongPolls:
    """The polls parked now, the sweep that ends those nobody waits for, and the answers
    woken polls share."""

    def __init__(self, store: Store, in_progress: Callable[[], AbstractContextManager[object]]) -> None:
        self.store = store
        #: ``in_progress()`` counts the polls parked while they are (a gauge's track_inprogress)
        self.in_progress = in_progress
        self.closing = False
        self._parked: dict[asyncio.Task[object], Request] = {}  # long polls waiting, by task
        self._reaped: set[asyncio.Task[object]] = set()  # ... and those cancelled: client gone
        self._woke = 0  # the revision the shared rereads and responses below are for
        self._rereads: dict[Hashable, asyncio.Future[Read]] = {}
        self._responses: dict[Hashable, Response] = {}

    async def wait(
        self,
        request: Request,
        key: Hashable,
        index: int,
        wait: float,
        first: Read,
        read: Callable[[int], Awaitable[Read]],
    ) -> tuple[Read, bool]:
        """Park until what ``first`` read changes after ``index``, ``wait`` seconds pass or
        the server stops; the latest read, and whether it changed (then it may be shared
        with the polls woken with it). ``key`` names what is asked, by whom: polls with
        equal keys share rereads. Raises :class:`ClientGone` when the client went away."""
        node, snap = first
        deadline = time.monotonic() + wait
        task = asyncio.current_task()
        assert task is not None
        with self.in_progress():
            self._parked[task] = request
            try:
                while not self.closing and (left := deadline - time.monotonic()) > 0:
                    woke = await self.store.wait(snap.prefixes, index, left)
                    if woke is None:
                        break
                    node, snap = await self._reread(woke, key, read)
                    if snap.changed > index:
                        return (node, snap), True
            except asyncio.CancelledError:
                if task not in self._reaped:
                    raise
                task.uncancel()
                raise ClientGone from None
            finally:
                del self._parked[task]
                self._reaped.discard(task)
        return (node, snap), False

    def has_shared(self, key: Hashable) -> bool:
        return key in self._responses

    def shared(self, key: Hashable, make: Callable[[], Response]) -> Response:
        """The one response for every poll woken with ``key`` (Starlette's Response holds
        only its status, headers and body: sending it twice is safe)."""
        answer = self._responses.get(key)
        if answer is None:
            answer = self._responses[key] = make()
        return answer

    async def _reread(self, woke: int, key: Hashable, read: Callable[[int], Awaitable[Read]]) -> Read:
        """A woken long poll's new answer, computed once for every poll woken by the same
        revision that asks the same thing as the same principal. A later revision's
        answer is as good: the client polls again from the index it gets."""
        if woke > self._woke:
            self._woke, self._rereads, self._responses = woke, {}, {}
        pending = self._rereads.get(key)
        if pending is None:
            pending = self._rereads[key] = asyncio.get_running_loop().create_future()
            try:
                pending.set_result(await read(woke))
            except BaseException as exc:
                self._rereads.pop(key, None)
                pending.cancel()
                raise exc from None
            return pending.result()
        if pending.done() and not pending.cancelled():
            return pending.result()  # the usual case: no shield (a future and callbacks each)
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            if pending.cancelled():  # the computing request went away: compute our own
                return await read(woke)
            raise

    async def reap_disconnected(self, interval: float = 2.0) -> None:
        """End the long polls whose clients went away (Starlette does not notice; a mount
        abandons a poll each time a view joins). One sweep for all parked polls every
        ``interval`` seconds cancels the task of each that lost its client: a watcher task
        per poll cost 3.5 KB and ~1 s of cancellations per 10,000 polls, a cancel scope
        per poll ~0.5 KB (measured with ``make bench``)."""
        while True:
            await anyio.sleep(interval)
            for i, (task, request) in enumerate(list(self._parked.items())):
                if task not in self._reaped and await gone(request):
                    self._reaped.add(task)
                    task.cancel()
                if i % 500 == 499:
                    await anyio.sleep(0)  # let requests run during a long sweep


async def gone(request: Request) -> bool:
    """Whether the client of a parked request went away. uvicorn marks the request's
    cycle ``disconnected`` when the connection is lost: reading that flag costs ~0.2 µs,
    where Starlette's ``is_disconnected()`` (a cancelled receive) cost ~50 µs, a quarter
    of a core for 10,000 parked polls swept every 2 s, competing with their wake-up."""
    cycle = getattr(request.receive, "__self__", None)
    flag = getattr(cycle, "disconnected", None)
    if isinstance(flag, bool):
        return flag
    return await request.is_disconnected()  # another ASGI server: ask it
