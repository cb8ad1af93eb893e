"""``metafs serve``: the server under uvicorn until SIGTERM/SIGINT, with the settings,
GC thresholds and signal handling a long-running server needs."""

from __future__ import annotations

import gc
import logging
import signal
from pathlib import Path
from types import FrameType

from .. import auth
from ..store import open_store
from ..store.etcd_gateway import EtcdAccess
from .app import MetadataServer
from .connections import ConnectionLimits, bounded_protocol, connection_bound, raise_fd_limit
from .settings import Settings
from .tls import ServerTLS, TLSFiles

log = logging.getLogger("metafs.server")


def event_loop(choice: str, tls: bool) -> str:
    """The loop ``--event-loop`` means. ``auto``: uvloop over TLS, asyncio's own loop in
    plaintext. In plaintext, under 500 busy keep-alive clients, uvloop served some seconds
    late (wrk -c500: p99 1.1-2.8 s and up to 63 timeouts; asyncio's 0.26-0.47 s), as it
    runs new reads ahead of requests under way. Over TLS it did not (p99 0.18-0.39 s;
    asyncio's 0.63-0.78 s), and asyncio's TLS transport is Python: 1.4x the server CPU
    of plaintext per small GET, against uvloop's ~1.05x (make bench, section network)."""
    if choice != "auto":
        return choice
    return "uvloop" if tls else "asyncio"


def serve(
    listen: str,
    store_url: str,
    settings: Settings | None = None,
    log_level: str = "info",
    operator_token_file: Path | None = None,
    compact_etcd: bool = True,
    tls: TLSFiles | None = None,
    etcd: EtcdAccess | None = None,
) -> None:
    """Run the server until SIGTERM/SIGINT."""
    import uvicorn

    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:8500")
    operator_digest, token_path = auth.operator_token(operator_token_file)
    if token_path is not None:
        log.info("operator token in %s", token_path)
    server = MetadataServer(open_store(store_url, compact_etcd, etcd), settings, operator_digest)
    live = None
    if tls is not None:

        def reloaded(ok: bool, expires: float) -> None:
            server.metrics.tls_reloads.labels("ok" if ok else "error").inc()
            server.metrics.tls_expiry.set(expires)

        live = ServerTLS(tls, reloaded)  # TLSError at start: the caller says it and exits
        server.metrics.tls_expiry.set(live.expires)
    fd_limit = raise_fd_limit()
    limits = ConnectionLimits(
        header_timeout=server.settings.header_timeout,
        max_connections=connection_bound(server.settings.max_connections, fd_limit),
        on_slow_headers=server.metrics.slow_headers.inc,
        on_refused=server.metrics.refused_connections.inc,
    )
    log.info("open-file limit %d, at most %d connections", fd_limit, limits.max_connections)
    loop = event_loop(server.settings.event_loop, live is not None)
    log.info("event loop %s", loop)
    config = uvicorn.Config(
        server.app,
        host=host.strip("[]"),
        port=int(port),
        loop=loop,
        http=bounded_protocol(limits),
        timeout_keep_alive=int(server.settings.keep_alive_timeout) or 1,
        backlog=4096,
        lifespan="on",
        access_log=False,
        log_level=log_level,
        log_config=None,  # logging is ours (metafs.logs): one format, tokens redacted
        timeout_graceful_shutdown=2,
        server_header=False,
        # X-Forwarded-* are refused, not believed (see _principal); and one middleware
        # less is one coroutine frame less on each of 10,000 parked long polls
        proxy_headers=False,
        ssl_context_factory=(lambda _config, _default: live.context) if live is not None else None,
    )
    log.info("store %s", store_url)
    # 10,000 parked long polls are about a million objects that live until answered. With
    # Python's default thresholds, full collections of all of them (up to 0.64 s each,
    # collecting nothing) came every few hundred ms while they parked, and one during
    # their wake-up (0.65-1.76 s for all 10,000 to be answered). A young generation of
    # 50,000 objects, whose survivors go straight to the old one, keeps every pause under
    # ~65 ms (make bench); old-generation collections still run when it grows by a quarter.
    gc.set_threshold(50_000, 1, 100)
    # uvicorn re-raises the signal that stopped it once it has shut down; a handler of
    # our own makes that a no-op, so a clean SIGTERM/SIGINT stop exits with status 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    # SIGHUP re-reads the TLS files (never stops the server, whose default it would be)
    signal.signal(
        signal.SIGHUP, lambda *_: live.reload() if live else log.warning("SIGHUP: no TLS to reload")
    )

    class _Uvicorn(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            server.stop_soon()

    try:
        _Uvicorn(config).run()
    except SystemExit:  # uvicorn exits 3 when the lifespan fails: say why, once, instead
        if server.startup_error is None:
            raise
    if server.startup_error is not None:
        raise server.startup_error
