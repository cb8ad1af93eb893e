"""An OCI runtime hook (``createRuntime``, or the older ``prestart``) that gives a container
its unit's metadata at ``/meta``, chosen by an annotation, with no change to its mounts.

The runtime runs the hook after it has made the container's mount namespace and mounted
its root, before ``pivot_root``, with the container's state on standard input
(``id``, ``pid``, ``bundle``, ``annotations``). For a container annotated
``io.metafs.unit=<unit id>`` the hook enters that namespace (``nsenter``) and binds the
unit's anchor there, ``rbind``, read-only and ``rslave`` (so that a restarted mount daemon
reaches running containers: see :mod:`metafs.anchors`). A container without the
annotation is left alone; an annotation naming a unit that has no anchor on this host
stops the container from starting, with a message saying which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .binds import mounted_points

UNIT_ANNOTATION = "io.metafs.unit"
TARGET_ANNOTATION = "io.metafs.target"
DEFAULT_ANCHORS = "/run/metafs/anchors"
#: runtimes start hooks with an empty environment
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
_UNIT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,254}")


class HookError(Exception):
    """The container must not start: the message says why (the runtime shows it)."""


def _tool(name: str) -> str:
    exe = shutil.which(name, path=os.environ.get("PATH") or _PATH)
    if exe is None:
        raise HookError(f"{name} not found (util-linux)")
    return exe


def plan(state: dict[str, Any], anchors: str) -> tuple[int, str, str] | None:
    """From the container's state: (pid, anchor to bind, where in the container's root),
    or None when the container asks for no metadata."""
    annotations = state.get("annotations") or {}
    bundle = state.get("bundle")
    if not bundle:
        raise HookError("the container state has no bundle")
    if not annotations:  # older runtimes leave annotations out of the state
        config = json.loads((Path(bundle) / "config.json").read_text())
        annotations = config.get("annotations") or {}
    unit = annotations.get(UNIT_ANNOTATION)
    if unit is None:
        return None
    unit = unit.rsplit("/", 1)[-1]  # a $DEPLOYMENT_UNIT_ID-style path works too
    if not _UNIT_ID.fullmatch(unit):
        raise HookError(f"annotation {UNIT_ANNOTATION}={unit!r} is not a unit id")
    target = annotations.get(TARGET_ANNOTATION, "/meta")
    if not target.startswith("/") or ".." in target.split("/"):
        raise HookError(f"annotation {TARGET_ANNOTATION}={target!r}: expected an absolute path without '..'")
    source = os.path.join(os.path.realpath(anchors), unit)
    if source not in mounted_points():  # an anchor is a bind on the same filesystem: not ismount()
        raise HookError(
            f"unit {unit!r} has no anchor at {source}: is it placed on this host, and does"
            f" `metafs mount --anchors {anchors}` run here?"
        )
    config = json.loads((Path(bundle) / "config.json").read_text())
    root = Path(config.get("root", {}).get("path", "rootfs"))
    rootfs = root if root.is_absolute() else Path(bundle) / root
    pid = int(state["pid"])
    return pid, source, str(rootfs) + target


def run(state: dict[str, Any], anchors: str = DEFAULT_ANCHORS) -> str | None:
    """Bind the unit's anchor into the container; return what was done (None: nothing)."""
    what = plan(state, anchors)
    if what is None:
        return None
    pid, source, dest = what
    enter = [_tool("nsenter"), f"--mount=/proc/{pid}/ns/mnt", "--"]
    mount = _tool("mount")
    steps = [
        [_tool("mkdir"), "-p", dest],
        [mount, "--rbind", source, dest],
        [mount, "-o", "remount,bind,ro", dest],
        [mount, "--make-rslave", dest],
    ]
    for step in steps:
        r = subprocess.run([*enter, *step], capture_output=True, text=True, timeout=10, check=False)
        if r.returncode != 0:
            raise HookError(f"{' '.join(step)} in the container's mount namespace: {r.stderr.strip()}")
    return f"{source} -> {dest} (ro, rslave) for container {state.get('id')}"
