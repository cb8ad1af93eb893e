"""The embedded store: one SQLite file in WAL mode, ``synchronous=FULL``.

A commit returns only after SQLite has made it durable, so a write the server
acknowledged survives SIGKILL (and power loss). Reads run on the event loop's thread on
pooled reader connections (a point or prefix read costs tens of microseconds, less than a
thread hop; a prefix of thousands of keys is fetched in batches with the loop running in
between); commits run on one writer connection in a worker thread, so an fsync never
stalls the loop. Waiters are woken in-process after each commit: one server process owns
a SQLite file (use the etcd backend to run several servers).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio

from .base import (
    STORE_FORMAT,
    Compaction,
    Conflict,
    Guard,
    Item,
    Op,
    Put,
    Range,
    Snapshot,
    Stamps,
    Store,
    StoreError,
    Waiters,
    check_format,
    new_identity,
    prefix_end,
    yielding,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key        TEXT PRIMARY KEY,
    value      TEXT,              -- NULL: a tombstone (deleted at mod_rev)
    create_rev INTEGER NOT NULL,
    mod_rev    INTEGER NOT NULL,
    mod_time   REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('revision', 0);
INSERT OR IGNORE INTO meta VALUES ('compacted', 0);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tombstones ON kv(mod_time) WHERE value IS NULL;
"""
log = logging.getLogger("metafs.store.sqlite")
_REVISION = "SELECT value FROM meta WHERE name='revision'"
#: a snapshot's revision and compacted revision, read in its transaction
_REVISIONS = "SELECT name, value FROM meta WHERE name IN ('revision', 'compacted')"
#: tombstones removed in one transaction of a compaction (~2-5 ms of the writer each:
#: commits wait at most that long for it, and readers not at all, WAL)
COMPACT_BATCH = 1000
#: rows of a prefix read fetched between two turns of the event loop
RANGE_BATCH = 1024
#: snapshots open at once, each on its own pooled reader connection (two fds: the file
#: and its WAL). Pooled, not closed: SQLite cannot close a file while another
#: connection of the process holds a lock on it, and parks the fd until none does, so
#: closing readers under load leaked fds (16 -> 29 in the churn test). One more waits.
MAX_READERS = 8
#: seconds a snapshot waits for a reader connection before the read fails
READER_WAIT = 10.0
T = TypeVar("T")


async def _each(prefixes: Sequence[str], read: Callable[[str], Awaitable[T]]) -> list[T]:
    """``read`` of each prefix, yielding to the event loop as it goes."""
    return [await read(p) async for p in yielding(prefixes)]


class _SqliteSnapshot(Snapshot):
    def __init__(self, conn: sqlite3.Connection, revision: int, stamps: Stamps) -> None:
        super().__init__(revision, stamps=stamps)
        self._conn = conn

    async def _under(self, sql: str, prefix: str) -> AsyncIterator[list[Any]]:
        """The rows of ``sql``, a query over ``key >= ? AND key < ?``, for ``prefix``, in
        batches of :data:`RANGE_BATCH` with the loop's turn in between: a 66,000-unit
        service's records in one ``fetchall`` held every request ~0.3 s. The snapshot's
        transaction keeps them one revision."""
        try:
            cur = self._conn.execute(sql, (prefix, prefix_end(prefix)))
            try:
                while batch := cur.fetchmany(RANGE_BATCH):
                    yield batch
                    if len(batch) < RANGE_BATCH:
                        break
                    await anyio.sleep(0)
            finally:
                cur.close()  # a read cancelled between batches ends its statement
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite read failed: {exc}") from exc

    async def _range(self, prefix: str) -> Range:
        items: list[Item] = []
        changed, changed_time = 0, 0.0
        sql = (
            "SELECT key, value, create_rev, mod_rev, mod_time FROM kv WHERE key >= ? AND key < ? ORDER BY key"
        )
        async for batch in self._under(sql, prefix):
            for k, v, c, m, t in batch:
                if v is not None:
                    items.append(Item(k, v, c, m, t))
                if m > changed:
                    changed, changed_time = m, t
        return Range(items, changed, changed_time)

    async def _one(self, sql: str, prefix: str) -> Any:
        """The first row of a query over ``prefix`` that has at most a few (see
        :meth:`_under`, read to its end so that its statement ends), or None."""
        rows = [row async for batch in self._under(sql, prefix) for row in batch]
        return rows[0] if rows else None

    async def size_under(self, prefix: str) -> int:
        (n,) = await self._one(
            "SELECT COALESCE(SUM(LENGTH(value)), 0) FROM kv WHERE key >= ? AND key < ? AND value IS NOT NULL",
            prefix,
        )
        return int(n)

    async def scan(self) -> AsyncGenerator[list[Item], None]:
        try:
            cur = self._conn.execute(
                "SELECT key, value, create_rev, mod_rev, mod_time FROM kv"
                " WHERE value IS NOT NULL ORDER BY key"
            )
            try:
                while batch := cur.fetchmany(RANGE_BATCH):
                    yield [Item(*row) for row in batch]
                    await anyio.sleep(0)
            finally:
                cur.close()
        except sqlite3.Error as exc:
            raise StoreError(f"sqlite read failed: {exc}") from exc

    async def _ranges(self, prefixes: Sequence[str]) -> list[Range]:
        return await _each(prefixes, self._range)

    async def _deleted_since(self, prefix: str, after: int) -> list[str]:
        sql = (
            "SELECT key FROM kv WHERE key >= ? AND key < ? AND value IS NULL"
            f" AND mod_rev > {int(after)} ORDER BY key"
        )
        return [k async for batch in self._under(sql, prefix) for (k,) in batch]

    async def _last_changes(self, prefixes: Sequence[str]) -> list[tuple[int, float]]:
        return await _each(prefixes, self._last_change)

    async def _last_change(self, prefix: str) -> tuple[int, float]:
        row = await self._one(
            "SELECT mod_rev, mod_time FROM kv WHERE key >= ? AND key < ? ORDER BY mod_rev DESC LIMIT 1",
            prefix,
        )
        return (int(row[0]), float(row[1])) if row else (0, 0.0)


class SqliteStore(Store):
    """A :class:`Store` in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self._connect(check_same_thread=False)
            self._open_format(self._writer)
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open sqlite store {self.path}: {exc}") from exc
        self._write_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []
        self._reading = anyio.Semaphore(MAX_READERS)
        self._head_conn: sqlite3.Connection | None = None
        self._stamps = Stamps()
        self._waiters = Waiters()
        self._closed = False

    def _open_format(self, db: sqlite3.Connection) -> None:
        """Check the store's format before anything is written: a newer one is refused; one
        written before formats were recorded (format 0: no ``info`` table) is upgraded in
        place (the tables, index and rows it lacks are added); a new file gets format
        :data:`STORE_FORMAT` and an identity."""
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        found = None
        if "info" in tables:
            row = db.execute("SELECT value FROM info WHERE name='format'").fetchone()
            found = int(row[0]) if row else None
        if found is not None:
            check_format(found, f"store {self.path}")
        db.executescript(_SCHEMA)
        db.execute("INSERT OR IGNORE INTO info VALUES ('identity', ?)", (new_identity(),))
        if found != STORE_FORMAT:
            if "kv" in tables:
                log.warning(
                    "store %s: upgraded in place from format %d to %d", self.path, found or 0, STORE_FORMAT
                )
            db.execute("INSERT OR REPLACE INTO info VALUES ('format', ?)", (str(STORE_FORMAT),))
        (self.identity,) = db.execute("SELECT value FROM info WHERE name='identity'").fetchone()

    def _connect(self, check_same_thread: bool = True) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, check_same_thread=check_same_thread, timeout=10
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    @contextlib.asynccontextmanager
    async def snapshot(self, seen: int = 0) -> AsyncIterator[Snapshot]:
        if self._closed:
            raise StoreError("store is closed")
        with anyio.move_on_after(READER_WAIT) as waited:
            await self._reading.acquire()
        if waited.cancelled_caught:
            raise StoreError(f"sqlite read failed: no reader connection free within {READER_WAIT:.0f} s")
        try:
            try:
                conn = self._readers.pop() if self._readers else self._connect()
                conn.execute("BEGIN")
                revs = dict(conn.execute(_REVISIONS).fetchall())
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite read failed: {exc}") from exc
            try:
                snap = _SqliteSnapshot(conn, revs["revision"], self._stamps)
                snap.compacted = revs["compacted"]
                yield snap
            finally:
                try:
                    conn.execute("COMMIT")
                    self._readers.append(conn)
                except sqlite3.Error:
                    conn.close()
        finally:
            self._reading.release()

    async def revision(self) -> int:
        async with self.snapshot() as snap:
            return snap.revision

    def head(self) -> int | None:
        """One indexed read outside any transaction: it sees every commit, this process's
        or another's, that is durable. ~15 µs in a server under wrk (two ``fcntl`` locks
        and the query: 14-17% of a kept-alive GET's samples), the most of any one step."""
        if self._closed:
            return None
        try:
            if self._head_conn is None:
                self._head_conn = self._connect()
            row = self._head_conn.execute(_REVISION).fetchone()
        except sqlite3.Error:
            return None  # the next read reports the error; nothing is reused meanwhile
        return int(row[0])

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> int:
        if self._closed:
            raise StoreError("store is closed")
        rev, changed = await anyio.to_thread.run_sync(self._commit_sync, ops, guards)
        if changed:
            self._waiters.notify(rev, changed)
        return rev

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """The writer in one IMMEDIATE transaction under the write lock, committed at the
        end unless the body ended it, rolled back on any error; SQLite's errors become
        :class:`StoreError` naming ``what``."""
        with self._write_lock:
            db = self._writer
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield db
                    if db.in_transaction:
                        db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite {what} failed: {exc}") from exc

    def _commit_sync(self, ops: Sequence[Op], guards: Sequence[Guard]) -> tuple[int, list[str]]:
        with self._transaction("write") as db:
            for g in guards:
                row = db.execute(
                    "SELECT mod_rev FROM kv WHERE key = ? AND value IS NOT NULL", (g.key,)
                ).fetchone()
                if (row[0] if row else 0) != g.mod_rev:
                    raise Conflict(g.key)
            (rev,) = db.execute(_REVISION).fetchone()
            if not ops:
                db.execute("ROLLBACK")
                return rev, []
            rev += 1
            now = time.time()
            changed: list[str] = []
            for op in ops:
                if isinstance(op, Put):
                    db.execute(
                        "INSERT INTO kv VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                        " value = excluded.value, mod_rev = excluded.mod_rev,"
                        " mod_time = excluded.mod_time, create_rev = CASE WHEN"
                        " kv.value IS NULL THEN excluded.create_rev ELSE kv.create_rev END",
                        (op.key, op.value, rev, rev, op.at or now),
                    )
                    changed.append(op.key)
                else:
                    end = prefix_end(op.key) if op.prefix else op.key + "\x00"
                    changed.extend(
                        k
                        for (k,) in db.execute(
                            "UPDATE kv SET value = NULL, mod_rev = ?, mod_time = ?"
                            " WHERE key >= ? AND key < ? AND value IS NOT NULL RETURNING key",
                            (rev, now, op.key, end),
                        ).fetchall()
                    )
            db.execute("UPDATE meta SET value = ? WHERE name='revision'", (rev,))
        changed.sort()  # here, not on the event loop (200,000 keys: ~0.1 s)
        return rev, changed

    async def renew_identity(self) -> str:
        self.identity = new_identity()
        await anyio.to_thread.run_sync(self._set_identity)
        return self.identity

    def _set_identity(self) -> None:
        with self._write_lock:
            self._writer.execute("UPDATE info SET value = ? WHERE name='identity'", (self.identity,))

    async def compact(self, before: float) -> Compaction:
        """Tombstones of deletes before ``before``, oldest first, :data:`COMPACT_BATCH` per
        transaction on the writer's thread (the index ``tombstones`` finds them without a
        scan); the compacted revision rises to the newest removed, in the same
        transaction as its removal."""
        removed = 0
        while True:
            n, compacted = await anyio.to_thread.run_sync(self._compact_batch, before)
            removed += n
            if n < COMPACT_BATCH:
                break
        kept = await anyio.to_thread.run_sync(self._count_tombstones)
        return Compaction(removed, compacted, kept)

    def _compact_batch(self, before: float) -> tuple[int, int]:
        with self._transaction("compaction") as db:
            rows = db.execute(
                "SELECT key, mod_rev FROM kv WHERE value IS NULL AND mod_time < ? ORDER BY mod_time LIMIT ?",
                (before, COMPACT_BATCH),
            ).fetchall()
            if rows:
                db.executemany("DELETE FROM kv WHERE key = ? AND value IS NULL", [(k,) for k, _ in rows])
                top = max(rev for _, rev in rows)
                db.execute("UPDATE meta SET value = MAX(value, ?) WHERE name='compacted'", (top,))
            (compacted,) = db.execute("SELECT value FROM meta WHERE name='compacted'").fetchone()
        return len(rows), int(compacted)

    def _count_tombstones(self) -> int:
        with self._write_lock:
            try:
                (n,) = self._writer.execute("SELECT COUNT(*) FROM kv WHERE value IS NULL").fetchone()
            except sqlite3.Error as exc:
                raise StoreError(f"sqlite read failed: {exc}") from exc
        return int(n)

    async def wait(self, prefixes: Sequence[str], after: int, timeout: float) -> int | None:
        async with self.snapshot() as snap:
            for p in prefixes:
                await snap.last_change(p)
            if snap.changed > after:
                return snap.changed
        # No await between the check above and registering: a commit's notification runs
        # on this same event loop, so none can slip in between.
        with self._waiters.register(prefixes, after) as waiter:
            await waiter.wait(timeout)
        return waiter.revision

    def release_waiters(self) -> None:
        self._waiters.wake_all()

    async def close(self) -> None:
        self._closed = True
        self.release_waiters()
        with self._write_lock:
            self._writer.close()
        for conn in self._readers:
            conn.close()
        self._readers.clear()
        if self._head_conn is not None:
            self._head_conn.close()
            self._head_conn = None
