"""Stores behind the server: the interface (:mod:`.base`) and its backends."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .base import Conflict, Delete, Guard, Item, Op, Put, Snapshot, Store, StoreError, TooLarge, yielding

if TYPE_CHECKING:
    from .etcd_gateway import EtcdAccess

__all__ = [
    "Conflict",
    "Delete",
    "Guard",
    "Item",
    "Op",
    "Put",
    "Snapshot",
    "Store",
    "StoreError",
    "TooLarge",
    "default_store_url",
    "open_store",
    "yielding",
]


def default_store_url() -> str:
    """``$METAFS_STORE``, else a SQLite file in the usual data directory for this user."""
    if env := os.environ.get("METAFS_STORE"):
        return env
    if os.geteuid() == 0:
        base = Path("/var/lib/metafs")
    else:
        base = Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local/share")) / "metafs"
    return f"sqlite://{base / 'metafs.db'}"


def open_store(url: str, compact_etcd: bool = True, etcd: EtcdAccess | None = None) -> Store:
    """Open the store named by ``url``: ``sqlite:///path/to/file.db`` or
    ``etcd://host:port[,host:port...][/namespace]`` (namespace ``metafs`` by default).
    ``compact_etcd``: compaction compacts etcd's own history too (else etcd does it)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = parts.netloc + parts.path
        if not path:
            raise ValueError(f"store URL {url!r} has no file path (sqlite:///path/metafs.db)")
        from .sqlite import SqliteStore

        return SqliteStore(path)
    if parts.scheme in ("etcd", "etcd+https"):
        from .etcd import EtcdStore

        return EtcdStore(url, compact_etcd=compact_etcd, access=etcd)
    raise ValueError(
        f"unknown store URL {url!r}: expected sqlite:///path/metafs.db or"
        " etcd://HOST:PORT[,HOST:PORT...][/namespace] (etcd+https:// over TLS)"
    )
