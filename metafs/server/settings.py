"""The server's limits and bounds; each one is a ``metafs serve`` option, whose default
is read from here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Settings:
    max_wait: float = 600.0  # a long poll never waits longer than this (seconds)
    default_wait: float = 300.0  # how long ``?index=`` waits when ``wait`` is not given
    max_body: int = 16 * 1024 * 1024  # bytes in a write or a load document
    max_watch: int = 10_000  # units in one /v1/watch
    body_timeout: float = 30.0  # a request body must arrive within this (seconds)
    header_timeout: float = 10.0  # a request's headers must arrive within this (see connections.py)
    keep_alive_timeout: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 16_384  # open at once; past it, 503 (parked long polls count)
    event_loop: str = "auto"  # uvloop over TLS, asyncio's own loop in plaintext (run.py)
    max_labels: int = 1_000  # labels on one record (see model.Limits)
    max_metadata_keys: int = 10_000  # keys and items in one service's metadata
    max_view_bytes: int = 64 << 20  # stored JSON of one service's units (each view carries it)
    answer_cache: int = 4096  # read answers kept until the next commit (0: none; see answers.py)
    answer_bytes: int = 16 << 20  # ... and their bodies' total size
    view_bytes: int = 32 << 20  # built service views kept, estimated (see catalog/views.py)
    rendered_bytes: int = 16 << 20  # rendered whole unit views kept (see render.py)
    #: units decoded as service instances, kept for the catalog, HTTP SD and /v1/fleet
    #: (estimated; see catalog/discovery.py): 96 MiB holds ~100,000 units
    instance_bytes: int = 96 << 20
    #: tombstones of deletes older than this are compacted away (seconds; see compaction.py)
    history_retention: float = 3600.0
    #: ``none``: /metrics is open (it names no ids or values); ``token``: it needs an
    #: operator or reader token (``Authorization: Bearer``, as Prometheus sends it)
    metrics_auth: str = "none"
    #: the datacenter Consul's catalog reads say they are (``serve --datacenter``)
    datacenter: str = "dc1"
