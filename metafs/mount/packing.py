"""Peers kept packed: what makes a cached view cheap.

A view of a 100-unit service is mostly ``service/all_hosts/``, a hundred peers that few
programs read. Each peer is kept as its meta JSON deflated with the service's first peer
as zlib's preset dictionary (peers differ in a few values: ~60 bytes for ~1.2 KB of
JSON), and made into a tree only when something reads below it. The trees unpacked are
kept, least recently used first, within a byte bound, then packed again: a start script
that lists every peer pays once, a mount with 100 services' views holds ~10 KB each.

A :class:`PackedDir` is a :class:`~metafs.tree.Dir` whose ``children`` unpack on first
use, so the filesystem, the diff and :func:`~metafs.tree.merge_meta`'s reuse of
unchanged subtrees work on it unchanged.
"""

from __future__ import annotations

import json
import weakref
import zlib
from typing import Any

from ..lru import LRU
from ..protocol import PEERS_AT
from ..tree import Dir, Node, merge_meta

#: what a packed peer costs beside its bytes: the object, its bytes' header, its entry
#: in ``all_hosts`` (tracemalloc: see the memory section of ``make bench``)
PACKED_OVERHEAD = 200
#: what an unpacked tree costs per byte of the JSON it came from (tracemalloc, a peer
#: of a 100-unit service)
TREE_PER_JSON_BYTE = 2.4
_WBITS = -15  # raw deflate: no header or checksum (6 bytes a peer)


class Unpacked:
    """The peers whose trees are held now: within ``max_bytes`` (estimated), least
    recently used packed again first. A peer dropped with its view leaves at once."""

    def __init__(self, max_bytes: int) -> None:
        # id(peer) -> (a weak reference to it, its tree's estimated bytes)
        self._lru: LRU[int, tuple[weakref.ref[PackedDir], int]] = LRU(
            lambda entry: entry[1], max_bytes, on_evict=self._repack
        )

    @property
    def size(self) -> int:
        return self._lru.size

    def __len__(self) -> int:
        return len(self._lru)

    @staticmethod
    def _repack(_key: int, entry: tuple[weakref.ref[PackedDir], int]) -> None:
        peer = entry[0]()
        if peer is not None:
            peer._kids = None

    def _forget(self, key: int, ref: weakref.ref[PackedDir]) -> None:
        entry = self._lru.peek(key)
        if entry is not None and entry[0] is ref:
            self._lru.pop(key)

    def held(self, peer: PackedDir) -> None:
        """``peer`` was just unpacked."""
        key = id(peer)
        ref = weakref.ref(peer, lambda r: self._forget(key, r))
        self._lru.put(key, (ref, int(peer.json_size * TREE_PER_JSON_BYTE)))

    def used(self, peer: PackedDir) -> None:
        self._lru.get(id(peer))


class PackedDir(Dir):
    """A directory kept as deflated meta JSON; ``children`` unpacks it (and tells its
    :class:`Unpacked`, which may pack it again later)."""

    __slots__ = ("__weakref__", "_blob", "_kids", "_owner", "_zdict", "json_size")

    def __init__(
        self, blob: bytes, zdict: bytes, json_size: int, rev: int, mtime: float, owner: Unpacked
    ) -> None:
        # Dir's own __init__ would set ``children``: the tree is made on first use instead
        self.rev, self.mtime, self.seq = rev, mtime, False
        self._blob, self._zdict, self.json_size, self._owner = blob, zdict, json_size, owner
        self._kids: dict[str, Node] | None = None

    @property
    def children(self) -> dict[str, Node]:
        kids = self._kids
        if kids is not None:
            self._owner.used(self)
            return kids
        inflate = zlib.decompressobj(_WBITS, zdict=self._zdict)
        tree = merge_meta(None, json.loads(inflate.decompress(self._blob) + inflate.flush()))
        assert isinstance(tree, Dir)
        self._kids = kids = tree.children
        self._owner.held(self)
        return kids

    @children.setter
    def children(self, value: dict[str, Node]) -> None:
        self._kids = value

    @property
    def packed_size(self) -> int:
        return len(self._blob)

    def __repr__(self) -> str:
        return f"PackedDir(rev={self.rev}, {len(self._blob)} bytes packed of {self.json_size})"


class PeerPacker:
    """The ``pack`` hook of :func:`~metafs.tree.merge_meta` for one fetched view: each new
    peer becomes a :class:`PackedDir`, against ``zdict`` (the service's, from the view
    it updates) or, for a new service, against its first peer. Counts what it packed."""

    def __init__(self, owner: Unpacked, zdict: bytes | None) -> None:
        self.owner = owner
        self.zdict = zdict
        self._deflate: Any = None  # primed with the dictionary once, copied for each peer
        self.json_bytes = 0
        self.packed_bytes = 0
        self.peers = 0

    def __call__(self, path: tuple[str, ...], data: Any) -> Node | None:
        if len(path) != 3 or path[:2] != PEERS_AT or "c" not in data or data.get("s"):
            return None
        raw = json.dumps(data, separators=(",", ":")).encode()
        if self.zdict is None:
            self.zdict = raw[-32768:]  # deflate looks back 32 KB at most
        if self._deflate is None:
            self._deflate = zlib.compressobj(6, zlib.DEFLATED, _WBITS, zdict=self.zdict)
        deflate = self._deflate.copy()
        blob = deflate.compress(raw) + deflate.flush()
        self.json_bytes += len(raw)
        self.packed_bytes += len(blob)
        self.peers += 1
        return PackedDir(blob, self.zdict, len(raw), data["r"], data["m"], self.owner)

    def weight(self, body_bytes: int) -> int:
        """The estimated bytes of a view made from ``body_bytes`` of JSON, with what this
        packer packed."""
        plain = max(body_bytes - self.json_bytes, 0)
        return int(plain * TREE_PER_JSON_BYTE) + self.packed_bytes + self.peers * PACKED_OVERHEAD


def zdict_of(root: Dir | None) -> bytes | None:
    """The dictionary ``root``'s peers were packed with (None: not packed, or no peers)."""
    node: Node | None = root
    for name in PEERS_AT:
        node = node.children.get(name) if isinstance(node, Dir) else None
    if isinstance(node, Dir):
        for peer in node.children.values():
            if isinstance(peer, PackedDir):
                return peer._zdict
    return None
