"""The store interface: a revisioned key/value space with transactions and prefix waits.

It is deliberately the shape of etcd v3 so that an etcd backend can map it one to one:

- one global revision that grows with every committed transaction (by exactly one when
  nothing else writes to the same etcd cluster); every key carries
  the revision it was created and last modified at (etcd's ``create_revision`` and
  ``mod_revision``);
- :meth:`Store.commit` applies puts and deletes atomically, under guards on the
  ``mod_revision`` of keys read before (etcd's ``Txn`` with ``Compare``);
- :meth:`Store.snapshot` reads several prefixes at one revision (etcd's ``Range`` with
  ``revision=``);
- :meth:`Store.wait` returns as soon as anything under some prefixes changes after a
  revision (etcd's ``Watch`` with ``start_revision``), without polling.

A delete leaves a *tombstone*: the key disappears from reads, but the prefix it was under
still reports that it changed at the deleting revision, so that "did this subtree change
after R" and the ETag of a listing stay exact when a child is removed.

Keys are text; by convention every key ends with ``/`` so that a key is also the prefix
that selects exactly it.
"""

from __future__ import annotations

import abc
import asyncio
import bisect
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio


class StoreError(Exception):
    """The store could not be reached or failed; the server answers 503."""


class TooLarge(StoreError):
    """The store refused a transaction for its size; the server answers 413."""


class FormatError(StoreError):
    """The store was written in a format this metafs does not read (a newer one)."""


#: the store's format, recorded in it: 1 is the layout of metafs 0.1 (live keys, their
#: tombstones, the revision, the compacted revision, the identity). A store of format 0
#: (written before formats were recorded) is upgraded in place when opened; a newer one
#: is refused, naming both.
STORE_FORMAT = 1


def check_format(found: int, where: str) -> None:
    """Refuse a store written in a newer format than this metafs reads."""
    if found > STORE_FORMAT:
        raise FormatError(
            f"{where} is in store format {found}, written by a newer metafs; this metafs reads"
            f" format {STORE_FORMAT} at most: run the newer metafs, or restore a backup taken"
            " before the upgrade (metafs restore)"
        )


@dataclass(frozen=True, slots=True)
class Compaction:
    """What one compaction run removed: tombstones older than the retention."""

    removed: int
    #: the store's compacted revision after the run: deltas from below it are refused
    compacted: int
    #: tombstones kept (younger than the retention)
    kept: int


class Conflict(Exception):
    """A guard of :meth:`Store.commit` did not hold; nothing was written."""


@dataclass(frozen=True, slots=True)
class Item:
    key: str
    value: str
    create_rev: int
    mod_rev: int
    mod_time: float


@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: str
    #: the time of the change (default: the commit's); a restore keeps each key's own
    at: float | None = None


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete one key (``prefix=False``) or every key under a prefix."""

    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Guard:
    """Commit only if ``key`` is at ``mod_rev`` now (0: it must not exist)."""

    key: str
    mod_rev: int


Op = Put | Delete


@dataclass(slots=True)
class Range:
    """What one prefix held at the snapshot's revision."""

    items: list[Item]
    #: the last revision at which anything under the prefix changed (deletions included)
    changed: int
    changed_time: float


class Stamps:
    """When prefixes last changed, as read at one revision, shared by the snapshots a
    store hands out: at a given revision that never changes, so each prefix is read once
    per revision (a service's view asks for four on every request; each is a scan of the
    prefix in SQLite)."""

    def __init__(self, limit: int = 65536) -> None:
        self.limit = limit
        self.revision = -1
        self._at: dict[str, tuple[int, float]] = {}

    def get(self, revision: int, prefix: str) -> tuple[int, float] | None:
        return self._at.get(prefix) if revision == self.revision else None

    def put(self, revision: int, prefix: str, stamp: tuple[int, float]) -> None:
        if revision != self.revision or len(self._at) >= self.limit:
            if revision < self.revision:
                return  # an older snapshot's read: keep the newer revision's
            self.revision, self._at = revision, {}
        self._at[prefix] = stamp


T = TypeVar("T")
#: work on many keys at once yields to the event loop after this many of them
YIELD_EVERY = 256


async def yielding(items: Iterable[T], at_least: int = 0) -> AsyncIterator[T]:
    """``items``, pausing for the event loop every :data:`YIELD_EVERY`: each step is quick
    (it never suspends), 100,000 of them are not (a big load's plan and reads). Fewer
    than ``at_least`` items (a sequence): no pause at all."""
    pause = not isinstance(items, Sequence) or len(items) >= at_least
    for i, item in enumerate(items):
        if pause and i % YIELD_EVERY == YIELD_EVERY - 1:
            await anyio.sleep(0)
        yield item


@dataclass(slots=True)
class Snapshot(abc.ABC):
    """Reads at one revision; remembers every prefix it read and when each last changed."""

    #: the revision read at (the etcd backend fixes it at the first read: use it after reading)
    revision: int
    prefixes: list[str] = field(default_factory=list)
    changed: int = 0
    changed_time: float = 0.0
    #: the store's shared :class:`Stamps`, when ``revision`` is known before any read
    stamps: Stamps | None = None
    #: the store's compacted revision as of this snapshot: tombstones of deletes at or
    #: below it may be gone, so "what changed after R" is only known for R >= it
    compacted: int = 0

    def _saw(self, prefix: str, changed: int, when: float) -> None:
        """Remember that ``prefix`` was read and last changed at ``changed``."""
        self.prefixes.append(prefix)
        if changed > self.changed:
            self.changed, self.changed_time = changed, when

    async def range(self, prefix: str) -> list[Item]:
        """Every live key under ``prefix``, sorted by key."""
        r = await self._range(prefix)
        self._saw(prefix, r.changed, r.changed_time)
        return r.items

    async def get(self, key: str) -> Item | None:
        """The item at exactly ``key``, or None."""
        return (await self.get_many([key]))[key]

    async def get_many(self, keys: Sequence[str]) -> dict[str, Item | None]:
        """The item at each of ``keys`` (a backend may read them all in one round trip)."""
        found: dict[str, Item | None] = {}
        async for key, r in yielding(zip(keys, await self._ranges(keys), strict=True)):
            self._saw(key, r.changed, r.changed_time)
            found[key] = next((i for i in r.items if i.key == key), None)
        return found

    async def _ranges(self, prefixes: Sequence[str]) -> list[Range]:
        return [await self._range(p) for p in prefixes]

    async def size_under(self, prefix: str) -> int:
        """The length of every live value under ``prefix`` together (a backend may count
        it without sending the values)."""
        return sum(len(i.value) for i in await self.range(prefix))

    async def last_change(self, prefix: str) -> int:
        """The last revision at which anything under ``prefix`` changed (0: never)."""
        return (await self.last_changes_at([prefix]))[0][0]

    async def last_changes_at(self, prefixes: Sequence[str]) -> list[tuple[int, float]]:
        """For each prefix, the last revision at which anything under it changed and the
        time of that change (a backend may ask for all at once)."""
        memo = self.stamps
        if memo is None:
            stamps = await self._last_changes(prefixes)
        else:
            known = [memo.get(self.revision, p) for p in prefixes]
            missing = [p for p, k in zip(prefixes, known, strict=True) if k is None]
            read = dict(zip(missing, await self._last_changes(missing), strict=True)) if missing else {}
            for p, stamp in read.items():
                memo.put(self.revision, p, stamp)
            stamps = [k if k is not None else read[p] for p, k in zip(prefixes, known, strict=True)]
        for prefix, (changed, when) in zip(prefixes, stamps, strict=True):
            self._saw(prefix, changed, when)
        return stamps

    async def version_of(self, prefixes: Sequence[str]) -> tuple[object, ...]:
        """What is under ``prefixes`` as of this snapshot, for keeping what was made of it:
        equal only if nothing there changed. The change stamps carry their time (a store
        put back at an older revision does not match) and the compacted revision is in
        it (a deletion whose tombstone was compacted away no longer moves the stamps)."""
        return (*await self.last_changes_at(prefixes), self.compacted)

    async def deleted_since(self, prefix: str, after: int) -> list[str]:
        """The keys under ``prefix`` deleted after revision ``after`` (their tombstones),
        sorted; a key put again since may be among them. What a delta of changes only
        needs to say what went away (a deletion leaves nothing in a range)."""
        return await self._deleted_since(prefix, after)

    @abc.abstractmethod
    async def _deleted_since(self, prefix: str, after: int) -> list[str]: ...

    @abc.abstractmethod
    def scan(self) -> AsyncGenerator[list[Item], None]:
        """Every live key of the store at this revision, in key order, a batch at a time
        (a backup: the loop runs between batches)."""

    async def _last_change(self, prefix: str) -> tuple[int, float]:
        """Backends may answer this without reading the values."""
        r = await self._range(prefix)
        return r.changed, r.changed_time

    async def _last_changes(self, prefixes: Sequence[str]) -> list[tuple[int, float]]:
        return [await self._last_change(p) for p in prefixes]

    @abc.abstractmethod
    async def _range(self, prefix: str) -> Range: ...


def prefix_end(prefix: str) -> str:
    """The smallest key greater than every key that starts with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


@dataclass(eq=False, slots=True)
class _Waiter:
    prefixes: Sequence[str]
    after: int
    #: a bare asyncio future, not an anyio Event and cancel scope: the server parks one
    #: per long poll, and at 10,000 polls each byte counts (the server runs on asyncio)
    done: asyncio.Future[None]
    revision: int | None = None

    def wake(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until woken, or ``timeout`` seconds."""
        timer = asyncio.get_running_loop().call_later(timeout, self.wake)
        try:
            await self.done
        finally:
            timer.cancel()


class Waiters:
    """The open :meth:`Store.wait` calls of one process, woken by the keys a revision
    changed (a backend calls :meth:`notify` after its own commits or its watch)."""

    def __init__(self) -> None:
        self._waiters: set[_Waiter] = set()

    @contextlib.contextmanager
    def register(self, prefixes: Sequence[str], after: int) -> Iterator[_Waiter]:
        """A waiter for changes under ``prefixes`` at revisions after ``after``."""
        waiter = _Waiter(prefixes, after, asyncio.get_running_loop().create_future())
        self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            self._waiters.discard(waiter)

    def notify(self, rev: int, keys: list[str]) -> None:
        """Wake every waiter with a prefix that one of ``keys`` (sorted) falls under."""
        for w in list(self._waiters):
            if rev <= w.after:  # a watch replaying what the waiter's own read already saw
                continue
            for p in w.prefixes:
                i = bisect.bisect_left(keys, p)
                if i < len(keys) and keys[i].startswith(p):
                    w.revision = rev
                    w.wake()
                    break

    def wake_all(self, rev: int | None = None) -> None:
        """Wake every waiter (with ``rev``: as if everything changed at it)."""
        for w in list(self._waiters):
            if rev is not None:
                w.revision = rev
            w.wake()


def new_identity() -> str:
    """A store identity (see :attr:`Store.identity`): random, never reused."""
    return uuid.uuid4().hex


class Store(abc.ABC):
    """One interface, several backends (SQLite embedded; etcd v3 for a cluster)."""

    #: who this store is: made when it is created (a new file, an empty etcd namespace) and
    #: kept in it, so that every server over it says the same; "" until known (etcd not
    #: reached yet). Clients that see it change refetch what they hold (protocol.STORE_HEADER)
    identity: str = ""
    #: called when the store is found to have gone back in time under a running server
    #: (an etcd cluster wiped or restored behind the same URL): caches keyed by revision
    #: must be dropped, revisions may be reused with other contents
    on_replaced: Callable[[], None] | None = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the backend's background work (the etcd watch) for as long as this is open."""
        yield

    @abc.abstractmethod
    def snapshot(self, seen: int = 0) -> contextlib.AbstractAsyncContextManager[Snapshot]:
        """A consistent read view at the current revision. ``seen``: a revision the reader
        has already seen (a long poll's index, a delta's since); a backend may then read
        at any revision not below it instead of the head (etcd: where its watch is)."""

    @abc.abstractmethod
    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> int:
        """Apply ``ops`` atomically if every guard holds; return the new revision.

        Raises :class:`Conflict` when a guard fails. An empty ``ops`` changes nothing and
        returns the current revision.
        """

    @abc.abstractmethod
    async def wait(self, prefixes: Sequence[str], after: int, timeout: float) -> int | None:
        """Wait until a key under one of ``prefixes`` changes at a revision > ``after``.

        Returns that revision, or None when ``timeout`` seconds pass first.
        """

    def caches(self) -> dict[str, Any]:
        """What the backend keeps in memory, by name (each with ``size`` and ``len``), for
        the server's ``metafs_cache_*`` metrics: none here."""
        return {}

    @abc.abstractmethod
    async def renew_identity(self) -> str:
        """Give the store a new identity (a restore: to every client, a new store)."""

    @abc.abstractmethod
    async def compact(self, before: float) -> Compaction:
        """Remove the tombstones of deletes made before ``before`` (a time), in batches that
        never hold a reader up, and raise the compacted revision to the newest removed."""

    @abc.abstractmethod
    def release_waiters(self) -> None:
        """Make every open :meth:`wait` return None now (the server is shutting down)."""

    @abc.abstractmethod
    async def revision(self) -> int:
        """The current global revision."""

    def head(self) -> int | None:
        """The latest committed revision, read at once on this thread (no await, no round
        trip), or None when the backend cannot tell it that cheaply (etcd: another server
        may have committed a moment ago). The server reuses answers only while this holds
        still (see :mod:`metafs.answers`)."""
        return None

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and wake every waiter."""
