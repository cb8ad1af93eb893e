"""Which revisions a read may be answered from: a delta (``since=``) or a long poll
(``index=``) from a revision the store's history no longer covers answers 410 Gone
(protocol.EXPIRED), Kubernetes' answer to a watch from an expired version, and the
client reads again whole."""

from __future__ import annotations

from ..protocol import EXPIRED
from ..store import Snapshot
from .http import HTTPError


def in_history(seen: int, snap: Snapshot) -> bool:
    """Whether what changed after revision ``seen`` is exactly known in ``snap``: not
    compacted away, and a revision this store reached (see :func:`check_history`)."""
    return snap.compacted <= seen <= snap.revision


def poll_index(snap: Snapshot) -> int:
    """The index an answer gives a client to poll on: the last revision anything it read
    changed at, never 0 (a client given 0 asks with ``index=0``, which does not block, and
    spins) and never below the compacted revision (an index from below it is answered at
    once, so a client given one would never block again)."""
    return max(1, snap.changed, snap.compacted)


def check_history(seen: int, snap: Snapshot, identity: str) -> None:
    """Refuse (410) a read from ``seen`` that ``snap`` cannot answer exactly:

    - below the compacted revision: the tombstones of deletes after ``seen`` may be gone
      (``--history-retention``), so a delta or a poll from there could miss a delete;
    - above the store's revision: a revision this store never reached, so it was
      replaced by an older copy or wiped since the client read. Over etcd a read from a
      revision the server's watch has not reached is made at the cluster's head, so a
      server a few revisions behind another never says this.
    """
    if seen == 0 or in_history(seen, snap):
        return
    if seen < snap.compacted:
        raise HTTPError(
            EXPIRED,
            f"revision {seen} is older than the history this store keeps (compacted at"
            f" {snap.compacted}, --history-retention): read again without index= and since=",
        )
    raise HTTPError(  # above the store's revision
        EXPIRED,
        f"revision {seen} is not in this store's history (store {identity or '?'}):"
        " it was replaced or restored; read again without index= and since=",
    )
