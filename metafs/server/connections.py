"""Connections, bounded and timed: what uvicorn's HTTP protocol leaves to the application.

uvicorn closes an idle keep-alive connection (``timeout_keep_alive``) but gives a request
whose headers never finish all the time it likes, and accepts connections until the
process runs out of fds (then every client is reset). So, on top of its httptools
protocol:

- a request's headers must arrive within ``header_timeout`` seconds of its first byte, or
  of the connection being made: else ``408`` and the connection is closed (a body has its
  own timeout, ``--body-timeout``, in the API);
- past ``max_connections`` open, a new connection is answered ``503`` with
  ``Retry-After`` and closed at once, before anything is read.

And a response leaves in one write: uvicorn writes its head and its body apart, two
sends (two packets: asyncio sets ``TCP_NODELAY``) and, over TLS, two records; the
transport here holds a small write until the next one or the loop's next turn
(:class:`CoalescingTransport`).

Each bound is counted in ``/metrics``. Parked long polls are open connections too: the bound
must leave room for them (the default, 16,384, holds the 10,000 of ``make bench``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("metafs.server")

#: fds the process needs beside its connections (the store, logs, the event loop)
SPARE_FDS = 64


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float
    max_connections: int
    on_slow_headers: Callable[[], object] = lambda: None
    on_refused: Callable[[], object] = lambda: None


def _raw_answer(status: str, text: str, extra: bytes = b"") -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\n".encode()
        + extra
        + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )


class CoalescingTransport:
    """``transport``, but a small write is held until the next write (then both go as
    one) or the loop's next turn, whichever comes first: a response's head and body
    leave as one send and one TLS record (server CPU per small GET over TLS: see
    ``make bench``, section network). Everything else is the transport's own."""

    #: writes up to this many bytes may be held (a response's head is a few hundred)
    HOLD = 4096
    #: past this, a write is not copied to join a held one: both go, in order
    JOIN = 65536

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held = b""

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held, self._held = self._held, b""
        if held:
            if len(data) <= self.JOIN:
                self._transport.write(held + bytes(data))
                return
            self._transport.write(held)
        elif len(data) <= self.HOLD and not self._transport.is_closing():
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        self._transport.write(data)

    def flush(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def abort(self) -> None:
        self._held = b""
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + len(self._held)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def bounded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with ``limits`` (pass it as ``Config(http=...)``)."""
    refused = _raw_answer(
        "503 Service Unavailable",
        f"too many connections (over {limits.max_connections}); retry shortly\n",
        b"retry-after: 1\r\n",
    )
    slow = _raw_answer(
        "408 Request Timeout", f"the request headers did not arrive within {limits.header_timeout:g}s\n"
    )

    class BoundedHttpToolsProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(cast(asyncio.Transport, CoalescingTransport(transport, self.loop)))
            if len(self.connections) > limits.max_connections:
                limits.on_refused()
                transport.write(refused)
                transport.close()
                return
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(limits.header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            if self.cycle is not None and not self.cycle.response_complete:
                return  # a request is being answered (a long poll, say): not this timer's
            limits.on_slow_headers()
            self.transport.write(slow)
            self.transport.close()

    return BoundedHttpToolsProtocol


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one (systemd starts services at a
    soft 1,024); the limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, hard, exc)
    return int(soft)


def connection_bound(wanted: int, fd_limit: int) -> int:
    """``wanted`` connections, or fewer if the fd limit cannot hold them (and say so)."""
    room = max(fd_limit - SPARE_FDS, 16)
    if wanted > room:
        log.warning(
            "--max-connections %d is over what the open-file limit (%d) holds: %d", wanted, fd_limit, room
        )
        return room
    return wanted
