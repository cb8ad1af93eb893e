"""Anchors: a host layout in which a restarted mount daemon reaches running containers.

A container that holds a bind mount of a FUSE directory holds that FUSE connection: when
the daemon dies, its ``/meta`` is dead for good. Instead, each unit gets an *anchor*
directory ``ANCHORS/<unit>`` that is a shared mount of itself; the daemon bind-mounts the
unit's ``self/``, ``service/``, ``stack/`` and ``revision`` from its FUSE mount onto the
same names inside the anchor, and the container receives the anchor with
``rbind,ro,rslave``. After a crash the next daemon mounts again and binds each entry
*beneath* the stale bind, then detaches the stale one (:mod:`.binds`): the new mounts
propagate into every running container, whose readers go from "Transport endpoint is not
connected" straight to the new values, never to a missing file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import trio

from . import binds
from .binds import mounted_points

log = logging.getLogger("metafs.anchors")

ENTRIES = ("self", "service", "stack", "revision")


#: anchors bound at once: each is a few mount calls in a worker thread, their sources
#: looked up (and the unit's view fetched) through this daemon's own mount
CONCURRENT_BINDS = 8


class Anchors:
    """Keeps ``root/<unit>`` bound to ``mountpoint/<unit>`` for every unit listed."""

    def __init__(self, root: str, mountpoint: str) -> None:
        self.root = Path(root).resolve()
        self.mountpoint = Path(mountpoint).resolve()
        self.bound: set[str] = set()
        self._limiter = trio.CapacityLimiter(CONCURRENT_BINDS)
        # the mount calls under way: the filesystem must go on answering until there
        # are none, or a call looking a path up through it would hang (see close)
        self._calls = 0
        self._idle = trio.Event()
        self._closed = False

    async def _call(self, fn: Callable[..., None], *args: Any) -> None:
        self._calls += 1
        try:
            await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        finally:
            self._calls -= 1
            if not self._calls:
                self._idle.set()

    async def release_stale(self) -> None:
        """Detach the binds an earlier daemon left in anchors of units not bound now
        (call after the first :meth:`sync`, which replaces the others in place)."""
        if self._closed or not self.root.is_dir():
            return
        points = mounted_points()
        for anchor in sorted(self.root.iterdir()):
            if anchor.name not in self.bound:
                await self._call(_detach_entries, anchor, points)

    async def sync(self, units: Iterable[str]) -> None:
        """Bind the units listed, several at once; release those no longer listed."""
        wanted = set(units)
        async with trio.open_nursery() as nursery:
            for uid in sorted(wanted - self.bound):
                nursery.start_soon(self._bind, uid)
        for uid in sorted(self.bound - wanted):
            if not self._closed:
                await self._release(uid)

    async def close(self) -> None:
        """Release every anchor and bind no more; returns once no mount call is under
        way, so that the filesystem may stop answering."""
        self._closed = True
        while self._calls:
            self._idle = trio.Event()
            await self._idle.wait()
        for uid in sorted(self.bound):
            await self._release(uid)

    async def _bind(self, uid: str) -> None:
        if self._closed:
            return
        try:
            await self._call(_anchor, self.root / uid, self.mountpoint / uid)
        except OSError as exc:
            log.warning("anchor %s: %s", self.root / uid, exc)
            return
        self.bound.add(uid)
        log.info("anchored %s at %s", uid, self.root / uid)

    async def _release(self, uid: str) -> None:
        await self._call(_detach_entries, self.root / uid, mounted_points())
        self.bound.discard(uid)
        log.info("released anchor %s", self.root / uid)


def _anchor(anchor: Path, source: Path) -> None:
    """Make ``anchor`` a shared mount of itself holding binds of ``source``'s entries,
    each replacing in place whatever bind is there (a stale one of a dead daemon)."""
    points = mounted_points()
    anchor.mkdir(parents=True, exist_ok=True)
    if str(anchor) not in points:
        binds.share_itself(str(anchor))
    for name in ENTRIES:
        target = anchor / name
        stale = str(target) in points
        if not stale:  # a stale FUSE root answers ENOTCONN: only make what is not mounted
            if name == "revision":
                target.touch(exist_ok=True)
            else:
                target.mkdir(exist_ok=True)
        binds.bind(str(source / name), str(target), replace=stale)


def _detach_entries(anchor: Path, points: set[str]) -> None:
    for name in ENTRIES:
        if str(anchor / name) in points:
            try:
                binds.detach(str(anchor / name))
            except OSError as exc:
                log.warning("%s", exc)
