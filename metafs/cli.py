"""The ``metafs`` command line: serve, load, get, ls, put, delete, wait, mount, umount, token.

Exit status: 0 on success; 1 with a one-line message on stderr when something failed
(server unreachable, not found, invalid input); 2 for a usage error; 124 when ``wait``
timed out (like ``timeout(1)``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__, logs
from .client import ClientError, MetadataClient

EXIT_TIMEOUT = 124


class Failure(Exception):
    """A one-line error for stderr and exit status 1."""


def _token(args: argparse.Namespace) -> str | None:
    if args.token:
        return str(args.token)
    if args.token_file:
        try:
            return Path(args.token_file).read_text().strip()
        except OSError as exc:
            raise Failure(f"cannot read token file {args.token_file}: {exc.strerror}") from None
    return None


def _client(args: argparse.Namespace) -> MetadataClient:
    if not args.server:
        raise Failure("no server given: use --server URL or set METADATA_CONNECTION_URL")
    return MetadataClient(args.server, token=_token(args), timeout=args.http_timeout)


def _read_value(value: str) -> bytes:
    if value == "-":
        return sys.stdin.buffer.read()
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_bytes()
        except OSError as exc:
            raise Failure(f"cannot read {value[1:]}: {exc.strerror}") from None
    return value.encode()


def cmd_get(args: argparse.Namespace) -> int:
    with _client(args) as c:
        ans = c.get(args.key, args.unit, as_json=args.json)
    if args.json:
        print(json.dumps(ans.json(), indent=2, sort_keys=True))
    else:
        sys.stdout.buffer.write(ans.body)
    return 0


def cmd_ls(args: argparse.Namespace) -> int:
    key = args.key if args.key.endswith("/") or not args.key else args.key + "/"
    with _client(args) as c:
        ans = c.get(key, args.unit)
    if ans.headers.get("x-metafs-kind") == "value":  # like ls(1) on a file: its name
        print(args.key.rstrip("/").rsplit("/", 1)[-1])
    else:
        sys.stdout.buffer.write(ans.body)
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    ctype = "application/json" if args.json else "application/yaml" if args.yaml else "text/plain"
    with _client(args) as c:
        ans = c.put(args.key, _read_value(args.value), ctype, args.unit)
    print(ans.headers.get("x-metafs-revision", ""))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as c:
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
    with _client(args) as c:
        ans = c.request(
            "POST", "/v1/load", content=doc, headers={"Content-Type": ctype}, params={"format": "json"}
        )
    result = ans.json()
    print(f"loaded {args.file}: revision {result['revision']}, {result['changed']} records changed")
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    with _client(args) as c:
        ans = c.wait(args.key, args.timeout, args.unit)
    if ans is None:
        print(f"metafs: wait {args.key}: timed out after {args.timeout:g}s", file=sys.stderr)
        return EXIT_TIMEOUT
    sys.stdout.buffer.write(ans.body)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server import Settings, serve
    from .store import default_store_url

    logs.setup(args.log_level, args.log_format)
    settings = Settings(
        max_wait=args.max_wait,
        default_wait=min(args.max_wait, 300.0),
        max_body=args.max_body,
        body_timeout=args.body_timeout,
        answer_cache=args.answer_cache,
    )
    store = args.store or default_store_url()
    token_file = (
        Path(args.operator_token_file) if args.operator_token_file else default_operator_token_file(store)
    )
    serve(args.listen, store, settings, args.log_level, token_file)
    return 0


def default_operator_token_file(store_url: str) -> Path:
    """Beside the SQLite file; for other stores, /etc/metafs/operator.token."""
    if store_url.startswith("sqlite://"):
        return Path(store_url.removeprefix("sqlite://")).parent / "operator.token"
    return Path("/etc/metafs/operator.token")


def cmd_token(args: argparse.Namespace) -> int:
    with _client(args) as c:
        if args.action == "create":
            if args.kind != "operator" and not args.subject:
                raise Failure(f"a {args.kind} token needs a subject: the {args.kind} it is for")
            ans = c.request(
                "POST", "/v1/tokens/", json={"kind": args.kind, "subject": args.subject or ""}, ok=(201,)
            )
            data = ans.json()
            print(data["token"])
            print(f"id {data['id']} ({data['kind']} {data['subject']})".rstrip(), file=sys.stderr)
        elif args.action == "list":
            for tid, info in sorted(
                c.request("GET", "/v1/tokens/", params={"format": "json"}).json().items()
            ):
                print(f"{tid}  {info['kind']:<8}  {info['subject'] or '-':<40}  {info['created']}")
        else:
            c.request("DELETE", f"/v1/tokens/{args.id}")
    return 0


def cmd_mount(args: argparse.Namespace) -> int:
    from . import mount

    if not args.server:
        raise Failure("no server given: use --server URL or set METADATA_CONNECTION_URL")
    if args.foreground:
        return _mount_foreground(args)
    log_file = Path(args.log_file) if args.log_file else mount.default_log_file(args.mountpoint)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    cmd = [sys.executable, "-m", "metafs.cli", "mount", args.mountpoint, "--foreground"]
    cmd += ["--ready-fd", str(write_fd), "--server", args.server, "--log-file", str(log_file)]
    cmd += ["--fetch-timeout", str(args.fetch_timeout), "--cache-timeout", str(args.cache_timeout)]
    cmd += ["--log-level", args.log_level, "--log-format", args.log_format]
    for flag, value in (("--status-socket", args.status_socket), ("--metrics-listen", args.metrics_listen)):
        if value:
            cmd += [flag, value]
    if args.unit:
        cmd += ["--unit", args.unit]
    if args.anchors:
        cmd += ["--anchors", args.anchors]
    env = dict(os.environ)
    token = _token(args)
    if token:
        env["METAFS_TOKEN"] = token  # not on the command line, where ps would show it
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd,
            pass_fds=(write_fd,),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env=env,
        )
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        message = ready.readline().decode().strip()  # EOF if the daemon dies first
    if message == "ok":
        return 0
    if not message:
        code = proc.wait()
        message = f"the mount daemon exited with status {code}; see {log_file}"
    raise Failure(message.removeprefix("error: "))


def _mount_foreground(args: argparse.Namespace) -> int:
    import trio

    from . import mount

    handler = logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler()
    fmt = f"%(asctime)s %(levelname)s metafs[{os.getpid()}] {args.mountpoint}: %(message)s"
    logs.setup(args.log_level, args.log_format, handler, fmt)
    ready_file = os.fdopen(args.ready_fd, "w") if args.ready_fd is not None else None

    def ready(message: str) -> None:
        if ready_file is not None and not ready_file.closed:
            ready_file.write(message + "\n")
            ready_file.close()

    opts = mount.MountOptions(
        mountpoint=args.mountpoint,
        servers=args.server,
        unit=args.unit,
        token=_token(args),
        fetch_timeout=args.fetch_timeout,
        cache_timeout=args.cache_timeout,
        anchors=args.anchors,
        status_socket=args.status_socket,
        metrics_listen=_host_port(args.metrics_listen, "--metrics-listen") if args.metrics_listen else None,
    )
    try:
        trio.run(mount.run, opts, ready)
    except (mount.MountError, ClientError) as exc:
        logging.getLogger("metafs.mount").error("%s", exc)
        ready(f"error: {exc}")
        raise Failure(str(exc)) from None
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when the views are fresh, 1 on errors, 2 when they are stale."""
    from . import mountstatus

    try:
        st = mountstatus.read(args.mountpoint, args.status_socket)
    except OSError as exc:
        raise Failure(str(exc)) from None
    print(json.dumps(st, indent=2) if args.json else mountstatus.summary(st))
    return 2 if st["stale"] else 0


def cmd_oci_hook(args: argparse.Namespace) -> int:
    from . import ocihook

    try:
        state = json.load(sys.stdin)
    except ValueError as exc:
        raise Failure(f"the container state on standard input is not JSON: {exc}") from None
    try:
        ocihook.run(state, args.anchors)
    except (ocihook.HookError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
        raise Failure(str(exc)) from None
    return 0


def _host_port(value: str, flag: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise Failure(f"{flag} {value!r}: expected HOST:PORT, e.g. 127.0.0.1:9851")
    return host.strip("[]"), int(port)


def _log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-format",
        default="text",
        choices=["text", "json"],
        help="one line per event: text, or JSON objects (time, level, logger, message); tokens are"
        " never written (default: %(default)s)",
    )


def cmd_umount(args: argparse.Namespace) -> int:
    from . import mount

    try:
        mount.unmount(args.mountpoint, lazy=args.lazy)
    except mount.MountError as exc:
        raise Failure(str(exc)) from None
    return 0


def _client_options(p: argparse.ArgumentParser) -> None:
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


KEY_HELP = (
    "a seed path (5/test1/s4/UNIT/hostname), a path in the unit's view (self/hostname, "
    "service/all_hosts/), or a document path (accounts/5/stacks/test1, hosts/node-a)"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="metafs",
        description="Container metadata as files: a metadata server, its client, and a FUSE filesystem.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""examples:
  metafs serve --store sqlite:///var/lib/metafs/metafs.db     the server (or etcd://h1:2379,h2:2379)
  metafs load cluster.yaml                                    create or replace, all or nothing
  metafs get self/cardinal_value --unit $UNIT                 one value of a unit's view
  metafs mount /run/metafs/units --anchors /run/metafs/anchors   every unit of this host as files
  metafs status /run/metafs/units                             is that mount fresh?

environment:
  METADATA_CONNECTION_URL  server URL(s) for clients      METAFS_TOKEN, METAFS_TOKEN_FILE  the token
  DEPLOYMENT_UNIT_ID       the unit for self/... keys     METAFS_STORE, METAFS_LISTEN      serve defaults
  METAFS_OPERATOR_TOKEN    the server's bootstrap operator token

`metafs COMMAND --help` tells more; the README has the file layout and the HTTP API.""",
    )
    parser.add_argument("--version", action="version", version=f"metafs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        return p

    p = add("serve", cmd_serve, "run the metadata server")
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
        "--max-wait",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="longest long poll (default: %(default)s)",
    )
    p.add_argument(
        "--max-body",
        type=int,
        default=16 * 1024 * 1024,
        metavar="BYTES",
        help="largest write or load document (default: %(default)s)",
    )
    p.add_argument(
        "--body-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a request body must arrive within this (default: %(default)s)",
    )
    p.add_argument(
        "--answer-cache",
        type=int,
        default=4096,
        metavar="ENTRIES",
        help="read answers kept and reused until the next commit; 0 turns this off"
        " (default: %(default)s; SQLite store only)",
    )
    _log_options(p)
    p.add_argument(
        "--operator-token-file",
        metavar="PATH",
        help="the operator token, made (0600) if missing (default: operator.token beside the SQLite file;"
        " $METAFS_OPERATOR_TOKEN overrides)",
    )

    p = add("load", cmd_load, "load a YAML or JSON document, all or nothing")
    p.add_argument("file", metavar="FILE", help="the document, or - for standard input")
    _client_options(p)

    p = add("get", cmd_get, "print a value, or a directory's listing")
    p.add_argument("key", metavar="KEY", help=KEY_HELP)
    p.add_argument("--json", action="store_true", help="print the whole subtree as JSON")
    _client_options(p)

    p = add("ls", cmd_ls, "list a directory")
    p.add_argument("key", metavar="KEY", nargs="?", default="", help=KEY_HELP)
    _client_options(p)

    p = add("put", cmd_put, "write a value or a record (operator)")
    p.add_argument("key", metavar="KEY", help=KEY_HELP)
    p.add_argument("value", metavar="VALUE", help="the value; - reads standard input, @FILE reads FILE")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--json", action="store_true", help="VALUE is JSON")
    kind.add_argument("--yaml", action="store_true", help="VALUE is YAML")
    _client_options(p)

    p = add("delete", cmd_delete, "delete a value, or a record with everything below it (operator)")
    p.add_argument("key", metavar="KEY", help=KEY_HELP)
    _client_options(p)

    p = add(
        "wait", cmd_wait, "block until KEY exists (if it does not) or changes (if it does), then print it"
    )
    p.add_argument("key", metavar="KEY", help=KEY_HELP)
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="give up after this long, exit 124 (default: %(default)s)",
    )
    _client_options(p)

    p = add("mount", cmd_mount, "mount the metadata as a read-only filesystem; returns once it is ready")
    p.add_argument(
        "mountpoint",
        metavar="MOUNTPOINT",
        help="an empty directory; with --unit it shows that unit's view,"
        " else one directory per unit (host mode)",
    )
    _client_options(p)
    p.add_argument("--foreground", action="store_true", help="stay in the foreground (for systemd)")
    p.add_argument(
        "--anchors",
        metavar="DIR",
        help="host mode: keep DIR/<unit> bound to each unit's files, so that containers given"
        " DIR/<unit> (rbind,ro,rslave) survive a restart of this daemon",
    )
    p.add_argument(
        "--fetch-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long a first access waits for a view before EIO (default: %(default)s)",
    )
    p.add_argument(
        "--cache-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="how long the kernel may cache entries and attributes; changes invalidate them at once"
        " (default: %(default)s)",
    )
    p.add_argument(
        "--log-file", metavar="PATH", help="daemon log (default: /var/log/metafs/mount-<path>.log)"
    )
    _log_options(p)
    p.add_argument(
        "--status-socket",
        metavar="PATH",
        help="where to answer /status and /metrics (default: /run/metafs/status/<mountpoint>.sock as root)",
    )
    p.add_argument(
        "--metrics-listen",
        metavar="HOST:PORT",
        help="also serve /metrics (Prometheus) on this TCP address, e.g. 127.0.0.1:9851",
    )
    p.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)

    p = add("status", cmd_status, "show what a mount daemon is doing: server, fresh or stale, units")
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="where `metafs mount` mounted it")
    p.add_argument("--json", action="store_true", help="print the daemon's status as JSON")
    p.add_argument("--status-socket", metavar="PATH", help="the daemon's status socket, if not the default")

    p = add(
        "oci-hook",
        cmd_oci_hook,
        "OCI runtime hook (createRuntime): bind the anchor of the unit named by the container's"
        " io.metafs.unit annotation at /meta (or io.metafs.target); reads the state on stdin",
    )
    p.add_argument(
        "--anchors",
        default="/run/metafs/anchors",
        metavar="DIR",
        help="the mount daemon's --anchors directory (default: %(default)s)",
    )

    p = add("token", cmd_token, "mint, list and revoke tokens (operator)")
    tsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    t = tsub.add_parser("create", help="mint a token; it is printed once and only its hash is kept")
    t.add_argument("--kind", required=True, choices=["operator", "host", "unit"])
    t.add_argument("--subject", help="the host name (host tokens) or unit id (unit tokens)")
    _client_options(t)
    t = tsub.add_parser("list", help="list token ids, kinds and subjects")
    _client_options(t)
    t = tsub.add_parser("revoke", help="revoke a token by its id")
    t.add_argument("id", metavar="ID")
    _client_options(t)

    p = add("umount", cmd_umount, "unmount a metafs filesystem")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--lazy", action="store_true", help="detach now even if files are open (fusermount3 -uz)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ClientError, Failure, ValueError) as exc:
        print(f"metafs: {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
