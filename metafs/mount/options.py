"""What a mount is asked to be: the options of ``metafs mount``, whose defaults the CLI
reads from here (a module of its own: the CLI reads it without loading pyfuse3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..client_tls import TLSOptions


@dataclass(frozen=True)
class MountOptions:
    mountpoint: str
    servers: str
    unit: str | None = None
    token: str | None = None
    fetch_timeout: float = 5.0
    cache_timeout: float = 300.0
    poll_wait: float = 55.0
    view_ttl: float = 600.0  # host mode: a view nothing read for this long is dropped (seconds)
    cache_size: int = 64 << 20  # host mode: views kept, in bytes (estimated; whole services)
    anchors: str | None = None  # host mode: keep ANCHORS/<unit> bound (see anchors.py)
    status_socket: str | None = None  # default: status.socket_path(mountpoint)
    metrics_listen: tuple[str, int] | None = None  # also serve /metrics on this TCP address
    tls: TLSOptions = field(default_factory=TLSOptions)  # https servers: their CA, a client certificate
