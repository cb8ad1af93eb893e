"""The commands of the mount side: ``mount``, ``umount`` and ``status``.

``metafs mount`` builds its :class:`~metafs.mount.daemon.MountOptions` once; in the
background it starts the daemon (this same command with ``--foreground``) in its own
session, hands it those options as JSON on its standard input (the token never shows
on a command line) and returns when the daemon reports the mount ready.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from pathlib import Path

from .. import logs
from ..client import ClientError
from ..mount.options import MountOptions
from .options import (
    Failure,
    Subparsers,
    add_command,
    client_options,
    host_port,
    log_options,
    seconds,
    servers,
    size,
    tls_of,
    token,
)

DEFAULTS = MountOptions(mountpoint="", servers="")


def mount_options(args: argparse.Namespace) -> MountOptions:
    return MountOptions(
        mountpoint=args.mountpoint,
        servers=servers(args),
        unit=args.unit,
        token=token(args),
        fetch_timeout=args.fetch_timeout,
        cache_timeout=args.cache_timeout,
        view_ttl=args.view_ttl,
        cache_size=args.cache_size,
        anchors=args.anchors,
        status_socket=args.status_socket,
        metrics_listen=host_port(args.metrics_listen, "--metrics-listen") if args.metrics_listen else None,
        tls=tls_of(args),
    )


def cmd_mount(args: argparse.Namespace) -> int:
    opts = mount_options(args)
    if args.foreground:
        return _foreground(opts, args.log_file, args.log_level, args.log_format, args.ready_fd)
    from ..mount import mountpoint

    log_file = Path(args.log_file) if args.log_file else mountpoint.default_log_file(args.mountpoint)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    read_fd, write_fd = os.pipe()
    # forked, not a new Python: the daemon's start is a restart's way to its first answer,
    # and a second interpreter importing everything again was ~200 ms of it (nothing
    # here has started a thread, so the child is whole)
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        code = 1
        try:
            os.setsid()
            with open(log_file, "ab") as log, open(os.devnull, "rb") as null:
                os.dup2(null.fileno(), 0)
                os.dup2(log.fileno(), 1)
                os.dup2(log.fileno(), 2)
            code = _foreground(opts, str(log_file), args.log_level, args.log_format, write_fd)
        except Failure:
            pass  # logged, and told to the parent through the pipe, by _foreground
        except BaseException:
            traceback.print_exc()  # into the log: os._exit below prints nothing
        finally:
            os._exit(code)  # never back into the parent's command line
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        message = ready.readline().decode().strip()  # EOF if the daemon dies first
    if message == "ok":
        return 0
    if message.startswith("ok unreachable: "):  # mounted all the same (boot order): say so
        print(
            f"metafs: mount: mounted, but no server answered ({message.removeprefix('ok unreachable: ')});"
            " the daemon retries in the background",
            file=sys.stderr,
        )
        return 0
    if not message:
        _, status = os.waitpid(pid, 0)
        message = f"the mount daemon exited with status {os.waitstatus_to_exitcode(status)}; see {log_file}"
    raise Failure(message.removeprefix("error: "))


def _foreground(opts: MountOptions, log_file: str | None, level: str, fmt: str, ready_fd: int | None) -> int:
    import trio

    from ..mount import daemon, mountpoint

    handler = logging.FileHandler(log_file) if log_file else logging.StreamHandler()
    line = f"%(asctime)s %(levelname)s metafs[{os.getpid()}] {opts.mountpoint}: %(message)s"
    logs.setup(level, fmt, handler, line)
    ready_file = os.fdopen(ready_fd, "w") if ready_fd is not None else None

    def ready(message: str) -> None:
        if ready_file is not None and not ready_file.closed:
            ready_file.write(message + "\n")
            ready_file.close()

    try:
        trio.run(daemon.run, opts, ready)
    except (mountpoint.MountError, ClientError) as exc:
        logging.getLogger("metafs.mount").error("%s", exc)
        ready(f"error: {exc}")
        raise Failure(str(exc)) from None
    return 0


def cmd_umount(args: argparse.Namespace) -> int:
    from ..mount import mountpoint

    try:
        mountpoint.unmount(args.mountpoint, lazy=args.lazy)
    except mountpoint.MountError as exc:
        raise Failure(str(exc)) from None
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when the views are fresh, 1 on errors, 2 when they are stale."""
    from ..mount import status

    try:
        st = status.read(args.mountpoint, args.status_socket)
    except OSError as exc:
        raise Failure(str(exc)) from None
    print(json.dumps(st.as_json(), indent=2) if args.json else status.summary(st))
    return 2 if st.stale else 0


def add_commands(sub: Subparsers) -> None:
    p = add_command(
        sub, "mount", cmd_mount, "mount the metadata as a read-only filesystem; returns once it is ready"
    )
    p.add_argument(
        "mountpoint",
        metavar="MOUNTPOINT",
        help="an empty directory; with --unit it shows that unit's view,"
        " else one directory per unit (host mode)",
    )
    client_options(p)
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
        default=DEFAULTS.fetch_timeout,
        metavar="SECONDS",
        help="how long a first access waits for a view before EIO (default: %(default)s)",
    )
    p.add_argument(
        "--cache-timeout",
        type=float,
        default=DEFAULTS.cache_timeout,
        metavar="SECONDS",
        help="how long the kernel may cache entries and attributes; changes invalidate them at once"
        " (default: %(default)s)",
    )
    p.add_argument(
        "--view-ttl",
        type=seconds,
        default=DEFAULTS.view_ttl,
        metavar="SECONDS",
        help="host mode: drop a unit's view when nothing read it for this long; the next read"
        " fetches it again (default: %(default)s)",
    )
    p.add_argument(
        "--cache-size",
        type=size,
        default=DEFAULTS.cache_size,
        metavar="BYTES",
        help="host mode: at most this much memory for views (estimated), least recently used"
        " services out first (default: %(default)s)",
    )
    p.add_argument(
        "--log-file", metavar="PATH", help="daemon log (default: /var/log/metafs/mount-<path>.log)"
    )
    log_options(p)
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

    p = add_command(
        sub, "status", cmd_status, "show what a mount daemon is doing: server, fresh or stale, units"
    )
    p.add_argument("mountpoint", metavar="MOUNTPOINT", help="where `metafs mount` mounted it")
    p.add_argument("--json", action="store_true", help="print the daemon's status as JSON")
    p.add_argument("--status-socket", metavar="PATH", help="the daemon's status socket, if not the default")

    p = add_command(sub, "umount", cmd_umount, "unmount a metafs filesystem")
    p.add_argument("mountpoint", metavar="MOUNTPOINT")
    p.add_argument("--lazy", action="store_true", help="detach now even if files are open (fusermount3 -uz)")
