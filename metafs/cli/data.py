"""The commands that read and write metadata through the server: ``get``, ``ls``,
``put``, ``delete``, ``load``, ``wait`` and ``token``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .options import KEY_HELP, Failure, Subparsers, add_command, client, client_options, read_value

EXIT_TIMEOUT = 124


def cmd_get(args: argparse.Namespace) -> int:
    with client(args) as c:
        ans = c.get(args.key, args.unit, as_json=args.json)
    if args.json:
        print(json.dumps(ans.json(), indent=2, sort_keys=True))
    else:
        sys.stdout.buffer.write(ans.body)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    # as typed: a directory lists with or without its "/", a value only without (a "/"
    # after a value is a 404, as ls(1) says "Not a directory")
    with client(args) as c:
        ans = c.get(args.key, args.unit)
    if ans.headers.get("x-metafs-kind") == "value":  # like ls(1) on a file: its name
        print(args.key.rstrip("/").rsplit("/", 1)[-1])
    else:
        sys.stdout.buffer.write(ans.body)
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    ctype = "application/json" if args.json else "application/yaml" if args.yaml else "text/plain"
    with client(args) as c:
        ans = c.put(args.key, read_value(args.value), ctype, args.unit)
    print(ans.headers.get("x-metafs-revision", ""))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with client(args) as c:
        ans = c.delete(args.key, args.unit)
    print(ans.headers.get("x-metafs-revision", ""))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    if args.file == "-":
        doc, ctype = sys.stdin.buffer.read(), "application/yaml"
    else:
        try:
            doc = Path(args.file).read_bytes()
        except OSError as exc:
            raise Failure(f"cannot read {args.file}: {exc.strerror}") from None
        ctype = "application/json" if args.file.endswith(".json") else "application/yaml"
    with client(args) as c:
        result = c.load(doc, ctype).json()
    print(f"loaded {args.file}: revision {result['revision']}, {result['changed']} records changed")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    with client(args) as c:
        ans = c.wait(args.key, args.timeout, args.unit)
    if ans is None:
        print(f"metafs: wait {args.key}: timed out after {args.timeout:g}s", file=sys.stderr)
        return EXIT_TIMEOUT
    sys.stdout.buffer.write(ans.body)
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    with client(args) as c:
        if args.action == "create":
            if args.kind in ("host", "unit") and not args.subject:
                raise Failure(f"a {args.kind} token needs a subject: the {args.kind} it is for")
            data = c.create_token(args.kind, args.subject or "")
            print(data["token"])
            print(f"id {data['id']} ({data['kind']} {data['subject']})".rstrip(), file=sys.stderr)
        elif args.action == "list":
            for tid, info in sorted(c.tokens().items()):
                print(f"{tid}  {info['kind']:<8}  {info['subject'] or '-':<40}  {info['created']}")
        else:
            c.revoke_token(args.id)
    return 0


def add_commands(sub: Subparsers) -> None:
    p = add_command(sub, "load", cmd_load, "load a YAML or JSON document, all or nothing")
    p.add_argument("file", metavar="FILE", help="the document, or - for standard input")
    client_options(p)

    p = add_command(sub, "get", cmd_get, "print a value, or a directory's listing")
    p.add_argument("key", metavar="KEY", help=KEY_HELP)
    p.add_argument("--json", action="store_true", help="print the whole subtree as JSON")
    client_options(p)

    p = add_command(sub, "ls", cmd_ls, "list a directory")
    p.add_argument("key", metavar="KEY", nargs="?", default="", help=KEY_HELP)
    client_options(p)

    p = add_command(sub, "put", cmd_put, "write a value or a record (operator)")
    p.add_argument("key", metavar="KEY", help=KEY_HELP)
    p.add_argument("value", metavar="VALUE", help="the value; - reads standard input, @FILE reads FILE")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--json", action="store_true", help="VALUE is JSON")
    kind.add_argument("--yaml", action="store_true", help="VALUE is YAML")
    client_options(p)

    p = add_command(
        sub, "delete", cmd_delete, "delete a value, or a record with everything below it (operator)"
    )
    p.add_argument("key", metavar="KEY", help=KEY_HELP)
    client_options(p)

    p = add_command(
        sub,
        "wait",
        cmd_wait,
        "block until KEY exists (if it does not) or changes (if it does), then print it",
    )
    p.add_argument("key", metavar="KEY", help=KEY_HELP)
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up after this long, exit 124 (default: %(default)s)",
    )
    client_options(p)

    p = add_command(sub, "token", cmd_token, "mint, list and revoke tokens (operator)")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tsub.add_parser("create", help="mint a token; it is printed once and only its hash is kept")
    t.add_argument("--kind", required=True, choices=["operator", "host", "unit", "reader"])
    t.add_argument(
        "--subject",
        help="the host (host tokens), the unit id (unit tokens), the one account (reader tokens)",
    )
    client_options(t)
    t = tsub.add_parser("list", help="list token ids, kinds and subjects")
    client_options(t)
    t = tsub.add_parser("revoke", help="revoke a token by its id")
    t.add_argument("id", metavar="ID")
    client_options(t)
