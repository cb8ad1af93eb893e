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

import json
import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import trio

from . import binds
from .binds import ENTRIES, mounted_points

log = logging.getLogger("metafs.anchors")


#: seconds a child doing mount calls may take before it is killed
BIND_TIMEOUT = 60.0


class Anchors:
    """Keeps ``root/<unit>`` bound to ``mountpoint/<unit>`` for every unit listed."""

    def __init__(self, root: str, mountpoint: str) -> None:
        self.root = Path(root).resolve()
        self.mountpoint = Path(mountpoint).resolve()
        self.bound: set[str] = set()
        # the mount calls under way: the filesystem must go on answering until there
        # are none, or a call looking a path up through it would hang (see close)
        self._calls = 0
        self._idle = trio.Event()
        self._closed = False

    async def _call(self, ops: list[list[str]]) -> list[str | None]:
        """Run ``ops`` (see :func:`.binds.main`) in a child process; one result each."""
        self._calls += 1
        try:
            with trio.fail_after(BIND_TIMEOUT):
                # stdlib only, isolated (-I -S): no site-packages to scan for a child
                # that makes mount calls
                done = await trio.run_process(
                    [sys.executable, "-I", "-S", binds.__file__, str(os.getpid())],
                    stdin=json.dumps(ops).encode(),
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
        except trio.TooSlowError:
            return [f"mount calls took over {BIND_TIMEOUT:.0f}s"] * len(ops)
        finally:
            self._calls -= 1
            if not self._calls:
                self._idle.set()
        for line in done.stderr.decode(errors="replace").splitlines():
            log.warning("mount helper: %s", line)  # e.g. the kernel has no mount-beneath
        if done.returncode == 0:
            results: list[str | None] = json.loads(done.stdout)
            return results
        return [f"the mount helper exited with {done.returncode}"] * len(ops)

    async def _apply(self, op: str, uids: list[str]) -> list[str]:
        """``anchor`` or ``release`` each unit's anchor; the units it worked for."""
        if not uids:
            return []
        sources = [[str(self.mountpoint / uid)] if op == "anchor" else [] for uid in uids]
        results = await self._call(
            [[op, str(self.root / uid), *src] for uid, src in zip(uids, sources, strict=True)]
        )
        done = []
        for uid, error in zip(uids, results, strict=True):
            if error:
                log.warning("anchor %s: %s", self.root / uid, error)
            else:
                done.append(uid)
        return done

    async def release_stale(self) -> None:
        """Detach the binds an earlier daemon left in anchors of units not bound now
        (call after the first :meth:`sync`, which replaces the others in place)."""
        if self._closed or not self.root.is_dir():
            return
        points = mounted_points()
        stale = [a.name for a in sorted(self.root.iterdir()) if a.name not in self.bound]
        await self._apply(
            "release", [u for u in stale if any(f"{self.root / u}/{n}" in points for n in ENTRIES)]
        )

    async def sync(self, units: Iterable[str]) -> None:
        """Bind the units listed (in one helper process, several at once); release those
        no longer listed."""
        wanted = set(units)
        await self._bind(sorted(wanted - self.bound))
        if not self._closed:
            await self._release(sorted(self.bound - wanted))

    async def close(self) -> None:
        """Release every anchor and bind no more; returns once no mount call is under
        way, so that the filesystem may stop answering."""
        self._closed = True
        while self._calls:
            self._idle = trio.Event()
            await self._idle.wait()
        await self._release(sorted(self.bound))

    async def _bind(self, uids: list[str]) -> None:
        if self._closed:
            return
        for uid in await self._apply("anchor", uids):
            self.bound.add(uid)
            log.info("anchored %s at %s", uid, self.root / uid)

    async def _release(self, uids: list[str]) -> None:
        await self._apply("release", uids)
        for uid in uids:  # a release that failed leaves nothing of ours to redo
            self.bound.discard(uid)
            log.info("released anchor %s", self.root / uid)
