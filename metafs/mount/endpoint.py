"""The mount daemon's status endpoint: ``/status`` (JSON) and ``/metrics`` (Prometheus)
over a Unix socket (0600), and optionally a loopback TCP port for Prometheus.

HTTP/1.1 parsed by h11 on trio: nothing here may block the daemon's event loop, which
also answers the filesystem.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import h11
import trio

from .status import Status

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

log = logging.getLogger("metafs.mount")


async def serve(
    status: Status,
    unix_path: Path,
    tcp: tuple[str, int] | None = None,
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer ``/status`` and ``/metrics`` on ``unix_path`` (0600: root's, or the daemon
    user's) and on ``tcp`` if given, until cancelled."""
    registry: CollectorRegistry | None = None

    def route(target: str) -> tuple[int, bytes, str]:
        nonlocal registry
        path = target.split("?", 1)[0]
        if path == "/metrics":
            # prometheus-client is loaded at the first scrape, not at start: ~20 ms of a
            # restarted daemon's way to its first answer
            from .metrics import exposition, mount_registry

            registry = registry or mount_registry(status)
            body, ctype = exposition(registry)
            return 200, body, ctype
        if path == "/status":
            return 200, (json.dumps(status().as_json(), indent=2) + "\n").encode(), "application/json"
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
