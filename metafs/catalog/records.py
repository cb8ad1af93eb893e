"""Records as stored: a record's data and, for each of its leaves, the revision and time
at which that value last changed (so a file's ``st_mtime`` is when *its* value changed,
not its neighbour's); and the records a validated model object is written as."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import model
from ..store import Item
from ..tree import Dir, build
from .keys import COLLECTIONS, LEVELS, record_key

_SEP = "\x1f"  # joins leaf paths inside a record; control characters are never in keys


KIND_MODEL: dict[str, type[model._Record]] = {
    "account": model.Account,
    "stack": model.Stack,
    "service": model.Service,
    "unit": model.Unit,
    "host": model.Host,
}


def iso(t: float) -> str:
    return (
        datetime.datetime.fromtimestamp(t, datetime.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _leaves(value: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf of a record's data, as :func:`tree.build` splits it (empty maps count)."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, (*path, k))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            yield from _leaves(v, (*path, str(i)))
    else:
        yield path, value


@dataclass(slots=True)
class Record:
    """A stored record: its data, and when each leaf and the record itself changed."""

    data: dict[str, Any]
    leaves: dict[str, list[float]]  # leaf path -> [rev (0: the record's mod_rev), time]
    created: float
    item: Item

    @classmethod
    def load(cls, item: Item) -> Record:
        raw = json.loads(item.value)
        return cls(raw["d"], raw["l"], raw["c"], item)

    @property
    def rev(self) -> int:
        return self.item.mod_rev

    def stamp(self, path: tuple[str, ...]) -> tuple[int, float]:
        """Revision and time at which the leaf at ``path`` last changed."""
        rev, t = self.leaves.get(_SEP.join(path), (0, self.item.mod_time))
        return int(rev) or self.item.mod_rev, t

    @property
    def born(self) -> tuple[int, float]:
        return self.item.create_rev, self.created

    def tree(self, exclude: tuple[str, ...] = ()) -> Dir:
        d = Dir()
        for k, v in self.data.items():
            if k not in exclude:
                d.add(k, build(v, self.stamp, (k,)))
        return d


def encode_record(data: dict[str, Any], old: Record | None, now: float) -> str:
    """A record's stored JSON; leaves whose value did not change keep their old stamp."""
    old_values = dict(_leaves(old.data)) if old else {}
    leaves: dict[str, list[float]] = {}
    for path, value in _leaves(data):
        key = _SEP.join(path)
        if old is not None and path in old_values and old_values[path] == value:
            leaves[key] = list(old.stamp(path))
        else:
            leaves[key] = [0, now]
    created = old.created if old else now
    return json.dumps({"d": data, "l": leaves, "c": created}, separators=(",", ":"), sort_keys=True)


@dataclass(frozen=True, slots=True)
class Draft:
    """A record about to be written: its kind, ids and data (its children are drafts of
    their own)."""

    kind: str
    ids: tuple[str, ...]
    data: dict[str, Any]

    @property
    def key(self) -> str:
        return record_key(self.kind, self.ids)


def draft(kind: str, ids: tuple[str, ...], obj: model._Record) -> Draft:
    """A validated record's own data, without its children (stored as records of their own)."""
    exclude = {c for c in COLLECTIONS if c in type(obj).model_fields}
    return Draft(kind, ids, obj.model_dump(exclude=exclude, exclude_none=True, mode="json"))


def drafts(kind: str, ids: tuple[str, ...], obj: model._Record) -> Iterator[Draft]:
    """The drafts of a record and of every record below it."""
    yield draft(kind, ids, obj)
    if kind in LEVELS and kind != "unit":
        child_kind = LEVELS[LEVELS.index(kind) + 1]
        children: dict[str, model._Record] = getattr(obj, COLLECTIONS[LEVELS.index(kind) + 1])
        for name, child in children.items():
            yield from drafts(child_kind, (*ids, name), child)
