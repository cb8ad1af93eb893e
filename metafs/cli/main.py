"""The ``metafs`` command line: serve, load, get, ls, put, delete, wait, mount, umount,
status, token, and for container engines oci-hook, runtime and install-hook.

Exit status: 0 on success; 1 with a one-line message on stderr when something failed
(server unreachable, not found, invalid input); 2 for a usage error; 124 when ``wait``
timed out (like ``timeout(1)``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from ..client import ClientError
from . import containers, data, mount, serve, store
from .options import Failure, UsageError

EPILOG = """examples:
  metafs serve --store sqlite:///var/lib/metafs/metafs.db     the server (or etcd://h1:2379,h2:2379)
  metafs load cluster.yaml                                    create or replace, all or nothing
  metafs get self/cardinal_value --unit $UNIT                 one value of a unit's view
  metafs mount /run/metafs/units --anchors /run/metafs/anchors   every unit of this host as files
  metafs status /run/metafs/units                             is that mount fresh?
  metafs backup /var/backups/metafs/now.jsonl                 a consistent copy, while writers go on

environment:
  METADATA_CONNECTION_URL  server URL(s) for clients      METAFS_TOKEN, METAFS_TOKEN_FILE  the token
  DEPLOYMENT_UNIT_ID       the unit for self/... keys     METAFS_STORE, METAFS_LISTEN      serve defaults
  METAFS_OPERATOR_TOKEN    the server's bootstrap operator token

`metafs COMMAND --help` tells more; docs/ has the file layout, the HTTP API and the operations guide."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metafs",
        description="Container metadata as files: a metadata server, its client, and a FUSE filesystem.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"metafs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve.add_commands(sub)
    data.add_commands(sub)
    store.add_commands(sub)
    mount.add_commands(sub)
    containers.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["runtime"] and argv[1:2] not in (["--help"], ["-h"]):
        return containers.runtime(argv[1:])  # runc's command line follows: not argparse's
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ClientError, Failure, ValueError) as exc:
        print(f"metafs: {args.command}: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"metafs: {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
