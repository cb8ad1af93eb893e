"""``metafs serve``: its options, whose defaults are :class:`~metafs.server.settings.Settings`'."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from .. import heap, logs
from ..server.settings import Settings
from .options import Failure, Subparsers, add_command, duration, log_options, positive, seconds, size

DEFAULTS = Settings()


def cmd_serve(args: argparse.Namespace) -> int:
    heap.use_system_allocator()  # before the server's stack is loaded: the process starts over
    from ..server.run import serve  # the server's stack is loaded by this command only
    from ..store import StoreError, default_store_url

    logs.setup(args.log_level, args.log_format)
    settings = Settings(
        max_wait=args.max_wait,
        default_wait=min(args.max_wait, DEFAULTS.default_wait),
        max_body=args.max_body,
        body_timeout=args.body_timeout,
        header_timeout=args.header_timeout,
        keep_alive_timeout=args.keep_alive_timeout,
        max_connections=args.max_connections,
        max_labels=args.max_labels,
        event_loop=args.event_loop,
        max_metadata_keys=args.max_metadata_keys,
        max_view_bytes=args.max_view_bytes,
        answer_cache=args.answer_cache,
        answer_bytes=args.answer_cache_size,
        view_bytes=args.view_cache_size,
        rendered_bytes=args.render_cache_size,
        history_retention=args.history_retention,
    )
    store = args.store or default_store_url()
    token_file = (
        Path(args.operator_token_file) if args.operator_token_file else default_operator_token_file(store)
    )
    try:
        serve(args.listen, store, settings, args.log_level, token_file, args.etcd_compaction == "metafs")
    except StoreError as exc:  # a store that cannot be opened, or of a newer format
        raise Failure(f"serve: {exc}") from None
    return 0


def default_operator_token_file(store_url: str) -> Path:
    """Beside the SQLite file; for other stores, /etc/metafs/operator.token."""
    if store_url.startswith("sqlite://"):
        return Path(store_url.removeprefix("sqlite://")).parent / "operator.token"
    return Path("/etc/metafs/operator.token")


def add_commands(sub: Subparsers) -> None:
    p = add_command(sub, "serve", cmd_serve, "run the metadata server")
    p.add_argument(
        "--listen",
        default=os.environ.get("METAFS_LISTEN", "127.0.0.1:8500"),
        metavar="HOST:PORT",
        help="address to listen on (default: $METAFS_LISTEN, else %(default)s)",
    )
    p.add_argument(
        "--store",
        metavar="URL",
        help="sqlite:///path/metafs.db, or etcd://HOST:PORT[,HOST:PORT...][/namespace] for an etcd v3"
        " cluster shared by several servers (default: $METAFS_STORE, else /var/lib/metafs/metafs.db as root)",
    )
    p.add_argument(
        "--history-retention",
        type=duration,
        default=DEFAULTS.history_retention,
        metavar="DURATION",
        help="keep the tombstones of deletes this long (30s, 5m, 1h, 2d; default 1h): a client"
        " away longer refetches whole (410 Gone) instead of asking what changed",
    )
    p.add_argument(
        "--etcd-compaction",
        choices=("metafs", "etcd"),
        default="metafs",
        help="who compacts etcd's own history: metafs (at the revision it saw a retention ago,"
        " the default) or etcd itself (its --auto-compaction-*); metafs always compacts its tombstones",
    )
    p.add_argument(
        "--max-wait",
        type=float,
        default=DEFAULTS.max_wait,
        metavar="SECONDS",
        help="longest long poll (default: %(default)s)",
    )
    p.add_argument(
        "--max-body",
        type=int,
        default=DEFAULTS.max_body,
        metavar="BYTES",
        help="largest write or load document (default: %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULTS.body_timeout,
        metavar="SECONDS",
        help="a request body must arrive within this (default: %(default)s)",
    )
    p.add_argument(
        "--header-timeout",
        type=seconds,
        default=DEFAULTS.header_timeout,
        metavar="SECONDS",
        help="a request's headers must arrive within this, else 408 (default: %(default)s)",
    )
    p.add_argument(
        "--keep-alive-timeout",
        type=seconds,
        default=DEFAULTS.keep_alive_timeout,
        metavar="SECONDS",
        help="an idle keep-alive connection is closed after this (default: %(default)s)",
    )
    p.add_argument(
        "--max-connections",
        type=positive,
        default=DEFAULTS.max_connections,
        metavar="N",
        help="connections open at once, parked long polls included; past it 503 (default: %(default)s)",
    )
    p.add_argument(
        "--event-loop",
        choices=("asyncio", "uvloop"),
        default=DEFAULTS.event_loop,
        help="uvloop answers more requests a second, but serves some clients seconds late when"
        " hundreds are busy at once (default: %(default)s)",
    )
    p.add_argument(
        "--max-labels",
        type=positive,
        default=DEFAULTS.max_labels,
        metavar="N",
        help="labels on one record; a write with more is refused (default: %(default)s)",
    )
    p.add_argument(
        "--max-metadata-keys",
        type=positive,
        default=DEFAULTS.max_metadata_keys,
        metavar="N",
        help="keys and list items in one service's metadata, at every depth (default: %(default)s)",
    )
    p.add_argument(
        "--max-view-bytes",
        type=positive,
        default=DEFAULTS.max_view_bytes,
        metavar="BYTES",
        help="the stored JSON of one service's units, which every view of the service carries;"
        " a write past it is refused (default: %(default)s)",
    )
    p.add_argument(
        "--answer-cache",
        type=size,
        default=DEFAULTS.answer_cache,
        metavar="ENTRIES",
        help="read answers kept and reused until the next commit; 0 turns this off"
        " (default: %(default)s; SQLite store only)",
    )
    p.add_argument(
        "--answer-cache-size",
        type=size,
        default=DEFAULTS.answer_bytes,
        metavar="BYTES",
        help="... and at most this many bytes of them (default: %(default)s)",
    )
    p.add_argument(
        "--view-cache-size",
        type=size,
        default=DEFAULTS.view_bytes,
        metavar="BYTES",
        help="built service views kept for the next request, estimated bytes; least recently used"
        " out first (default: %(default)s)",
    )
    p.add_argument(
        "--render-cache-size",
        type=size,
        default=DEFAULTS.rendered_bytes,
        metavar="BYTES",
        help="rendered whole unit views kept (one per unit and format), bytes (default: %(default)s)",
    )
    log_options(p)
    p.add_argument(
        "--operator-token-file",
        metavar="PATH",
        help="the operator token, made (0600) if missing (default: operator.token beside the SQLite file;"
        " $METAFS_OPERATOR_TOKEN overrides)",
    )
