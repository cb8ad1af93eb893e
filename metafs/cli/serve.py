"""``metafs serve``: its options, whose defaults are :class:`~metafs.server.settings.Settings`'."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import re
from pathlib import Path

from .. import heap, logs
from ..server.settings import Settings
from .options import (
    Failure,
    Subparsers,
    UsageError,
    add_command,
    duration,
    etcd_access,
    etcd_options,
    log_options,
    positive,
    seconds,
    size,
)

DEFAULTS = Settings()
log = logging.getLogger("metafs.server")


def datacenter_name(text: str) -> str:
    """A Consul datacenter name: letters, digits, ``-`` and ``_`` (as Consul takes them)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: use 1-64 letters, digits, - and _")
    return text


def loopback(listen: str) -> bool:
    """Whether ``--listen HOST:PORT`` binds to loopback only."""
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to any address


def cmd_serve(args: argparse.Namespace) -> int:
    tls_given = bool(args.tls_cert_file or args.tls_key_file)
    if tls_given and not (args.tls_cert_file and args.tls_key_file):
        raise UsageError("--tls-cert-file and --tls-key-file go together")
    if args.tls_client_ca_file and not tls_given:
        raise UsageError("--tls-client-ca-file needs --tls-cert-file and --tls-key-file")
    if not tls_given and not loopback(args.listen) and not args.insecure_plaintext:
        raise UsageError(
            f"--listen {args.listen} is not loopback: give --tls-cert-file and --tls-key-file"
            " (tokens and every container's identity would cross the network in the clear),"
            " or --insecure-plaintext to serve plain HTTP there anyway"
        )
    heap.use_system_allocator()  # before the server's stack is loaded: the process starts over
    from ..server.run import serve  # the server's stack is loaded by this command only
    from ..server.tls import TLSError, TLSFiles
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
        instance_bytes=args.instance_cache_size,
        history_retention=args.history_retention,
        metrics_auth=args.metrics_auth,
        datacenter=args.datacenter,
    )
    store = args.store or default_store_url()
    token_file = (
        Path(args.operator_token_file) if args.operator_token_file else default_operator_token_file(store)
    )
    if not tls_given and not loopback(args.listen):
        log.warning(
            "serving plain HTTP on %s (--insecure-plaintext): tokens cross the network in the clear",
            args.listen,
        )
    tls = (
        TLSFiles(
            Path(args.tls_cert_file),
            Path(args.tls_key_file),
            args.tls_client_ca_file and Path(args.tls_client_ca_file),
        )
        if tls_given
        else None
    )
    try:
        compact = args.etcd_compaction == "metafs"
        serve(args.listen, store, settings, args.log_level, token_file, compact, tls, etcd_access(args))
    except (StoreError, TLSError) as exc:  # a store that cannot be opened (or is newer); TLS files
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
        "--tls-cert-file",
        metavar="FILE",
        help="serve HTTPS only, with this certificate (PEM, its chain after it)",
    )
    p.add_argument("--tls-key-file", metavar="FILE", help="the certificate's private key (PEM)")
    p.add_argument(
        "--tls-client-ca-file",
        metavar="FILE",
        help="mutual TLS: answer only clients with a certificate signed by this CA (PEM);"
        " SIGHUP re-reads all three",
    )
    etcd_options(p)
    p.add_argument(
        "--metrics-auth",
        choices=("none", "token"),
        default=DEFAULTS.metrics_auth,
        help="none: /metrics is open (the default: no ids or values in it); token: it needs an"
        " operator or reader token (Authorization: Bearer)",
    )
    p.add_argument(
        "--datacenter",
        type=datacenter_name,
        default=DEFAULTS.datacenter,
        metavar="NAME",
        help="the datacenter Consul's catalog, health and agent reads say they are (default dc1)",
    )
    p.add_argument(
        "--insecure-plaintext",
        action="store_true",
        help="allow plain HTTP on an address that is not loopback (refused without it)",
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
        choices=("auto", "asyncio", "uvloop"),
        default=DEFAULTS.event_loop,
        help="auto: uvloop over TLS (its TLS is compiled, asyncio's is Python), asyncio's own"
        " loop in plaintext (where uvloop serves some clients seconds late when hundreds are"
        " busy at once) (default: %(default)s)",
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
        "--instance-cache-size",
        type=size,
        default=DEFAULTS.instance_bytes,
        metavar="BYTES",
        help="units decoded for the service catalog, HTTP SD and the web page's lists, estimated"
        " bytes (~1 KB a unit; default: %(default)s); past it, lists re-read the store",
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
