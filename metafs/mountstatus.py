"""The mount daemon's status endpoint: ``/status`` (JSON) and ``/metrics`` (Prometheus)
over a Unix socket beside its log, and optionally a loopback TCP port for Prometheus.

``metafs status MOUNTPOINT`` finds the socket from the mountpoint alone
(:func:`socket_path`). The endpoint is HTTP/1.1 parsed by h11 on trio: nothing here may
block the daemon's event loop, which also answers the filesystem.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import h11
import httpx
import trio

from .metrics import exposition, mount_registry

log = logging.getLogger("metafs.mount")

Status = Callable[[], Mapping[str, Any]]


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


async def serve(
    status: Status,
    unix_path: Path,
    tcp: tuple[str, int] | None = None,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``/status`` and ``/metrics`` on ``unix_path`` (0600: root's, or the daemon
    user's) and on ``tcp`` if given, until cancelled."""
    registry = mount_registry(status)

    def route(target: str) -> tuple[int, bytes, str]:
        path = target.split("?", 1)[0]
        if path == "/metrics":
            body, ctype = exposition(registry)
            return 200, body, ctype
        if path == "/status":
            return 200, (json.dumps(status(), indent=2) + "\n").encode(), "application/json"
        return 404, b"not found: try /status or /metrics\n", "text/plain"

    async def handle(stream: trio.abc.Stream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            with trio.move_on_after(5):
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        conn.receive_data(bytes(await stream.receive_some(65536)))
                        continue
                    if not isinstance(event, h11.Request):
                        return
                    code, body, ctype = route(event.target.decode("ascii", "replace"))
                    headers = [
                        ("content-type", ctype),
                        ("content-length", str(len(body))),
                        ("connection", "close"),
                    ]
                    await stream.send_all(conn.send(h11.Response(status_code=code, headers=headers)))
                    await stream.send_all(conn.send(h11.Data(data=body)))
                    await stream.send_all(conn.send(h11.EndOfMessage()))
                    return
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("status endpoint: %s", exc)
        finally:
            await stream.aclose()

    unix_path.parent.mkdir(parents=True, exist_ok=True)
    unix_path.unlink(missing_ok=True)
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    await sock.bind(str(unix_path))
    os.chmod(unix_path, 0o600)
    sock.listen(16)
    listeners: list[trio.SocketListener] = [trio.SocketListener(sock)]
    if tcp is not None:
        listeners += await trio.open_tcp_listeners(tcp[1], host=tcp[0])
    try:
        await trio.serve_listeners(handle, listeners, task_status=task_status)
    finally:
        unix_path.unlink(missing_ok=True)


def read(mountpoint: str, socket: str | None = None, timeout: float = 5.0) -> dict[str, Any]:
    """The status of the daemon serving ``mountpoint`` (raises OSError when none answers)."""
    path = Path(socket) if socket else socket_path(mountpoint)
    if not path.exists():
        raise FileNotFoundError(f"{mountpoint}: no metafs mount daemon status socket at {path}")
    transport = httpx.HTTPTransport(uds=str(path))
    try:
        with httpx.Client(transport=transport, timeout=timeout) as c:
            r = c.get("http://metafs/status")
            r.raise_for_status()
            data: dict[str, Any] = r.json()
            return data
    except httpx.HTTPError as exc:
        raise ConnectionError(f"{mountpoint}: the mount daemon did not answer on {path}: {exc}") from None


def summary(st: Mapping[str, Any]) -> str:
    """``metafs status``: the status as a few lines for a person."""
    mode = f"unit {st['unit']}" if st["unit"] else "host mode"
    servers = st["servers"]
    lines = [
        f"mountpoint  {st['mountpoint']} ({mode})",
        f"server      {st['server']}"
        + (f"  (of {len(servers)}: {', '.join(servers)})" if len(servers) > 1 else ""),
    ]
    if st["stale"]:
        lines.append(
            f"state       STALE for {st['stale_seconds']:.1f}s: {st['last_error'] or 'server unreachable'}"
        )
    else:
        ago = f", last change applied {time.time() - st['last_change']:.1f}s ago" if st["last_change"] else ""
        lines.append(f"state       fresh (revision {st['revision']}{ago})")
    units = f"{st['units_listed']} listed, " if not st["unit"] else ""
    lines.append(f"units       {units}{st['views_cached']} views cached")
    lines.append(
        f"activity    {st['fetches']} fetches ({st['fetch_errors']} failed), {st['watch_answers']} watch"
        f" answers, {st['invalidations']} invalidations"
    )
    up = time.time() - st["started"]
    lines.append(f"daemon      pid {st['pid']}, up {up:.0f}s, RSS {st['rss_bytes'] / 2**20:.1f} MiB")
    return "\n".join(lines)
