"""Trees of metadata as the server serves them and the filesystem shows them.

A :class:`Dir` maps names to nodes; a :class:`Leaf` holds a scalar or a list of scalars.
Every node carries the revision and the time it last changed. The same tree renders as
text (a leaf: its value and a newline, like sysfs; a directory: its children one per
line, sub-directories with a trailing ``/``), as JSON (the whole subtree, Consul style),
or as "meta" JSON that also carries revisions and times (what the filesystem fetches).

Names are kept raw in the tree; :func:`encode_name` makes the file name of each (a label
key ``io.example/role`` is shown as ``io.example%2Frole``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

Scalar = str | int | float | bool
LeafValue = Scalar | list[Scalar]


@dataclass(slots=True)
class Leaf:
    value: LeafValue
    rev: int = 0
    mtime: float = 0.0


@dataclass(slots=True)
class Dir:
    children: dict[str, Node] = field(default_factory=dict)
    rev: int = 0
    mtime: float = 0.0
    seq: bool = False  # made from a list: children are "0", "1", ...; JSON shows a list

    def add(self, name: str, node: Node) -> Node:
        """Add a child and fold its revision and time into this directory's."""
        self.children[name] = node
        if node.rev > self.rev:
            self.rev = node.rev
        if node.mtime > self.mtime:
            self.mtime = node.mtime
        return node


Node = Leaf | Dir


@dataclass(slots=True)
class Pending(Dir):
    """A directory sent without its children (a big service's ``all_hosts``: see
    :mod:`metafs.catalog.peers`): ``count`` of them, to be fetched by its path when first
    listed or read below. Until then ``children`` is empty and nothing below is known."""

    count: int = 0
    loaded: bool = False  # the children were fetched since (see ViewCache.node_at)


def unloaded(node: Node) -> bool:
    """Whether ``node`` is a :class:`Pending` whose children were not fetched yet."""
    return isinstance(node, Pending) and not node.loaded


_UNSAFE = re.compile(r"[%/\x00-\x1f\x7f]")


def encode_name(name: str) -> str:
    """The file name for ``name``: ``%``, ``/`` and control characters percent-encoded,
    and ``.``/``..`` (which cannot be file names) written ``%2E``/``%2E%2E``."""
    out = _UNSAFE.sub(lambda m: f"%{ord(m.group()):02X}", name)
    if out in (".", ".."):
        out = out.replace(".", "%2E")
    return out


def decode_name(name: str) -> str:
    """The inverse of :func:`encode_name` (and of URL percent-encoding)."""
    from urllib.parse import unquote

    return unquote(name, errors="strict")


def scalar_text(value: Scalar) -> str:
    """A scalar as a file shows it: strings as they are, others in their JSON form."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def leaf_bytes(value: LeafValue) -> bytes:
    """A leaf's file content: the value and a newline; a list, one item per line."""
    if isinstance(value, list):
        return "".join(scalar_text(v) + "\n" for v in value).encode()
    return (scalar_text(value) + "\n").encode()


def listing(node: Dir) -> str:
    """A directory as text: encoded child names, sorted, directories with a ``/``."""
    return "".join(
        encode_name(n) + ("/" if isinstance(c, Dir) else "") + "\n" for n, c in sorted(node.children.items())
    )


def render_text(node: Node) -> bytes:
    return leaf_bytes(node.value) if isinstance(node, Leaf) else listing(node).encode()


def to_json(node: Node) -> Any:
    """The subtree as plain JSON values (directories become objects)."""
    if isinstance(node, Leaf):
        return node.value
    if node.seq:
        return [to_json(child) for child in node.children.values()]
    return {name: to_json(child) for name, child in node.children.items()}


def to_meta(node: Node) -> Any:
    """The subtree with revision and time on every node: ``{"r", "m", "v"|"c"}``
    (``"s": true`` marks a directory made from a list)."""
    return to_meta_swapping(node, {})


#: in a delta (:func:`to_meta_swapping`), a subtree that did not change: keep yours
KEEP: dict[str, int] = {"k": 1}


def to_meta_swapping(node: Node, swaps: Mapping[int, Any]) -> Any:
    """:func:`to_meta`, with every subtree whose ``id()`` is in ``swaps`` sent as what
    that maps it to: :data:`KEEP` (the caller knows it did not change, deletions below
    it included: revisions alone cannot tell, a deleted child leaves none behind),
    :func:`pending_meta` or :func:`patch_meta`; a client rebuilds the new tree with
    :func:`merge_meta`. An unloaded :class:`Pending` is sent pending."""
    swapped = swaps.get(id(node))
    if swapped is not None:
        return swapped
    if isinstance(node, Pending) and not node.loaded:
        return pending_meta(node)
    if isinstance(node, Leaf):
        return {"r": node.rev, "m": node.mtime, "v": node.value}
    out = {
        "r": node.rev,
        "m": node.mtime,
        "c": {n: to_meta_swapping(c, swaps) for n, c in node.children.items()},
    }
    if node.seq:
        out["s"] = True
    return out


def pending_meta(node: Dir) -> dict[str, Any]:
    """``node`` sent without its children (a :class:`Pending` on the other side)."""
    count = node.count if isinstance(node, Pending) else len(node.children)
    return {"r": node.rev, "m": node.mtime, "n": count, "d": 1}


def patch_meta(node: Dir, changed: Mapping[str, Any], deleted: Iterable[str]) -> dict[str, Any]:
    """``node`` as a change of the directory the client holds: the children ``changed``
    (each in any form :func:`merge_meta` takes), the names ``deleted``, and how many
    children there are after (the client checks it, and fetches the whole on a miss)."""
    return {"r": node.rev, "m": node.mtime, "p": dict(changed), "x": sorted(deleted), "n": len(node.children)}


class _Shared:
    """One object for each equal value while a tree is made from JSON: names and string
    values interned (alive only while used), equal revisions and times one object per
    document (the leaves of one record share them). A mount keeps many trees: this
    took views of 100-unit services from ~3.0 to ~2.4 bytes per byte of their JSON (tracemalloc)."""

    __slots__ = ("_numbers",)

    def __init__(self) -> None:
        self._numbers: dict[tuple[type, object], object] = {}

    def number(self, value: Any) -> Any:
        return self._numbers.setdefault((type(value), value), value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return sys.intern(value)
        if isinstance(value, list):
            return [sys.intern(v) if isinstance(v, str) else v for v in value]
        return self.number(value)

    def leaf(self, data: Any) -> Leaf:
        return Leaf(self.value(data["v"]), self.number(data["r"]), self.number(data["m"]))


#: ``pack(path, data)``: a node to stand for the subtree ``data`` at ``path`` (the names
#: from the root), made some other way than :func:`merge_meta` would; None to let it
Pack = Callable[[tuple[str, ...], Any], "Node | None"]


def merge_meta(
    old: Node | None,
    data: Any,
    shared: _Shared | None = None,
    pack: Pack | None = None,
    path: tuple[str, ...] = (),
) -> Node:
    """The tree a :func:`to_meta_swapping` delta describes, reusing ``old``'s unchanged
    subtrees (the same objects: the filesystem's diff skips them); each new subtree is
    first offered to ``pack``. Raises KeyError when the delta keeps something ``old``
    does not have."""
    shared = shared or _Shared()
    if "d" in data:
        return Pending({}, shared.number(data["r"]), shared.number(data["m"]), count=data["n"])
    if "p" in data:
        return _patched(old, data, shared, pack, path)
    if "c" not in data:
        return shared.leaf(data)
    before = old.children if isinstance(old, Dir) else {}
    children = {sys.intern(n): _child(before, n, c, shared, pack, path) for n, c in data["c"].items()}
    return Dir(children, shared.number(data["r"]), shared.number(data["m"]), data.get("s", False))


def _child(
    before: dict[str, Node], n: str, data: Any, shared: _Shared, pack: Pack | None, path: tuple[str, ...]
) -> Node:
    """Child ``n`` as ``data`` describes it: the old one kept, or made (``pack`` first)."""
    if data == KEEP:
        return before[n]
    here = (*path, sys.intern(n)) if pack is not None else path
    made = pack(here, data) if pack is not None else None
    return made if made is not None else merge_meta(before.get(n), data, shared, pack, here)


def _patched(old: Node | None, data: Any, shared: _Shared, pack: Pack | None, path: tuple[str, ...]) -> Dir:
    """A :func:`patch_meta` applied to ``old``: its children, less the deleted, with the
    changed merged in. KeyError when ``old`` is not a directory whose children we hold,
    or the result has not the count the server has (a delta against another state)."""
    if not isinstance(old, Dir) or unloaded(old):
        raise KeyError(path)
    children = dict(old.children)
    for name in data["x"]:
        children.pop(name, None)
    for n, c in data["p"].items():
        children[sys.intern(n)] = _child(old.children, n, c, shared, pack, path)
    if len(children) != data["n"]:
        raise KeyError(path)
    return Dir(children, shared.number(data["r"]), shared.number(data["m"]), old.seq)


def from_meta(data: Any) -> Node:
    """The inverse of :func:`to_meta` (a whole tree: a delta with nothing to keep)."""
    return merge_meta(None, data)


def descend(node: Node, names: Iterable[str]) -> Node | None:
    """The node at ``names`` below ``node`` (raw names), or None."""
    for name in names:
        if not isinstance(node, Dir):
            return None
        child = node.children.get(name)
        if child is None:
            return None
        node = child
    return node


Stamp = Callable[[tuple[str, ...]], tuple[int, float]]


def build(value: Any, stamp: Stamp, path: tuple[str, ...] = ()) -> Node:
    """A tree from a JSON-like value: maps become directories, lists of scalars leaves,
    lists holding maps or lists directories named ``0``, ``1``, ... ``stamp(path)`` gives
    each leaf its revision and time; a directory takes the newest of its children's."""
    if isinstance(value, dict) or (
        isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value)
    ):
        items = value.items() if isinstance(value, dict) else enumerate(value)
        d = Dir(seq=isinstance(value, list))
        for k, v in items:
            d.add(str(k), build(v, stamp, (*path, str(k))))
        if not d.children:
            d.rev, d.mtime = stamp(path)
        return d
    return Leaf(value, *stamp(path))
