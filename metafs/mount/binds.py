"""Bind mounts made with the kernel's mount API, in-process, with no window.

:func:`bind` attaches a copy of one directory (or file) at another path. Where a mount
is there already (a stale bind left by a dead daemon) the copy goes *beneath* it
(``move_mount(2)`` with ``MOVE_MOUNT_BENEATH``, Linux 6.5+) and the stale one is then
detached from above: a reader in a container that holds a slave copy of the path goes
from the old mount straight to the new one, never to the empty directory under both
(which would read as "not set"). On an older kernel the stale mount is detached first,
and the window is logged.

:func:`mounts` reads the mount table without touching any mount. The mount calls block,
and a source inside the mount daemon's own FUSE mount is looked up by the daemon itself;
so the daemon never makes them in a thread of its own (SIGKILLed while such a thread
waited on its own mount, the process could never finish dying, and every reader of the
mount hung in D state): it runs ``python -m metafs.mount.binds`` with the work as JSON
on standard input (:func:`main`), a process its death does not hold up.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("metafs.anchors")

#: what an anchor holds: binds of these entries of the unit's directory
ENTRIES = ("self", "service", "stack", "revision")

_libc = ctypes.CDLL(None, use_errno=True)
# the same numbers on x86_64 and aarch64 (syscalls added after 5.0 share one table)
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_AT_FDCWD = -100
_OPEN_TREE_CLONE = 1
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_MOVE_MOUNT_BENEATH = 0x200
_MS_BIND = 0x1000
_MS_SHARED = 1 << 20
_MNT_DETACH = 2


def mounts() -> dict[str, str]:
    """Mount point -> filesystem type, for this mount namespace (octal escapes decoded;
    where mounts are stacked, the last one)."""
    table = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2:
                table[fields[1].encode().decode("unicode_escape")] = fields[2]
    return table


def mounted_points() -> set[str]:
    return set(mounts())


class BindError(OSError):
    """A mount system call failed: the message names the call and the paths."""


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise BindError(err, f"{what}: {os.strerror(err)}")
    return result


def _clone(source: str) -> int:
    """A detached copy of the mount tree at ``source`` (an fd for ``move_mount``)."""
    fd = _libc.syscall(_SYS_OPEN_TREE, _AT_FDCWD, os.fsencode(source), _OPEN_TREE_CLONE | os.O_CLOEXEC)
    return _check(fd, f"open_tree {source}")


def _move(fd: int, target: str, flags: int) -> None:
    flags |= _MOVE_MOUNT_F_EMPTY_PATH
    result = _libc.syscall(_SYS_MOVE_MOUNT, fd, b"", _AT_FDCWD, os.fsencode(target), flags)
    _check(result, f"move_mount -> {target}")


def detach(target: str) -> None:
    """Lazily unmount the topmost mount at ``target`` (``umount -l``)."""
    _check(_libc.umount2(os.fsencode(target), _MNT_DETACH), f"umount {target}")


def share_itself(path: str) -> None:
    """Make ``path`` a shared mount of itself (what containers receive ``rslave``)."""
    p = os.fsencode(path)
    _check(_libc.mount(p, p, None, _MS_BIND, None), f"bind {path} on itself")
    _check(_libc.mount(None, p, None, _MS_SHARED, None), f"make {path} shared")


_beneath_works = True


def _beneath(fd: int, target: str) -> bool:
    """Attach ``fd`` beneath the mount at ``target``; False where the kernel cannot
    (before 6.5: EINVAL or ENOSYS), said once."""
    global _beneath_works
    if not _beneath_works:
        return False
    try:
        _move(fd, target, _MOVE_MOUNT_BENEATH)
    except BindError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        _beneath_works = False
        log.warning("%s; stale binds are detached before the new ones (a short window)", exc)
        return False
    return True


def bind(source: str, target: str, replace: bool) -> None:
    """Bind ``source`` at ``target``; ``replace``: a mount is at ``target`` already, and
    the new one takes its place with no moment of neither."""
    fd = _clone(source)
    try:
        beneath = replace and _beneath(fd, target)
        if replace and not beneath:
            detach(target)
        if not beneath:
            _move(fd, target, 0)
    finally:
        os.close(fd)  # first: a stale mount cannot be detached while this clone's fd is open
    if beneath:
        detach(target)  # the stale one, on top: the new one shows


def anchor(anchor_dir: str, source: str, points: set[str]) -> None:
    """Make ``anchor_dir`` a shared mount of itself holding binds of ``source``'s
    entries, each replacing in place whatever bind is there (a stale one of a dead
    daemon); ``points``: what is mounted (read once for a batch: ~1 ms each time with
    300 mounts)."""
    path = Path(anchor_dir)
    path.mkdir(parents=True, exist_ok=True)
    if anchor_dir not in points:
        share_itself(anchor_dir)
    for name in ENTRIES:
        target = path / name
        stale = str(target) in points
        if not stale:  # a stale FUSE root answers ENOTCONN: only make what is not mounted
            if name == "revision":
                target.touch(exist_ok=True)
            else:
                target.mkdir(exist_ok=True)
        bind(f"{source}/{name}", str(target), replace=stale)


def release(anchor_dir: str, points: set[str]) -> None:
    """Detach every entry bound in ``anchor_dir``."""
    for name in ENTRIES:
        if f"{anchor_dir}/{name}" in points:
            detach(f"{anchor_dir}/{name}")


def main() -> int:
    """``python -m metafs.mount.binds [DAEMON-PID]``: standard input is a JSON list of
    ``["anchor", ANCHOR, SOURCE]`` and ``["release", ANCHOR]``, done up to
    :data:`CONCURRENT` at once (each anchor's source is looked up, and its view fetched,
    through the mount); standard output is a JSON list with, for each, null when it
    worked, else the error. Once the daemon that started it (``DAEMON-PID``) is gone it
    starts nothing more: left alone, it went on making anchors after a SIGKILL of the
    daemon. (Not PR_SET_PDEATHSIG: that follows the thread that spawned it, and trio
    spawns from a worker thread that may end while the daemon lives.)"""
    from concurrent.futures import ThreadPoolExecutor  # here: the daemon imports this module too

    daemon = int(sys.argv[1]) if len(sys.argv) > 1 else os.getppid()
    ops = json.load(sys.stdin)
    points = mounted_points()  # each op touches its own anchor only

    def run(op: list[str]) -> str | None:
        if os.getppid() != daemon:
            return "the mount daemon is gone"
        try:
            if op[0] == "anchor":
                anchor(op[1], op[2], points)
            else:
                release(op[1], points)
        except OSError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
        print(json.dumps(list(pool.map(run, ops))))
    return 0


#: mount calls the helper makes at once
CONCURRENT = 8


if __name__ == "__main__":
    sys.exit(main())
