"""``metafs install-hook``: put the hook route where the container engines look.

Three things, each only if it differs from what is there: an executable at the path the
hook files name (a launcher of this installation of metafs, unless that path is this
installation's own ``metafs``); the hooks.d file Podman and CRI-O read, naming that
executable and the anchors directory; and, for Docker, the ``metafs`` runtime (the shim
of :mod:`.runtime`) merged into a ``daemon.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DEFAULT_BIN = "/usr/local/bin/metafs"
#: where Podman 4 (Debian 12) and CRI-O look by default; /etc/containers/oci/hooks.d is
#: read only when containers.conf names it (hooks_dir): tried here
DEFAULT_HOOKS_DIR = "/usr/share/containers/oci/hooks.d"
RUNTIME_NAME = "metafs"


def hook_file(bin_path: str, anchors: str) -> dict[str, Any]:
    """The hooks.d definition (OCI hooks 1.0.0): ``oci-hook`` at createRuntime for a
    container annotated ``io.metafs.unit``."""
    return {
        "version": "1.0.0",
        "hook": {"path": bin_path, "args": ["metafs", "oci-hook", "--anchors", anchors], "timeout": 10},
        "when": {"annotations": {"^io\\.metafs\\.unit$": ".+"}},
        "stages": ["createRuntime"],
    }


def runtime_entry(bin_path: str, anchors: str) -> dict[str, Any]:
    """dockerd's ``"runtimes"`` entry for the shim."""
    return {"path": bin_path, "runtimeArgs": ["runtime", "--anchors", anchors, "--hook", bin_path]}


def launcher() -> str:
    """A script that runs this installation's metafs (its interpreter, its packages)."""
    return f'#!/bin/sh\nexec {sys.executable} -m metafs.cli "$@"\n'


def _write(path: Path, text: str, mode: int) -> bool:
    if path.exists() and path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.new")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def install(bin_path: str, hooks_dir: str, anchors: str, docker_config: str | None) -> list[str]:
    """Install what is missing; return a line for each thing written or found right."""
    done = []
    target = Path(bin_path)
    own = Path(sys.argv[0]).resolve() if sys.argv and sys.argv[0] else None
    if own is not None and target.exists() and target.resolve() == own:
        done.append(f"{target}: this metafs itself")
    elif _write(target, launcher(), 0o755):
        done.append(f"{target}: wrote a launcher of {sys.executable} -m metafs.cli")
    else:
        done.append(f"{target}: up to date")
    hook = Path(hooks_dir) / "metafs.json"
    text = json.dumps(hook_file(str(target), anchors), indent=2) + "\n"
    done.append(f"{hook}: {'wrote' if _write(hook, text, 0o644) else 'up to date'}")
    if docker_config:
        path = Path(docker_config)
        try:
            config = json.loads(path.read_text()) if path.exists() else {}
        except ValueError as exc:
            raise ValueError(f"{path}: not JSON ({exc}); fix it or pass another --docker-config") from None
        config.setdefault("runtimes", {})[RUNTIME_NAME] = runtime_entry(str(target), anchors)
        wrote = _write(path, json.dumps(config, indent=2) + "\n", 0o644)
        done.append(
            f"{path}: runtime {RUNTIME_NAME!r} {'added' if wrote else 'up to date'}"
            " (dockerd reads it at start: restart docker, then `docker run --runtime metafs"
            " -e DEPLOYMENT_UNIT_ID=...`)"
        )
    return done
