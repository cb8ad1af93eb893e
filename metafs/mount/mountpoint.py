"""The mountpoint: making it ready (a dead mount left by a crashed daemon is detached and
replaced, a live one refused), and unmounting it cleanly from outside (``metafs umount``).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from . import binds, status
from .binds import mounts

log = logging.getLogger("metafs.mount")

FSNAME = "metafs"


#: what the kernel answers on a FUSE mount whose daemon is gone
DEAD = (errno.ENOTCONN, errno.ECONNABORTED)


class MountError(Exception):
    """The mount could not be made (one line, for stderr)."""


def fusermount() -> str:
    exe = shutil.which("fusermount3") or shutil.which("fusermount")
    if exe is None:
        raise MountError("fusermount3 not found: install the fuse3 package")
    return exe


def mount_fstype(mountpoint: str) -> str | None:
    """The filesystem type mounted at ``mountpoint`` (last mount wins), or None."""
    return mounts().get(status.resolve(mountpoint))  # never touching the mount itself


def prepare_mountpoint(mountpoint: str) -> None:
    """Make ``mountpoint`` ready: detach a dead FUSE mount, refuse a live metafs one."""
    if is_dead(mountpoint):
        log.warning("%s: dead mount from an earlier daemon; detaching it", mountpoint)
        try:
            binds.detach(mountpoint)  # as root: no fusermount3 to start (~30 ms of a restart)
        except OSError:
            subprocess.run([fusermount(), "-uz", mountpoint], check=False, capture_output=True)
        if is_dead(mountpoint):
            raise MountError(f"{mountpoint}: cannot detach the dead mount left there")
    if not os.path.isdir(mountpoint):
        raise MountError(f"{mountpoint}: not a directory (or does not exist)")
    if mount_fstype(mountpoint) == f"fuse.{FSNAME}":
        raise MountError(f"{mountpoint}: a metafs filesystem is already mounted here")


def _stop_daemon(mountpoint: str, timeout: float = 10.0) -> bool:
    """SIGTERM the daemon serving ``mountpoint``; True once the mount is gone."""
    try:
        pid = status.read(mountpoint, timeout=2).pid
        os.kill(pid, signal.SIGTERM)
    except (OSError, KeyError, ValueError):
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if mount_fstype(mountpoint) is None:
            return True
        time.sleep(0.05)
    return False


def is_dead(mountpoint: str) -> bool:
    """A FUSE mount whose daemon is gone. ``statfs`` always reaches the daemon (``stat``
    of the root may be answered from the kernel's cache)."""
    try:
        os.statvfs(mountpoint)
    except OSError as exc:
        return exc.errno in DEAD
    return False


def unmount(mountpoint: str, lazy: bool = False) -> None:
    """Unmount a metafs mount (``lazy``: detach now even if busy). A live daemon is asked
    to stop (SIGTERM, found through its status socket): it releases its anchors' binds
    first, which an unmount from outside would leave behind."""
    dead = is_dead(mountpoint)
    fstype = mount_fstype(mountpoint)
    if fstype is None or not fstype.startswith("fuse"):
        raise MountError(f"{mountpoint}: not a metafs mount")
    if not dead and _stop_daemon(mountpoint):
        return
    args = [fusermount(), "-uz" if lazy or dead else "-u", mountpoint]
    r = subprocess.run(args, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        msg = r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"
        raise MountError(f"{mountpoint}: {msg} (try --lazy)")


def default_log_file(mountpoint: str) -> Path:
    base = Path("/var/log/metafs") if os.geteuid() == 0 else Path.home() / ".cache" / "metafs"
    name = os.path.realpath(mountpoint).strip("/").replace("/", "-") or "root"
    return base / f"mount-{name}.log"
