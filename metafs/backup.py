"""The backup document: every live key of a store at one revision, as JSON lines, with a
format version and a checksum; written by the server (``GET /v1/backup``), read back and
verified whole by ``metafs restore`` before anything is written.

::

    {"metafs_backup": 1, "store_format": 1, "revision": R, "identity": "...", "created": T}
    {"k": "<key>", "v": "<value>", "m": <mod_rev>, "t": <mod_time>}      one line per key
    ...
    {"end": {"records": N, "units": U, "tokens": K, "sha256": "<hex>"}}

``sha256`` is over the bytes of every line before the last (newlines included), so a file
cut short, a line changed or one left out is found, and named by its line and byte.
Tombstones are not kept: a restored store starts a new history (and identity).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from .store.base import STORE_FORMAT, Item

#: the version of this document's layout
BACKUP_FORMAT = 1
#: key prefixes counted in the end line (see metafs/catalog/keys.py)
UNIT_PREFIX, TOKEN_PREFIX = "u/", "k/"


class BackupError(ValueError):
    """The file is not a whole, unchanged backup this metafs reads: says where."""


def header(revision: int, identity: str) -> bytes:
    doc = {
        "metafs_backup": BACKUP_FORMAT,
        "store_format": STORE_FORMAT,
        "revision": revision,
        "identity": identity,
        "created": time.time(),
    }
    return (json.dumps(doc) + "\n").encode()


def record(item: Item) -> bytes:
    return (
        json.dumps({"k": item.key, "v": item.value, "m": item.mod_rev, "t": item.mod_time}) + "\n"
    ).encode()


@dataclass
class Counts:
    """What a backup holds, counted as it is written or read."""

    records: int = 0
    units: int = 0
    tokens: int = 0
    digest: Any = field(default_factory=hashlib.sha256)

    def add(self, key: str, line: bytes) -> None:
        self.records += 1
        self.units += key.startswith(UNIT_PREFIX)
        self.tokens += key.startswith(TOKEN_PREFIX)
        self.digest.update(line)

    def end(self) -> bytes:
        doc = {
            "records": self.records,
            "units": self.units,
            "tokens": self.tokens,
            "sha256": self.digest.hexdigest(),
        }
        return (json.dumps({"end": doc}) + "\n").encode()


@dataclass
class Backup:
    """A verified backup: its header and its records (key, value), in key order."""

    revision: int
    identity: str
    created: float
    #: key, value, time of the last change
    items: list[tuple[str, str, float]]
    counts: Counts


def read(stream: IO[bytes]) -> Backup:
    """Read and verify a whole backup; :class:`BackupError` names the line and byte where
    it goes wrong (nothing is returned half)."""
    offset, number = 0, 0
    items: list[tuple[str, str, float]] = []
    counts = Counts()
    head: dict[str, Any] | None = None
    end: dict[str, Any] | None = None

    def fail(why: str) -> BackupError:
        return BackupError(f"line {number} (byte {offset}): {why}")

    for line in _lines(stream):
        number += 1
        if end is not None:
            raise fail("data after the end line")
        if not line.endswith(b"\n"):
            raise fail("the file is cut short (the last line has no newline)")
        try:
            doc = json.loads(line)
        except ValueError as exc:
            raise fail(f"not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise fail("not a JSON object")
        if head is None:
            if doc.get("metafs_backup") != BACKUP_FORMAT:
                raise fail(f"not a metafs backup of format {BACKUP_FORMAT} (header: {str(doc)[:80]})")
            if not isinstance(doc.get("store_format"), int) or doc["store_format"] > STORE_FORMAT:
                found = doc.get("store_format")
                raise fail(f"made by a newer metafs (store format {found}; this one reads {STORE_FORMAT})")
            head = doc
            counts.digest.update(line)
        elif "end" in doc:
            end = doc["end"] if isinstance(doc["end"], dict) else {}
        else:
            key, value, when = doc.get("k"), doc.get("v"), doc.get("t")
            if not isinstance(key, str) or not isinstance(value, str) or not key.endswith("/"):
                raise fail('a record needs "k" (a key ending in /) and "v" (text)')
            if not isinstance(when, int | float):
                raise fail('a record needs "t", the time of its last change')
            if items and key <= items[-1][0]:
                raise fail(f"key {key!r} out of order (after {items[-1][0]!r})")
            items.append((key, value, float(when)))
            counts.add(key, line)
        offset += len(line)
    if head is None:
        raise BackupError("the file is empty: not a metafs backup")
    if end is None:
        raise BackupError(f"the file is cut short after line {number} (byte {offset}): no end line")
    for name in ("records", "units", "tokens"):
        if end.get(name) != getattr(counts, name):
            raise BackupError(
                f"the end line says {end.get(name)} {name}, the file holds {getattr(counts, name)}"
            )
    if end.get("sha256") != counts.digest.hexdigest():
        raise BackupError("the checksum does not match: the file was changed after it was written")
    return Backup(
        int(head["revision"]), str(head.get("identity", "")), float(head.get("created", 0)), items, counts
    )


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    while line := stream.readline():
        yield line
