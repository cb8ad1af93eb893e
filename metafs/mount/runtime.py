"""An OCI runtime shim for engines with no hooks.d (Docker): ``metafs runtime`` stands in
for runc, adds the ``/meta`` hook to a container that asks for it, then execs runc.

Registered with dockerd (``daemon.json`` ``"runtimes"``, or ``--add-runtime``) and chosen
with ``docker run --runtime metafs``. On ``create`` (and ``run``) it reads the bundle's
``config.json``: a container whose environment has ``DEPLOYMENT_UNIT_ID`` (or that is
annotated ``io.metafs.unit`` already) gets that annotation and a ``createRuntime`` hook
running ``metafs oci-hook`` (:mod:`.ocihook`), which binds the unit's anchor or stops the
container with a message. Every other command, and every other container, goes to runc
unchanged.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .ocihook import DEFAULT_ANCHORS, UNIT_ANNOTATION, HookError

UNIT_ENV = "DEPLOYMENT_UNIT_ID"
#: runc's global options that take a value (``--root DIR`` or ``--root=DIR``)
_GLOBAL_VALUED = {"--root", "--log", "--log-format", "--criu", "--rootless"}
_HOOK_TIMEOUT = 10


def bundle_of(args: Sequence[str]) -> Path | None:
    """The bundle of a runc ``create`` or ``run`` command line, or None for any other."""
    i = 0
    while i < len(args) and args[i].startswith("-"):  # global options, before the command
        i += 2 if args[i] in _GLOBAL_VALUED else 1
    if i >= len(args) or args[i] not in ("create", "run"):
        return None
    rest = args[i + 1 :]
    for j, arg in enumerate(rest):
        if arg in ("--bundle", "-b") and j + 1 < len(rest):
            return Path(rest[j + 1])
        if arg.startswith("--bundle="):
            return Path(arg.split("=", 1)[1])
    return Path.cwd()  # runc's default: the current directory


def unit_of(config: dict[str, Any]) -> str | None:
    """The unit a container asks for: its annotation, else ``$DEPLOYMENT_UNIT_ID``."""
    unit = (config.get("annotations") or {}).get(UNIT_ANNOTATION)
    if unit:
        return str(unit)
    for entry in (config.get("process") or {}).get("env") or []:
        name, _, value = str(entry).partition("=")
        if name == UNIT_ENV and value:
            return value
    return None


def add_hook(config: dict[str, Any], unit: str, hook: str, anchors: str) -> None:
    """Annotate ``config`` with ``unit`` and run ``hook oci-hook`` at createRuntime
    (once, however often a bundle comes through)."""
    config.setdefault("annotations", {})[UNIT_ANNOTATION] = unit
    hooks = config.setdefault("hooks", {}).setdefault("createRuntime", [])
    args = ["metafs", "oci-hook", "--anchors", anchors]
    if not any(h.get("path") == hook and h.get("args") == args for h in hooks):
        hooks.append({"path": hook, "args": args, "timeout": _HOOK_TIMEOUT})


def prepare(args: Sequence[str], hook: str, anchors: str = DEFAULT_ANCHORS) -> str | None:
    """Edit the bundle of a ``create`` that asks for a unit; return the unit (or None)."""
    bundle = bundle_of(args)
    if bundle is None:
        return None
    path = bundle / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise HookError(f"cannot read the bundle's {path}: {exc}") from None
    unit = unit_of(config)
    if unit is None:
        return None
    if not os.access(hook, os.X_OK):
        raise HookError(f"the hook {hook} is not an executable: run `metafs install-hook`")
    add_hook(config, unit, hook, anchors)
    tmp = path.with_name(path.name + ".metafs")
    tmp.write_text(json.dumps(config))
    tmp.replace(path)
    return unit


def find_runc(runc: str | None) -> str:
    exe = runc or shutil.which("runc", path=os.environ.get("PATH") or "/usr/sbin:/usr/bin:/sbin:/bin")
    if exe is None or not os.access(exe, os.X_OK):
        raise HookError(f"runc not found ({runc or 'on PATH'}): the shim runs containers with it")
    return exe
