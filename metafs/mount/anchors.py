"""Anchors: a host layout in which a restarted mount daemon reaches running containers.

A container that holds a bind mount of a FUSE directory holds that FUSE connection: when
the daemon dies, its ``/meta`` is dead for good. Instead, each unit gets an *anchor*
directory ``ANCHORS/<unit>`` that is a shared mount of itself; the daemon bind-mounts the
unit's ``self/``, ``service/``, ``stack/`` and ``revision`` from its FUSE mount onto the
same names inside the anchor, and the container receives the anchor with
``rbind,ro,rslave``. After a crash the next daemon lazily unmounts the stale binds,
mounts again and binds again; the new mounts propagate into every running container.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import trio

log = logging.getLogger("metafs.anchors")

ENTRIES = ("self", "service", "stack", "revision")


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


async def _run(*args: str) -> bool:
    result = await trio.run_process(list(args), capture_stdout=True, capture_stderr=True, check=False)
    if result.returncode != 0:
        log.warning("%s: %s", " ".join(args), result.stderr.decode().strip())
    return result.returncode == 0


class Anchors:
    """Keeps ``root/<unit>`` bound to ``mountpoint/<unit>`` for every unit listed."""

    def __init__(self, root: str, mountpoint: str) -> None:
        self.root = Path(root).resolve()
        self.mountpoint = Path(mountpoint).resolve()
        self.bound: set[str] = set()

    async def release_stale(self) -> None:
        """Lazily unmount binds left by an earlier daemon (dead or not)."""
        points = mounted_points()
        if not self.root.is_dir():
            return
        for anchor in sorted(self.root.iterdir()):
            for name in ENTRIES:
                if str(anchor / name) in points:
                    await _run("umount", "-l", str(anchor / name))

    async def sync(self, units: Iterable[str]) -> None:
        """Bind the units listed; release the anchors of units no longer listed."""
        wanted = set(units)
        for uid in sorted(wanted - self.bound):
            if await self._bind(uid):
                self.bound.add(uid)
        for uid in sorted(self.bound - wanted):
            await self._release(uid)
            self.bound.discard(uid)

    async def release_all(self) -> None:
        for uid in sorted(self.bound):
            await self._release(uid)
        self.bound.clear()

    async def _bind(self, uid: str) -> bool:
        anchor = self.root / uid
        anchor.mkdir(parents=True, exist_ok=True)
        points = mounted_points()
        if str(anchor) not in points:  # the anchor: a shared mount of itself
            if not (await _run("mount", "--bind", str(anchor), str(anchor))):
                return False
            await _run("mount", "--make-shared", str(anchor))
        ok = True
        for name in ENTRIES:
            target = anchor / name
            if str(target) in points:
                await _run("umount", "-l", str(target))
            if name == "revision":
                target.touch(exist_ok=True)
            else:
                target.mkdir(exist_ok=True)
            # the path is looked up through this daemon's own FUSE mount: a child process
            # does the mount while the trio loop goes on answering
            ok &= await _run("mount", "--bind", str(self.mountpoint / uid / name), str(target))
        if ok:
            log.info("anchored %s at %s", uid, anchor)
        return ok

    async def _release(self, uid: str) -> None:
        anchor = self.root / uid
        points = mounted_points()
        for name in ENTRIES:
            if str(anchor / name) in points:
                await _run("umount", "-l", str(anchor / name))
        log.info("released anchor %s", anchor)
