"""What several commands share: the client options (server, token, unit), logging
options, reading a token or a value, and the one-line failure every command exits with."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeAlias

from ..client import NO_SERVER, MetadataClient
from ..client_tls import TLSOptions
from ..store.etcd_gateway import EtcdAccess


class Failure(Exception):
    """A one-line error for stderr and exit status 1."""


class UsageError(Exception):
    """Options that do not go together: a one-line error and exit status 2 (argparse's)."""


KEY_HELP = (
    "a seed path (5/test1/s4/UNIT/hostname), a path in the unit's view (self/hostname, "
    "service/all_hosts/), or a document path (accounts/5/stacks/test1, hosts/node-a)"
)


def client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--server",
        default=os.environ.get("METADATA_CONNECTION_URL"),
        metavar="URL[,URL...]",
        help="metadata server(s), tried in order (default: $METADATA_CONNECTION_URL)",
    )
    p.add_argument(
        "--token", default=os.environ.get("METAFS_TOKEN"), help="API token (default: $METAFS_TOKEN)"
    )
    p.add_argument(
        "--token-file",
        default=os.environ.get("METAFS_TOKEN_FILE"),
        metavar="PATH",
        help="read the token from a file (default: $METAFS_TOKEN_FILE)",
    )
    p.add_argument(
        "--unit",
        default=os.environ.get("DEPLOYMENT_UNIT_ID"),
        metavar="UNIT_ID",
        help="the unit whose view self/, service/, stack/ keys read (default: $DEPLOYMENT_UNIT_ID)",
    )
    p.add_argument("--http-timeout", type=float, default=10.0, metavar="SECONDS", help=argparse.SUPPRESS)
    tls_options(p)


def tls_options(p: argparse.ArgumentParser) -> None:
    """How to reach https servers: their CA, and a client certificate for mutual TLS."""
    p.add_argument(
        "--ca-file",
        default=os.environ.get("METAFS_CA_FILE"),
        metavar="PEM",
        help="trust https servers signed by this CA (default: $METAFS_CA_FILE, else the system's CAs)",
    )
    p.add_argument(
        "--cert-file",
        default=os.environ.get("METAFS_CERT_FILE"),
        metavar="PEM",
        help="client certificate for servers that ask for one (default: $METAFS_CERT_FILE)",
    )
    p.add_argument(
        "--key-file",
        default=os.environ.get("METAFS_KEY_FILE"),
        metavar="PEM",
        help="its private key (default: $METAFS_KEY_FILE)",
    )


def etcd_options(p: argparse.ArgumentParser) -> None:
    """How to reach a secured etcd (``--store etcd+https://...``)."""
    p.add_argument("--etcd-ca-file", metavar="PEM", help="the CA of etcd's certificates")
    p.add_argument(
        "--etcd-cert-file", metavar="PEM", help="a client certificate for etcd (no CN with users on)"
    )
    p.add_argument("--etcd-key-file", metavar="PEM", help="its private key")
    p.add_argument("--etcd-user", metavar="NAME", help="an etcd user (its password: $METAFS_ETCD_PASSWORD)")
    p.add_argument("--etcd-password-file", metavar="PATH", help="read the etcd user's password from a file")


def etcd_access(args: argparse.Namespace) -> EtcdAccess:
    if bool(args.etcd_cert_file) != bool(args.etcd_key_file):
        raise Failure("--etcd-cert-file and --etcd-key-file go together")
    password = os.environ.get("METAFS_ETCD_PASSWORD")
    if args.etcd_password_file:
        try:
            password = Path(args.etcd_password_file).read_text().strip()
        except OSError as exc:
            raise Failure(f"--etcd-password-file {args.etcd_password_file}: {exc.strerror}") from None
    if args.etcd_user and not password:
        raise Failure("--etcd-user needs a password: $METAFS_ETCD_PASSWORD or --etcd-password-file")
    return EtcdAccess(args.etcd_ca_file, args.etcd_cert_file, args.etcd_key_file, args.etcd_user, password)


def tls_of(args: argparse.Namespace) -> TLSOptions:
    if bool(args.cert_file) != bool(args.key_file):
        raise Failure("--cert-file and --key-file go together")
    return TLSOptions(args.ca_file, args.cert_file, args.key_file)


def log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="one line per event: text, or JSON objects (time, level, logger, message); tokens are"
        " never written (default: %(default)s)",
    )


def servers(args: argparse.Namespace) -> str:
    """``--server``, which every client command needs."""
    if not args.server:
        raise Failure(NO_SERVER)
    return str(args.server)


def token(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise Failure(f"cannot read token file {args.token_file}: {exc.strerror}") from None
    return None


def client(args: argparse.Namespace) -> MetadataClient:
    return MetadataClient(servers(args), token=token(args), timeout=args.http_timeout, tls=tls_of(args))


def read_value(value: str) -> bytes:
    """A value given on the command line: as it is, ``-`` for standard input, ``@FILE``."""
    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_bytes()
        except OSError as exc:
            raise Failure(f"cannot read {value[1:]}: {exc.strerror}") from None
    return value.encode()


def size(text: str) -> int:
    """A byte count or number of entries given as an option: a whole number >= 0."""
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number >= 0")
    return int(text)


def positive(text: str) -> int:
    """A count of at least 1 (an argparse type)."""
    n = size(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number of at least 1")
    return n


def seconds(text: str) -> float:
    """A duration in seconds given as an option: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number of seconds > 0")
    return value


def duration(text: str) -> float:
    """A duration given as an option: ``30s``, ``5m``, ``1h``, ``2d`` or seconds (> 0)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
    try:
        return seconds(number) * unit
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration like 30s, 5m, 1h or 2d") from None


def host_port(value: str, flag: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise Failure(f"{flag} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9851")
    return host.strip("[]"), int(port)


Command = Callable[[argparse.Namespace], int]
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(sub: Subparsers, name: str, func: Command, help: str) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help, description=help)
    p.set_defaults(func=func)
    return p
