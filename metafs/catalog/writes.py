"""Writes: whole documents, records, fields and tokens, each committed atomically.

Every write reads what it replaces in a snapshot and commits under guards on the
``mod_revision`` of each key read (optimistic concurrency, the way etcd transactions
work), retrying on conflict.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import anyio

from .. import auth, heap, model
from ..store import Conflict, Delete, Guard, Op, Put, Snapshot, Store, yielding
from .bodies import parse_body
from .errors import BadRequest, CasFailed, Exists, NotFound
from .keys import (
    COLLECTIONS,
    KIND_PREFIX,
    LEVELS,
    RECORD_PREFIXES,
    doc_path,
    host_index_key,
    index_key,
    key_ids,
    record_key,
    token_key,
)
from .paths import Target
from .records import KIND_MODEL, Draft, Record, draft, drafts, encode_record, iso

_MAX_RETRIES = 20
#: a load of this many records has its drafts taken apart off the loop once committed
DISMANTLE_AFTER = 1024


@dataclass(frozen=True, slots=True)
class WriteResult:
    revision: int
    changed: int  # records written (0: the store already held exactly this)
    #: the commit had :data:`DISMANTLE_AFTER` operations or more (a big load or delete):
    #: reading and writing that many left free heap worth handing back (:func:`heap.trim`)
    big: bool = False


class Writes:
    """The catalog's writes over one :class:`Store`: each a plan that reads a snapshot and
    is committed under guards, retried on conflict."""

    def __init__(self, store: Store, limits: model.Limits = model.DEFAULT_LIMITS) -> None:
        self.store = store
        self.limits = limits

    async def _commit(self, plan: Any) -> WriteResult:
        """Run ``plan(snapshot) -> (ops, guards, changed)`` until it commits."""
        for _ in range(_MAX_RETRIES):
            async with self.store.snapshot() as snap:
                ops, guards, changed = await plan(snap)
            big = len(ops) >= DISMANTLE_AFTER
            try:
                rev = await self.store.commit(ops, guards)
            except Conflict:
                continue
            finally:
                if big:  # not freed in one go on the event loop
                    await anyio.to_thread.run_sync(heap.dismantle, ops, guards)
            return WriteResult(rev, changed, big)
        raise Exists("too many concurrent writes to the same records; try again")

    async def _upsert(
        self,
        snap: Snapshot,
        records: list[Draft],
        now: float,
    ) -> tuple[list[Op], list[Guard], int]:
        ops: list[Op] = []
        guards: list[Guard] = []
        # a big load (100,000 records) lets the reads waiting meanwhile through as it goes
        wanted = [r.key async for r in yielding(records)]
        wanted += [index_key(r.ids[3]) async for r in yielding(records) if r.kind == "unit"]
        found = await snap.get_many(wanted)  # one round trip where the store allows
        grown: dict[tuple[str, ...], int] = {}  # a service's units: how much longer they get
        async for r in yielding(records):
            kind, ids, data, key = r.kind, r.ids, r.data, r.key
            item = found[key]
            old = Record.load(item) if item else None
            if kind == "unit":
                where = f"{ids[0]}/{ids[1]}/{ids[2]}"
                idx = found[index_key(ids[3])]
                if idx is not None and idx.value != where:
                    # An index entry is authoritative only while its unit record exists.
                    other = await snap.get(record_key("unit", (*idx.value.split("/"), ids[3])))
                    if other is not None:
                        raise Exists(
                            f"{doc_path(kind, ids)}: unit id {ids[3]!r} already exists at "
                            f"{doc_path(kind, (*idx.value.split('/'), ids[3]))}"
                        )
                if idx is None or idx.value != where:
                    ops.append(Put(index_key(ids[3]), where))
                    guards.append(Guard(index_key(ids[3]), idx.mod_rev if idx else 0))
            if old is not None and old.data == data:
                continue
            if kind == "unit":
                ops.extend(_host_index_ops(ids, old.data if old else None, data))
            value = encode_record(data, old, now)
            ops.append(Put(key, value))
            guards.append(Guard(key, old.rev if old else 0))
            if kind == "unit":
                grown[ids[:3]] = grown.get(ids[:3], 0) + len(value) - (len(item.value) if item else 0)
        if len(found) >= DISMANTLE_AFTER:  # its items, read for this plan only
            await anyio.to_thread.run_sync(heap.dismantle, found, wanted)
        for service, more in grown.items():
            await self._check_view_size(snap, service, more)
        return ops, guards, sum(isinstance(op, Put) and op.key.startswith(RECORD_PREFIXES) for op in ops)

    async def _check_view_size(self, snap: Snapshot, service: tuple[str, ...], more: int) -> None:
        """Refuse a write that makes a service's units, which every view of it carries,
        longer than ``limits.view_bytes`` (as stored JSON; one indexed sum over SQLite)."""
        if more <= 0:
            return
        size = await snap.size_under(record_key("unit", service)) + more
        if size > self.limits.view_bytes:
            where = doc_path("service", service)
            raise BadRequest(
                f"{where}.units: {size} bytes of units, over the limit of {self.limits.view_bytes}"
                " a service's view (--max-view-bytes)"
            )

    async def _require_parent(self, snap: Snapshot, target: Target) -> list[Guard]:
        if target.kind in ("host", "account"):
            return []
        parent_ids = target.ids[:-1]
        parent_kind = LEVELS[len(parent_ids) - 1]
        item = await snap.get(record_key(parent_kind, parent_ids))
        if item is None:
            raise NotFound(f"{doc_path(parent_kind, parent_ids)} does not exist; create it first")
        return [Guard(item.key, item.mod_rev)]

    async def load(self, data: dict[str, Any], *, give_up: bool = False) -> WriteResult:
        """Create or replace everything a load document names, in one transaction. The
        validation runs in a worker thread: a big document does not hold the event loop.
        ``give_up``: the caller needs ``data`` no more; it is emptied once validated, in
        that thread (see :func:`heap.dismantle`), and not freed on the loop."""
        records = await anyio.to_thread.run_sync(self.load_drafts, data, give_up)
        now = time.time()

        async def plan(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
            return await self._upsert(snap, records, now)

        try:
            return await self._commit(plan)
        finally:
            if len(records) >= DISMANTLE_AFTER:
                await anyio.to_thread.run_sync(heap.dismantle, records)

    def load_drafts(self, data: dict[str, Any], give_up: bool = False) -> list[Draft]:
        """The records a load document writes, validated (blocking: CPU only). The model
        (and with ``give_up``, ``data``) is taken apart once read, here."""
        try:
            doc = model.validate_document(data, self.limits)
        finally:
            if give_up:
                heap.dismantle(data)
        try:
            if dups := model.duplicate_unit_ids(doc):
                raise model.ModelError(dups)
            # comprehensions, not loops: a loop's variable would hold the last account
            # past the dismantling below, and it would be freed whole on return
            records = [r for h, host in doc.hosts.items() for r in drafts("host", (h,), host)]
            records.extend(r for a, acc in doc.accounts.items() for r in drafts("account", (a,), acc))
            return records
        finally:
            heap.dismantle(doc)

    async def put(
        self, target: Target, body: bytes, content_type: str, cas: int | None = None
    ) -> WriteResult:
        """Write a whole record (and the records below it that the body names) or one field.
        ``cas``: only if what ``target`` names was last changed at that revision (0: only
        if it does not exist), checked in the snapshot the write commits from; else
        :class:`CasFailed`, and nothing is written."""
        if target.kind not in KIND_MODEL:
            raise BadRequest(f"cannot write /{target.kind}: write a record below it, or use load")
        now = time.time()
        where = target.where
        if not target.field:
            data = parse_body(body, content_type, where)
            obj = model.validate(
                KIND_MODEL[target.kind], data if data is not None else {}, where.split("."), self.limits
            )
            records = list(drafts(target.kind, target.ids, obj))

            async def plan(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
                guards = await self._require_parent(snap, target)
                if cas is not None:
                    item = await snap.get(target.key)
                    _check_cas(Record.load(item) if item else None, target, cas)
                ops, more, n = await self._upsert(snap, records, now)
                return ops, guards + more, n

            return await self._commit(plan)

        if target.field[0] in COLLECTIONS:
            coll = target.field[0]
            raise BadRequest(f"{where}.{coll}: write each one at {where.replace('.', '/')}/{coll}/<name>")
        if "json" in content_type or "yaml" in content_type:
            candidates = [parse_body(body, content_type, where)]
        else:
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(f"{where}: body is not UTF-8") from None
            candidates = [text]
            with contextlib.suppress(ValueError):
                candidates.append(json.loads(text))
            candidates.append(text.splitlines())

        async def plan_field(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
            rec = await self._existing(snap, target)
            if cas is not None:
                _check_cas(rec, target, cas)
            first_error: model.ModelError | None = None
            for value in candidates:
                data = json.loads(json.dumps(rec.data))
                _set_in(data, target.field, value, where)
                try:
                    obj = model.validate(KIND_MODEL[target.kind], data, where.split("."), self.limits)
                except model.ModelError as exc:
                    first_error = first_error or exc
                    continue
                return await self._upsert(snap, [draft(target.kind, target.ids, obj)], now)
            assert first_error is not None
            raise first_error

        return await self._commit(plan_field)

    async def create_token(self, kind: str, subject: str) -> tuple[str, dict[str, Any]]:
        """Mint a token; only its digest is stored. Returns the token (shown once)."""
        if kind not in auth.KINDS:
            raise BadRequest(f"kind {kind!r}: expected one of {', '.join(auth.KINDS)}")
        if kind == "operator":
            subject = ""
        elif kind != "reader" or subject:  # a reader without a subject reads every account
            try:
                model.check_name(subject)
            except ValueError as exc:
                raise BadRequest(f"subject: {exc}") from None
        token = auth.new_token(kind)
        d = auth.digest(token)
        rec = {
            "id": auth.token_id(d),
            "hash": d,
            "kind": kind,
            "subject": subject,
            "created": iso(time.time()),
        }
        key = token_key(rec["id"])
        await self.store.commit([Put(key, json.dumps(rec))], [Guard(key, 0)])
        return token, {k: v for k, v in rec.items() if k != "hash"}

    async def revoke_token(self, token_id_: str) -> WriteResult:
        key = token_key(token_id_)

        async def plan(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
            item = await snap.get(key)
            if item is None:
                raise NotFound(f"no token with id {token_id_!r}")
            return [Delete(key)], [Guard(key, item.mod_rev)], 1

        return await self._commit(plan)

    async def _existing(self, snap: Snapshot, target: Target) -> Record:
        item = await snap.get(target.key)
        if item is None:
            raise NotFound(f"{target.where} does not exist")
        return Record.load(item)

    async def delete(self, target: Target, cas: int | None = None) -> WriteResult:
        """Delete a record with everything below it, or one field of a record (``cas``: as
        for :meth:`put`)."""
        if target.kind not in KIND_MODEL:
            raise BadRequest(f"cannot delete /{target.kind}: delete the records below it")
        where = target.where

        async def plan(snap: Snapshot) -> tuple[list[Op], list[Guard], int]:
            rec = await self._existing(snap, target)
            if cas is not None:
                _check_cas(rec, target, cas)
            guards = [Guard(target.key, rec.rev)]
            if target.field:
                data = json.loads(json.dumps(rec.data))
                _del_in(data, target.field, where)
                obj = model.validate(KIND_MODEL[target.kind], data, where.split("."), self.limits)
                record = [draft(target.kind, target.ids, obj)]
                writes, more, n = await self._upsert(snap, record, time.time())
                return writes, guards + more, n
            ops: list[Op] = [Delete(target.key)]
            if target.kind in LEVELS:
                level = LEVELS.index(target.kind)
                for kind in LEVELS[level + 1 :]:
                    ops.append(Delete(KIND_PREFIX[kind] + target.key[1:], prefix=True))
                unit_prefix = "u" + target.key[1:]
                for item in await snap.range(unit_prefix):
                    ids = tuple(key_ids(item.key))
                    ops.append(Delete(index_key(ids[3])))
                    ops.extend(_host_index_ops(ids, Record.load(item).data, None))
            return ops, guards, 1

        return await self._commit(plan)


def _check_cas(rec: Record | None, target: Target, cas: int) -> None:
    """Raise :class:`CasFailed` unless ``target`` was last changed at ``cas`` (0: unless
    it does not exist). A field's revision is its own, as ``ModifyIndex`` shows it."""
    if rec is None or (target.field and _get_in(rec.data, target.field) is None):
        now = 0  # it does not exist
    else:
        now = rec.stamp(target.field)[0] if target.field else rec.rev
    if now != cas:
        what = f"{target.where}" + ("." + ".".join(target.field) if target.field else "")
        raise CasFailed(
            f"cas={cas}: {what} was last changed at {now}" if now else f"cas={cas}: {what} does not exist"
        )


def _get_in(data: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(data, dict) or name not in data:
            return None
        data = data[name]
    return data


def _host_index_ops(ids: tuple[str, ...], old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Op]:
    """Keep ``hu/<host>/<unit>/`` in step with a unit's ``host`` field."""
    before, after = (old or {}).get("host"), (new or {}).get("host")
    if before == after and old is not None:
        return []
    ops: list[Op] = []
    if before and before != after:
        ops.append(Delete(host_index_key(before, ids[3])))
    if after:
        ops.append(Put(host_index_key(after, ids[3]), "/".join(ids[:3])))
    return ops


def _set_in(data: dict[str, Any], path: tuple[str, ...], value: Any, where: str) -> None:
    node = data
    for i, name in enumerate(path[:-1]):
        child = node.setdefault(name, {})
        if not isinstance(child, dict):
            raise BadRequest(f"{where}.{'.'.join(path[: i + 1])}: is a value, not a mapping")
        node = child
    node[path[-1]] = value


def _del_in(data: dict[str, Any], path: tuple[str, ...], where: str) -> None:
    node: Any = data
    for name in path[:-1]:
        node = node.get(name) if isinstance(node, dict) else None
    if not isinstance(node, dict) or path[-1] not in node:
        raise NotFound(f"{where}.{'.'.join(path)} does not exist")
    del node[path[-1]]
