"""What an etcd-backed server knows from its watch stream without asking etcd: the small
ranges and the "last change under a prefix" stamps it has read, exact as of the revision
the watch has delivered up to.

After one change to a big service every client's long poll wakes, re-reads, polls again
and refetches its view: over etcd that was ~8 round trips per client, most of them to
learn that a unit's index key or its service's prefixes had not changed (63 ms of server
CPU per client, 1,000 clients). A snapshot taken at the delivered revision reads those
from here. Exact, not approximate: an entry is learned only while the watch is at the
revision it was read at, dropped by the first event under it, and used only by a
snapshot at the revision the watch is still at. While the stream is down, or behind this
server's own last commit (read your writes), snapshots read at etcd's head as before.
"""

from __future__ import annotations

from ..flights import Flights
from ..lru import LRU
from .base import Range

#: a delivery touching more keys than this drops everything (a bulk load: cheaper than
#: looking up each key's every prefix)
MANY_KEYS = 256
#: ranges kept: this small or less (an index key, a unit's record), these many at most
SMALL_RANGE_ITEMS, SMALL_RANGE_BYTES = 8, 4096
#: how long a read waits for another's of the same prefixes before reading them itself
READER_WAIT = 5.0


def _range_bytes(r: Range) -> int:
    return 200 + sum(len(i.key) + len(i.value) + 100 for i in r.items)


class Watched:
    """Stamps and small ranges at revision :attr:`at`, kept exact by :meth:`applied`."""

    def __init__(self, max_entries: int = 65536, max_bytes: int = 32 << 20) -> None:
        #: every event up to this revision has been applied
        self.at = 0
        #: the watch stream is up (else nothing here is used)
        self.live = False
        #: the last revision this server committed: snapshots wait for the watch to pass it
        self.committed = 0
        #: etcd said ``at`` was compacted: read at the head until the next event
        self.compacted = False
        self._stamps: LRU[str, tuple[int, float]] = LRU(lambda _: 100, max_bytes // 4, max_entries)
        self._ranges: LRU[str, Range] = LRU(_range_bytes, max_bytes, max_entries)
        #: the reads in flight, by revision and prefixes: who asks the same meanwhile waits
        self.reading: Flights[tuple[str, int, tuple[str, ...]]] = Flights()

    def __len__(self) -> int:
        return len(self._stamps) + len(self._ranges)

    @property
    def size(self) -> int:
        """What is kept, estimated in bytes."""
        return self._stamps.size + self._ranges.size

    def revision(self) -> int:
        """The revision a new snapshot reads at to use what is here; 0: at etcd's head."""
        return self.at if self.live and not self.compacted and self.at >= self.committed else 0

    def stamp(self, at: int, prefix: str) -> tuple[int, float] | None:
        return self._stamps.get(prefix) if at and at == self.revision() else None

    def range(self, at: int, prefix: str) -> Range | None:
        return self._ranges.get(prefix) if at and at == self.revision() else None

    def learn_stamp(self, at: int, prefix: str, stamp: tuple[int, float]) -> None:
        """``stamp`` was read at ``at``: keep it if no event came since."""
        if at and at == self.revision():
            self._stamps.put(prefix, stamp)

    def learn_range(self, at: int, prefix: str, found: Range) -> None:
        small = len(found.items) <= SMALL_RANGE_ITEMS and _range_bytes(found) <= SMALL_RANGE_BYTES
        if small and at and at == self.revision():
            self._ranges.put(prefix, found)

    def applied(self, rev: int, keys: list[str]) -> None:
        """The watch delivered revision ``rev``, changing ``keys``: drop every entry under
        which one of them lies (each key's every prefix, itself and ``""`` included)."""
        if len(keys) > MANY_KEYS:
            self._stamps.clear()
            self._ranges.clear()
        else:
            for key in keys:
                for i in range(len(key) + 1):
                    self._stamps.pop(key[:i])
                    self._ranges.pop(key[:i])
        self.at = max(self.at, rev)
        self.compacted = False

    def started(self, at: int) -> None:
        """The watch is up, every event up to ``at`` applied."""
        self.at = max(self.at, at)
        self.live = True

    def lost(self) -> None:
        """The watch is down: nothing here can be trusted to be current."""
        self.live = False
        self._stamps.clear()
        self._ranges.clear()

    def resynced(self, head: int) -> None:
        """The watch missed events (compacted) and starts again at ``head``."""
        self.lost()
        self.at = head
