"""The commands for container engines: ``oci-hook`` (the createRuntime hook),
``runtime`` (the shim dockerd runs in runc's place) and ``install-hook``.

``runtime`` takes runc's own command line after its options, so :func:`main` hands it
its arguments before argparse sees them (runc's ``--root`` is not ours to refuse).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence

from ..mount.ocihook import DEFAULT_ANCHORS as ANCHORS
from .options import Failure, Subparsers, add_command

#: the shim's own options, before runc's command line
_RUNTIME_OPTIONS = ("--anchors", "--hook", "--runc")


def cmd_oci_hook(args: argparse.Namespace) -> int:
    from ..mount import ocihook

    try:
        state = json.load(sys.stdin)
    except ValueError as exc:
        raise Failure(f"the container state on standard input is not JSON: {exc}") from None
    try:
        ocihook.run(state, args.anchors)
    except (ocihook.HookError, OSError, subprocess.SubprocessError, KeyError, ValueError) as exc:
        raise Failure(str(exc)) from None
    return 0


def runtime(argv: Sequence[str]) -> int:
    """``metafs runtime [--anchors DIR] [--hook PATH] [--runc PATH] RUNC-ARGS...``: add the
    hook to a container that asks for a unit, then exec runc with RUNC-ARGS."""
    from ..mount import runtime as shim
    from ..mount.ocihook import HookError

    own = {"--anchors": ANCHORS, "--hook": _this_executable(), "--runc": ""}
    args = list(argv)
    while args and args[0] in _RUNTIME_OPTIONS:
        if len(args) < 2:
            print(f"metafs: runtime: {args[0]} needs a value", file=sys.stderr)
            return 2
        own[args[0]] = args[1]
        del args[:2]
    try:
        runc = shim.find_runc(own["--runc"] or None)
        shim.prepare(args, os.path.abspath(own["--hook"]), own["--anchors"])
    except (HookError, OSError) as exc:
        print(f"metafs: runtime: {exc}", file=sys.stderr)  # dockerd shows it; no container starts
        return 1
    os.execv(runc, [runc, *args])


def _this_executable() -> str:
    """The ``metafs`` that runs now, if it is an executable (not ``python -m``)."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and not argv0.endswith(".py") and os.access(argv0, os.X_OK):
        return argv0
    return shutil.which("metafs") or "metafs"


def cmd_runtime(args: argparse.Namespace) -> int:  # main() hands `runtime` over first; --help exits
    return runtime(args.runc_args)


def cmd_install_hook(args: argparse.Namespace) -> int:
    from ..mount import install

    try:
        done = install.install(args.bin, args.hooks_dir, args.anchors, args.docker_config)
    except OSError as exc:
        raise Failure(str(exc)) from None
    for line in done:
        print(line)
    return 0


def add_commands(sub: Subparsers) -> None:
    p = add_command(
        sub,
        "oci-hook",
        cmd_oci_hook,
        "OCI runtime hook (createRuntime): bind the anchor of the unit named by the container's"
        " io.metafs.unit annotation at /meta (or io.metafs.target); reads the state on stdin",
    )
    p.add_argument("--anchors", default=ANCHORS, metavar="DIR", help="the mount daemon's --anchors directory")

    p = add_command(
        sub,
        "runtime",
        cmd_runtime,
        "an OCI runtime for dockerd (--add-runtime, daemon.json): a container with"
        " DEPLOYMENT_UNIT_ID in its environment gets the oci-hook; then runc runs it",
    )
    p.add_argument("--anchors", default=ANCHORS, metavar="DIR", help="the mount daemon's --anchors directory")
    p.add_argument("--hook", metavar="PATH", help="the metafs executable the hook runs (default: this one)")
    p.add_argument("--runc", metavar="PATH", help="the runc to exec (default: runc on PATH)")
    p.add_argument("runc_args", nargs=argparse.REMAINDER, metavar="RUNC-ARGS", help="runc's command line")

    p = add_command(
        sub,
        "install-hook",
        cmd_install_hook,
        "install the hook route: the executable the hook files name, the hooks.d file"
        " (Podman, CRI-O) and, with --docker-config, the Docker runtime",
    )
    p.add_argument(
        "--bin", default="/usr/local/bin/metafs", metavar="PATH", help="where the hook finds metafs"
    )
    p.add_argument(
        "--hooks-dir", default="/etc/containers/oci/hooks.d", metavar="DIR", help="the hooks.d to write"
    )
    p.add_argument("--anchors", default=ANCHORS, metavar="DIR", help="the mount daemon's --anchors directory")
    p.add_argument(
        "--docker-config",
        metavar="FILE",
        help="merge the `metafs` runtime into this daemon.json (e.g. /etc/docker/daemon.json)",
    )
