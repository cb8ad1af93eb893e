"""The cluster store: etcd v3 through its JSON gateway (``/v3/...``; the calls, their
failover and what etcd's answers mean are in etcd_gateway.py).

How the interface maps onto etcd (everything under one namespace, ``metafs/`` unless the
URL names another):

- ``<ns>k/<key>``: a live key. Its value is ``<mod_time>\\n<value>``: etcd keeps no time.
- ``<ns>d/<key>``: a tombstone, written in the same transaction that deletes a key, so
  that "the last change under a prefix" still sees the delete.
- The metafs revision *is* etcd's revision; a snapshot reads at one revision; a commit is
  one etcd transaction whose compares are the guards (and, for deletes, that nothing under
  the deleted range changed since the keys to tombstone were read).
- :meth:`EtcdStore.wait` is fed by one watch stream on the namespace (started by
  :meth:`EtcdStore.running`); a write through any metafs server wakes the waiters of all.
  A watch cut off by a dead member resumes on another from the last revision seen; a watch
  from a compacted revision wakes every waiter (they re-read) and starts again at the head.

- A reader that has seen a revision reads at the one the watch has delivered, what the
  watch keeps current (watched.py) without a round trip; other reads are at the head.

Why this module passes 400 lines: the snapshot's reads, the commit and the watch share
the namespace's prefixes and its encoding, and the watch's cache (watched.py) is fed and
read by all three; the calls themselves are etcd_gateway.py's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import httpx

from ..backoff import Backoff
from .base import (
    Compaction,
    Conflict,
    Delete,
    FormatError,
    Guard,
    Item,
    Op,
    Put,
    Range,
    Snapshot,
    Store,
    StoreError,
    Waiters,
    new_identity,
    prefix_end,
)
from .etcd_compaction import EtcdCompactor
from .etcd_gateway import Compacted, EtcdAccess, EtcdAuthError, Gateway, b64, decode, encode, parse_url, unb64
from .etcd_info import open_namespace
from .watched import READER_WAIT, Watched

log = logging.getLogger("metafs.store.etcd")
T = TypeVar("T")


def _put(key: str, encoded: str) -> dict[str, Any]:
    return {"request_put": {"key": b64(key), "value": encoded}}


def _item(kv: dict[str, Any], strip: int) -> Item:
    """A live key as etcd gives it, its namespace prefix (``strip`` characters) cut off."""
    mod_time, value = decode(kv.get("value"))
    key, created, modified = unb64(kv["key"])[strip:], int(kv["create_revision"]), int(kv["mod_revision"])
    return Item(key, value, created, modified, mod_time)


def _end(op: Delete) -> str:
    """The end (exclusive) of the keys ``op`` deletes."""
    return prefix_end(op.key) if op.prefix else op.key + "\0"


class _EtcdSnapshot(Snapshot):
    def __init__(self, store: EtcdStore, revision: int) -> None:
        super().__init__(revision)
        self._store = store
        self._from_watch = bool(revision)  # at the watch's revision, not etcd's head
        self._reads = 0
        # at the watch's revision, the compacted revision the watch delivered holds; every
        # read of etcd reads it again, in the same transaction (see etcd_compaction.py)
        self.compacted = store.compacted if revision else 0

    async def _read(self, reqs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Ranges at this snapshot's revision; the first read fixes it (at the head then):
        a snapshot costs no round trip of its own. A snapshot at the watch's revision
        that etcd has compacted meanwhile reads at the head instead, if nothing was read."""
        st = self._store
        try:
            revision, found, compacted = await st._read(reqs, self.revision)
        except Compacted:
            if not self._from_watch or self._reads:
                raise
            st.watched.compacted = True
            self.revision = 0
            for req in reqs:
                req.pop("revision", None)
            revision, found, compacted = await st._read(reqs, 0)
        self._reads += 1
        if not self.revision:
            self.revision = revision
        self.compacted = max(self.compacted, compacted)
        return found

    async def _range(self, prefix: str) -> Range:
        return (await self._ranges([prefix]))[0]

    async def scan(self) -> AsyncGenerator[list[Item], None]:
        """Pages of the live keys at this snapshot's revision (the first page fixes it)."""
        strip = len(self._store.live)
        async for revision, kvs in self._store.gateway.pages(self._store.live, self.revision):
            self.revision = self.revision or revision
            yield [_item(kv, strip) for kv in kvs]

    async def _ranges(self, prefixes: Sequence[str]) -> list[Range]:
        """Every prefix's live keys and latest tombstone, in one read-only transaction (the
        small ones the watch keeps current need none: see watched.py)."""
        return await self._through_watch(prefixes, self._store.watched.range, self._read_ranges)

    async def _read_ranges(self, missing: list[str]) -> dict[str, Range]:
        st = self._store
        reqs = []
        for p in missing:
            reqs.append(st._range_req(st.live + p, self.revision))
            reqs.append(st._range_req(st.tomb + p, self.revision, latest=True))
        found = await self._read(reqs)
        read = {p: self._decode(found[2 * i], found[2 * i + 1]) for i, p in enumerate(missing)}
        for p, r in read.items():
            st.watched.learn_range(self.revision, p, r)
        return read

    async def _through_watch(
        self,
        prefixes: Sequence[str],
        kept: Callable[[int, str], T | None],
        read: Callable[[list[str]], Awaitable[dict[str, T]]],
    ) -> list[T]:
        """For each prefix, what the watch keeps at this snapshot's revision (``kept``),
        else what ``read`` reads (in one round trip for all the missing, and once however
        many snapshots at this revision ask for the same at the same time: every woken
        poll of a service asks for its prefixes together)."""
        at = self.revision
        known = {p: x for p in prefixes if (x := kept(at, p)) is not None}
        missing = [p for p in dict.fromkeys(prefixes) if p not in known]
        if missing and at:
            flight = (read.__name__, at, tuple(missing))  # stamps and ranges apart
            async with self._store.watched.reading.first(flight, READER_WAIT) as first:
                if not first:  # another read them meanwhile: what it learned is kept
                    known.update((p, x) for p in missing if (x := kept(at, p)) is not None)
                    missing = [p for p in missing if p not in known]
                if missing:
                    known.update(await read(missing))
        elif missing:
            known.update(await read(missing))
        return [known[p] for p in prefixes]

    def _decode(self, live: list[dict[str, Any]], tomb: list[dict[str, Any]]) -> Range:
        items, changed, changed_time = [], 0, 0.0
        strip = len(self._store.live)
        for kv in live:
            item = _item(kv, strip)
            items.append(item)
            if item.mod_rev > changed:
                changed, changed_time = item.mod_rev, item.mod_time
        for kv in tomb:
            if int(kv["mod_revision"]) > changed:
                changed, changed_time = int(kv["mod_revision"]), decode(kv.get("value"))[0]
        return Range(items, changed, changed_time)

    async def _deleted_since(self, prefix: str, after: int) -> list[str]:
        """Tombstones written after ``after`` (etcd filters by ``min_mod_revision``); a key
        put again after its delete keeps its tombstone, and is filtered out by the caller."""
        st = self._store
        req = st._range_req(st.tomb + prefix, self.revision)
        req.update(keys_only=True, min_mod_revision=str(after + 1))
        (found,) = await self._read([req])
        strip = len(st.tomb)
        return sorted(unb64(kv["key"])[strip:] for kv in found)

    async def _last_change(self, prefix: str) -> tuple[int, float]:
        return (await self._last_changes([prefix]))[0]

    async def _last_changes(self, prefixes: Sequence[str]) -> list[tuple[int, float]]:
        """The latest live key and the latest tombstone under each prefix, in one round trip
        (none for those the watch keeps current)."""
        return await self._through_watch(prefixes, self._store.watched.stamp, self._read_stamps)

    async def _read_stamps(self, missing: list[str]) -> dict[str, tuple[int, float]]:
        st = self._store
        both = (st.live, st.tomb)
        found = await self._read(
            [st._range_req(ns + p, self.revision, latest=True) for p in missing for ns in both]
        )
        read = {}
        for i, p in enumerate(missing):
            best: tuple[int, float] = (0, 0.0)
            for kv in found[2 * i] + found[2 * i + 1]:
                best = max(best, (int(kv["mod_revision"]), decode(kv.get("value"))[0]))
            read[p] = best
            st.watched.learn_stamp(self.revision, p, best)
        return read


class EtcdStore(Store):
    """A :class:`Store` in an etcd v3 cluster, shared by any number of metafs servers."""

    def __init__(
        self, url: str, timeout: float = 10.0, compact_etcd: bool = True, access: EtcdAccess | None = None
    ) -> None:
        endpoints, self.namespace = parse_url(url)
        self.gateway = Gateway(endpoints, timeout, access)
        self.live = self.namespace + "k/"
        self.tomb = self.namespace + "d/"
        self.info = self.namespace + "info/"
        self.compactor = EtcdCompactor(self.gateway, self.namespace, history=compact_etcd)
        #: the compacted revision as the watch has delivered it (snapshots at its revision)
        self.compacted = 0
        self._waiters = Waiters()
        #: what the watch keeps current, so that a snapshot reads it without a round trip
        self.watched = Watched()
        #: set once the watch exists: a wait registered before could miss a change
        self._watching = anyio.Event()
        self._closed = False

    # -- calls -------------------------------------------------------------------------

    def _range_req(self, prefix: str, revision: int = 0, latest: bool = False) -> dict[str, Any]:
        """A range over every key under ``prefix`` (``latest``: only the last modified)."""
        req: dict[str, Any] = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}
        if revision:
            req["revision"] = str(revision)
        if latest:
            req.update(sort_order="DESCEND", sort_target="MOD", limit="1")
        return req

    async def _read(
        self, ranges: list[dict[str, Any]], revision: int
    ) -> tuple[int, list[list[dict[str, Any]]], int]:
        """Several ranges in one round trip (a read-only transaction at ``revision``, 0:
        the head): its revision, what each found, and the compacted revision then."""
        compacted = {"key": self.compactor.key, **({"revision": str(revision)} if revision else {})}
        reads = [{"request_range": r} for r in [*ranges, compacted]]
        data = await self.gateway.call("/v3/kv/txn", {"success": reads})
        found = [r["response_range"].get("kvs", []) for r in data.get("responses", [])]
        mark = found.pop()
        return int(data["header"]["revision"]), found, int(unb64(mark[0]["value"])) if mark else 0

    # -- the interface ------------------------------------------------------------------

    async def revision(self) -> int:
        data = await self.gateway.call("/v3/kv/range", {"key": b64(self.namespace), "count_only": True})
        return int(data["header"]["revision"])

    async def _read_identity(self) -> str:
        """The namespace's identity (its format checked first; see etcd_info.py), and the
        compacted revision as of now."""
        identity, compacted = await open_namespace(self.gateway, self.info)
        self.compacted = max(self.compacted, compacted)
        return identity

    async def renew_identity(self) -> str:
        self.identity = new_identity()
        put = {"key": b64(self.info + "identity"), "value": b64(self.identity)}
        await self.gateway.call("/v3/kv/put", put)
        return self.identity

    async def compact(self, before: float) -> Compaction:
        return await self.compactor.compact(before, await self.revision())

    @contextlib.asynccontextmanager
    async def snapshot(self, seen: int = 0) -> AsyncIterator[Snapshot]:
        """For a reader that has ``seen`` a revision, at the one the watch has delivered
        if not below it (see watched.py); else, and for every other read, at etcd's head
        (fixed by the first read): a write through another server is read at once."""
        at = self.watched.revision()
        yield _EtcdSnapshot(self, at if seen and at >= seen else 0)

    async def commit(self, ops: Sequence[Op], guards: Sequence[Guard] = ()) -> int:
        for _ in range(32):
            rev, deleted = await self._doomed(ops)
            compare = [self._compare(g.key, None, "EQUAL", g.mod_rev) for g in guards]
            # the keys to tombstone were read at ``rev``: commit only if that is still true
            compare += [
                self._compare(op.key, _end(op), "LESS", rev + 1) for op in ops if isinstance(op, Delete)
            ]
            now = time.time()
            final: dict[str, str | None] = {}
            times: dict[str, float] = {}
            for op in ops:
                if isinstance(op, Put):
                    final[op.key] = op.value
                    if op.at is not None:
                        times[op.key] = op.at
                else:
                    end = _end(op)
                    for key in [*deleted[op.key, op.prefix], *final]:
                        if op.key <= key < end:
                            final[key] = None
            success: list[dict[str, Any]] = []
            existing = {k for ks in deleted.values() for k in ks}
            for key, value in final.items():
                if value is not None:
                    success.append(_put(self.live + key, encode(value, times.get(key, now))))
                elif key in existing:
                    success.append({"request_delete_range": {"key": b64(self.live + key)}})
                    success.append(_put(self.tomb + key, encode(None, now)))
            failure = [{"request_range": {"key": b64(self.live + g.key)}} for g in guards]
            txn = {"compare": compare, "success": success, "failure": failure}
            data = await self.gateway.call("/v3/kv/txn", txn)
            if data.get("succeeded"):
                committed = int(data["header"]["revision"])
                self.watched.committed = max(self.watched.committed, committed)
                return committed
            for g, resp in zip(guards, data.get("responses", []), strict=False):
                kvs = resp["response_range"].get("kvs", [])
                if (int(kvs[0]["mod_revision"]) if kvs else 0) != g.mod_rev:
                    raise Conflict(g.key)
            # only the set of keys to delete moved under us: read it again
        raise StoreError("etcd commit kept conflicting with concurrent deletes; try again")

    def _compare(self, key: str, end: str | None, result: str, mod_rev: int) -> dict[str, Any]:
        """etcd compare: the live ``key`` (every key up to ``end``) has ``mod_rev`` (is below)."""
        cmp = {"key": b64(self.live + key), "target": "MOD", "result": result, "mod_revision": str(mod_rev)}
        if end is not None:
            cmp["range_end"] = b64(self.live + end)
        return cmp

    async def _doomed(self, ops: Sequence[Op]) -> tuple[int, dict[tuple[str, bool], list[str]]]:
        """The revision now and the live keys each delete in ``ops`` would remove."""
        deletes = [(op.key, op.prefix) for op in ops if isinstance(op, Delete)]
        if not deletes:
            return 0, {}
        ranges = [
            {"key": b64(self.live + k), "range_end": b64(self.live + _end(Delete(k, p))), "keys_only": True}
            for k, p in deletes
        ]
        data = await self.gateway.call("/v3/kv/txn", {"success": [{"request_range": r} for r in ranges]})
        strip = len(self.live)
        found = {
            d: [unb64(kv["key"])[strip:] for kv in r["response_range"].get("kvs", [])]
            for d, r in zip(deletes, data.get("responses", []), strict=True)
        }
        return int(data["header"]["revision"]), found

    async def wait(self, prefixes: Sequence[str], after: int, timeout: float) -> int | None:
        # Register first, then look: a change the watch delivers in between wakes us, and
        # one it delivered before is seen by the snapshot.
        deadline = anyio.current_time() + timeout
        with anyio.move_on_after(timeout):
            await self._watching.wait()
        with self._waiters.register(prefixes, after) as waiter:
            async with self.snapshot(after) as snap:
                # one round trip for every prefix the watch does not keep, not one each
                await snap.last_changes_at(list(prefixes))
            if snap.changed > after:
                return snap.changed
            await waiter.wait(max(0.0, deadline - anyio.current_time()))
        return waiter.revision

    def caches(self) -> dict[str, Any]:
        return {"etcd_watch": self.watched}

    def release_waiters(self) -> None:
        self._waiters.wake_all()
        self._watching.set()

    async def close(self) -> None:
        self._closed = True
        self.release_waiters()
        await self.gateway.aclose()

    # -- the watch -------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        # the identity first (written once per namespace, a revision of its own), so that
        # it never lands between a caller's commits; etcd not there yet: the watch reads it
        try:
            with anyio.move_on_after(2.0):
                self.identity = await self._read_identity()
        except (FormatError, EtcdAuthError):
            raise  # a newer metafs's store, or etcd refusing us: refused at start
        except StoreError:
            pass  # etcd not there yet: the watch reads it
        async with anyio.create_task_group() as tg:
            await tg.start(self._watch)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    async def _watch(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Follow every change under the namespace and wake the waiters it concerns.

        Started even while no member answers (the server then answers 503 until one does):
        a metafs server may well boot before its etcd cluster."""
        task_status.started()
        start: int | None = None
        backoff, lost = Backoff(0.05, 1.0), False
        while not self._closed:
            endpoint = self.gateway.endpoint
            try:
                if start is None:
                    start = await self.revision() + 1
                    self.identity = self.identity or await self._read_identity()
                elif lost and (head := await self.revision()) < start - 1:
                    start = await self._went_back(start - 1, head)
                create = {"key": b64(self.namespace), "range_end": b64(prefix_end(self.namespace))}
                body = {"create_request": {**create, "start_revision": str(start)}}
                async with self.gateway.stream("/v3/watch", body) as resp:
                    async for line in resp.aiter_lines():
                        answer = json.loads(line)
                        if "error" in answer:  # an expired auth token, most often: log in again
                            self.gateway.token = ""
                            raise StoreError(f"etcd watch: {answer['error'].get('message', answer['error'])}")
                        result = answer.get("result") or {}
                        if result.get("compact_revision") or result.get("canceled"):
                            # the revisions we missed are gone: every waiter re-reads
                            head = await self.revision()
                            log.warning("etcd watch from %d was compacted; resyncing at %d", start, head)
                            self.watched.resynced(head)
                            self._waiters.wake_all(head)
                            start = head + 1
                            break
                        if result.get("created"):
                            head = int((result.get("header") or {}).get("revision", start - 1))
                            if head < start - 1:
                                start = await self._went_back(start - 1, head)
                                break
                            self.watched.started(start - 1)
                            self._watching.set()
                        if lost:
                            log.warning("etcd watch resumed on %s at revision %d", endpoint, start)
                        start = self._deliver(result.get("events", []), start)
                        lost = False
                        backoff.reset()
                    else:
                        raise httpx.RemoteProtocolError("watch stream ended")
            except (httpx.HTTPError, ValueError, StoreError) as exc:
                self.watched.lost()
                if self._closed:
                    return
                if not lost:
                    log.warning("etcd watch on %s lost (%s); trying the members in turn", endpoint, exc)
                lost = True
                self.gateway.next_member()
                await backoff.wait()

    async def _went_back(self, seen: int, head: int) -> int:
        """The cluster is at ``head``, below the ``seen`` revision this server watched up
        to: wiped, or restored from a snapshot, behind the same URL. Its revisions are
        another history's: read the identity again, drop what was kept by revision, wake
        every waiter; the revision to watch from."""
        self.identity = await self._read_identity()
        log.warning(
            "etcd went back from revision %d to %d (store %s): a new history; dropping caches",
            seen,
            head,
            self.identity,
        )
        self.watched.resynced(head)
        self.watched.at, self.watched.committed = head, 0
        if self.on_replaced is not None:
            self.on_replaced()
        self._waiters.wake_all(head)
        return head + 1

    def _deliver(self, events: list[dict[str, Any]], start: int) -> int:
        """Wake waiters for each revision in ``events``; return the next revision to watch."""
        by_rev: dict[int, list[str]] = {}
        cut = len(self.live)  # the live and tombstone prefixes have the same length
        for ev in events:
            kv = ev["kv"]
            key = unb64(kv["key"])
            if key.startswith(self.info):  # the store's own records, no metadata
                if kv["key"] == self.compactor.key:
                    self.compacted = max(self.compacted, int(unb64(kv.get("value", ""))))
                continue
            if ev.get("type") == "DELETE" and key.startswith(self.tomb):
                continue  # a tombstone compacted away: nothing under it changed
            by_rev.setdefault(int(kv["mod_revision"]), []).append(key[cut:])
        for rev in sorted(by_rev):
            keys = sorted(by_rev[rev])
            self.watched.applied(rev, keys)  # first: the woken re-read at ``rev``
            self._waiters.notify(rev, keys)
            start = rev + 1
        return start
