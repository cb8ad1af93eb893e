"""Real runc containers for the tests: a busybox bundle running a script as uid 1000."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path


def runc_unusable() -> str | None:
    if shutil.which("runc") is None or not Path("/bin/busybox").exists():
        return "runc or busybox-static is not installed"
    if os.geteuid() != 0:
        return "runc needs root here"
    return None


def make_rootfs(rootfs: Path) -> Path:
    """A root filesystem of busybox-static, with a user ``app`` (uid 1000): what every
    container of the tests runs (as a bundle for runc, imported as an image by Docker
    and Podman)."""
    (rootfs / "bin").mkdir(parents=True)
    for d in ("meta", "proc", "dev", "sys", "tmp", "etc"):
        (rootfs / d).mkdir()
    shutil.copy("/bin/busybox", rootfs / "bin" / "busybox")
    applets = subprocess.run(
        ["/bin/busybox", "--list"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (rootfs / "bin" / applet).symlink_to("busybox")
    (rootfs / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n")
    return rootfs


def make_bundle(root: Path, meta: Path, script: str, mounts: Sequence[dict[str, object]] = ()) -> Path:
    make_rootfs(root / "rootfs")
    subprocess.run(["runc", "spec", "--bundle", str(root)], check=True)
    config = json.loads((root / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/sh", "-c", script]
    config["process"]["user"] = {"uid": 1000, "gid": 1000}
    config["process"]["cwd"] = "/tmp"
    config["root"] = {"path": "rootfs", "readonly": True}
    config["mounts"].append(
        {"destination": "/meta", "type": "bind", "source": str(meta), "options": ["rbind", "ro"]}
    )
    config["mounts"].extend(mounts)
    (root / "config.json").write_text(json.dumps(config, indent=2))
    return root
