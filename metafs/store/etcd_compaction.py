"""History compaction over etcd: metafs's tombstone keys older than the retention, the
compacted revision every server reads, and etcd's own history.

- The tombstones (``<ns>d/<key>``, whose value is the time of the delete) are paged
  through at one revision; those older than the retention are deleted in transactions of
  :data:`TOMB_BATCH`, each guarded on the tombstone's ``mod_revision`` (a key deleted
  again meanwhile keeps its newer tombstone).
- ``<ns>info/compacted`` is raised (compare-and-swap, only upwards: several servers may
  compact at once, as Kubernetes' API servers do) *before* the tombstones go, so that any
  read that finds one gone also finds a compacted revision that covers it: every snapshot
  reads that key in its own transaction (etcd.py).
- etcd's own history is compacted (``/v3/kv/compaction``) at the newest revision this
  server saw at least a retention ago, unless the operator has etcd compact itself
  (``--etcd-compaction etcd``). A compaction at a revision another server already
  compacted is not an error. metafs's deletes write a tombstone in the same revision, so
  etcd 3.4's boundary bug (a delete dropped when compacting exactly at its revision, see
  docs/operations.md) cannot hide one from a watch: the tombstone's put is seen.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque

from .base import Compaction
from .etcd_gateway import Compacted, EtcdAuthError, Gateway, b64, decode
from .etcd_info import raise_compacted, read_compacted

log = logging.getLogger("metafs.store.etcd")

#: tombstones deleted in one etcd transaction (each a revision of its own)
TOMB_BATCH = 500
#: (time, revision) samples kept for etcd's own compaction: one per run, runs at least
#: every 5 minutes, so this covers a retention of ~3.5 days at that pace
SAMPLES = 1024


class EtcdCompactor:
    """Compaction of one namespace; ``history``: compact etcd's own history too."""

    def __init__(self, gateway: Gateway, namespace: str, history: bool = True) -> None:
        self.gateway = gateway
        self.tomb = namespace + "d/"
        self.key = b64(namespace + "info/compacted")
        self.history = history
        #: the revision this server last compacted etcd's history at
        self.etcd_compacted = 0
        self._samples: deque[tuple[float, int]] = deque(maxlen=SAMPLES)

    async def compact(self, before: float, head: int) -> Compaction:
        """One run: tombstones of deletes before ``before``, then etcd's history up to the
        newest revision seen at least that long ago; ``head`` is etcd's revision now."""
        self._samples.append((time.time(), head))
        old, kept = await self._old_tombstones(before, head)
        removed = 0
        if old:
            await raise_compacted(self.gateway, self.key, max(rev for _, rev in old))
            for at in range(0, len(old), TOMB_BATCH):
                batch = old[at : at + TOMB_BATCH]
                txn = {
                    "compare": [
                        {"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(r)}
                        for k, r in batch
                    ],
                    "success": [{"request_delete_range": {"key": k}} for k, _ in batch],
                }
                if (await self.gateway.call("/v3/kv/txn", txn)).get("succeeded"):
                    removed += len(batch)
                # else one was written again meanwhile: the batch waits for the next run
        if self.history:
            await self._compact_etcd(before)
        return Compaction(removed, await read_compacted(self.gateway, self.key), kept + len(old) - removed)

    async def _old_tombstones(self, before: float, head: int) -> tuple[list[tuple[str, int]], int]:
        """The tombstones older than ``before`` (key in base64, mod_revision), and how
        many are younger; paged, at revision ``head``."""
        old: list[tuple[str, int]] = []
        kept = 0
        async for _, kvs in self.gateway.pages(self.tomb, head):
            for kv in kvs:
                if decode(kv.get("value"))[0] < before:
                    old.append((kv["key"], int(kv["mod_revision"])))
                else:
                    kept += 1
        return old, kept

    async def _compact_etcd(self, before: float) -> None:
        cut = max((rev for t, rev in self._samples if t <= before), default=0)
        if cut <= self.etcd_compacted:
            return
        try:
            with contextlib.suppress(Compacted):  # another server (or etcd itself) was there first
                await self.gateway.call("/v3/kv/compaction", {"revision": str(cut)})
        except EtcdAuthError as exc:  # etcd users: compaction may need the root role
            self.history = False
            log.warning(
                "etcd refused to compact its history (%s): leaving it to etcd from now on;"
                " run with --etcd-compaction etcd and etcd's --auto-compaction-retention",
                exc,
            )
            return
        self.etcd_compacted = cut
        log.info("etcd history compacted at revision %d", cut)
