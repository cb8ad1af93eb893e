"""What a mount daemon is doing (:class:`MountStatus`), where it answers
(:func:`socket_path`: ``metafs status MOUNTPOINT`` finds it from the mountpoint alone),
and reading it from there (:func:`read`, :func:`summary`)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("metafs.mount")


@dataclass(frozen=True, slots=True)
class MountStatus:
    """What a mount daemon is doing: ``/status`` as JSON, ``metafs status``, the metrics."""

    mountpoint: str
    unit: str | None
    servers: list[str]
    server: str  # the one that answered last
    stale: bool  # the server is unreachable: cached views are served as they were
    stale_seconds: float
    last_error: str
    revision: int  # the store revision the watcher has caught up to
    last_change: float  # when the watcher last applied a change (time.time(); 0: never)
    views_cached: int
    views_bytes: int  # what the cached views weigh (estimated)
    evictions: int  # views dropped while their unit exists (idle, over --cache-size)
    inodes: int  # inodes the kernel holds (statfs reports the same)
    units_listed: int
    fetches: int
    fetch_errors: int
    watch_answers: int
    invalidations: int
    pid: int
    started: float
    rss_bytes: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MountStatus:
        """From a daemon's ``/status`` (fields another version added are left out)."""
        return cls(**{f.name: data[f.name] for f in fields(cls)})


Status = Callable[[], MountStatus]


def socket_path(mountpoint: str) -> Path:
    """Where the daemon serving ``mountpoint`` listens: ``/run/metafs/status/`` as root,
    else ``$XDG_RUNTIME_DIR/metafs/`` (or ``~/.cache/metafs/``)."""
    if os.geteuid() == 0:
        base = Path("/run/metafs/status")
    else:
        runtime = os.environ.get("XDG_RUNTIME_DIR")
        base = Path(runtime) / "metafs" if runtime else Path.home() / ".cache" / "metafs"
    name = resolve(mountpoint).strip("/").replace("/", "-") or "root"
    return base / f"{name}.sock"


def resolve(mountpoint: str) -> str:
    """The mountpoint's real path, without touching the mount itself (whose daemon may be
    hung, or be the very thread asking)."""
    path = os.path.abspath(mountpoint)
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def read(mountpoint: str, socket: str | None = None, timeout: float = 5.0) -> MountStatus:
    """The status of the daemon serving ``mountpoint`` (raises OSError when none answers)."""
    path = Path(socket) if socket else socket_path(mountpoint)
    if not path.exists():
        raise FileNotFoundError(f"{mountpoint}: no metafs mount daemon status socket at {path}")
    transport = httpx.HTTPTransport(uds=str(path))
    try:
        with httpx.Client(transport=transport, timeout=timeout) as c:
            r = c.get("http://metafs/status")
            r.raise_for_status()
            return MountStatus.from_json(r.json())
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
        raise ConnectionError(f"{mountpoint}: the mount daemon did not answer on {path}: {exc}") from None


def summary(st: MountStatus) -> str:
    """``metafs status``: the status as a few lines for a person."""
    mode = f"unit {st.unit}" if st.unit else "host mode"
    lines = [
        f"mountpoint  {st.mountpoint} ({mode})",
        f"server      {st.server}"
        + (f"  (of {len(st.servers)}: {', '.join(st.servers)})" if len(st.servers) > 1 else ""),
    ]
    if st.stale:
        lines.append(
            f"state       STALE for {st.stale_seconds:.1f}s: {st.last_error or 'server unreachable'}"
        )
    else:
        ago = f", last change applied {time.time() - st.last_change:.1f}s ago" if st.last_change else ""
        lines.append(f"state       fresh (revision {st.revision}{ago})")
    units = f"{st.units_listed} listed, " if not st.unit else ""
    lines.append(
        f"units       {units}{st.views_cached} views cached (~{st.views_bytes / 2**20:.1f} MiB),"
        f" {st.evictions} evicted, {st.inodes} inodes"
    )
    lines.append(
        f"activity    {st.fetches} fetches ({st.fetch_errors} failed), {st.watch_answers} watch"
        f" answers, {st.invalidations} invalidations"
    )
    up = time.time() - st.started
    lines.append(f"daemon      pid {st.pid}, up {up:.0f}s, RSS {st.rss_bytes / 2**20:.1f} MiB")
    return "\n".join(lines)
