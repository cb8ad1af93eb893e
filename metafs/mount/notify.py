"""Telling the kernel what changed: old and new trees of a view are diffed, and exactly
the inodes and entries that changed are invalidated; ``poll()`` waiters on a view's
``revision`` file are woken.

Invalidations are sent, in order, from a thread of their own: the kernel may have to
wait for a request in flight before it can drop a page or an entry (a READ holds the
page lock), and that request needs the trio thread to answer it, so blocking there
would deadlock. pyfuse3 releases the GIL during these calls.

Because they are sent later, a handler that answers from a new tree first waits (briefly,
:meth:`KernelNotifier.settled`) until what was queued before has reached the kernel: a
program that read a new value must not then ``stat`` the old size.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from queue import Queue

import pyfuse3
import trio

from ..tree import Dir, Leaf, Node, encode_name
from .inodes import InodeTable, Path

log = logging.getLogger("metafs.fs")

#: how long a handler waits for queued invalidations before it answers anyway (s)
SETTLE_TIMEOUT = 0.5
_SETTLE_POLL = 0.0002


class KernelNotifier:
    """Invalidations and poll wake-ups for one mount (see the module docstring)."""

    def __init__(self, inodes: InodeTable, host_mode: bool) -> None:
        self.inodes = inodes
        self.host_mode = host_mode
        #: set once the kernel session exists: invalidations before that have no target
        self.live = False
        self.invalidations = 0  # sent to the kernel, for the mount's status
        self._pollers: dict[int, dict[int, pyfuse3.PollHandle]] = {}  # by inode, by file handle
        self._queue: Queue[tuple[int, bool | bytes] | None] = Queue()
        self._queued = 0  # invalidations put in the queue (trio thread)
        self._sent = 0  # ... and handed to the kernel (the sender thread; read here)
        self._untold: set[str] = set()  # units whose new view is served, not yet diffed
        self._thread = threading.Thread(target=self._send_loop, daemon=True)
        self._thread.start()

    async def settled(self, unit_id: str, within: float = SETTLE_TIMEOUT) -> bool:
        """Wait until the unit's view is not pending any more and every invalidation
        queued by then reached the kernel (at most ``within`` s; False if not). Only for
        handlers that hold no lock an invalidation needs: a file's read, never a lookup or
        readdir (the kernel holds the directory's lock there; ``invalidate_entry`` takes
        it)."""
        if unit_id not in self._untold and self._sent >= self._queued:
            return True
        with trio.move_on_after(within):
            while unit_id in self._untold:
                await trio.sleep(_SETTLE_POLL)
            target = self._queued
            while self._sent < target:
                await trio.sleep(_SETTLE_POLL)
        return unit_id not in self._untold and self._sent >= target

    # -- poll() waiters --------------------------------------------------------------

    def keeps(self, unit_id: str) -> bool:
        """A program waits in ``poll()`` on the unit's ``revision``: its view must stay."""
        ino = self.inodes.known((unit_id, "revision"))
        return ino is not None and bool(self._pollers.get(ino))

    def wait_poll(self, ino: int, fh: int, handle: pyfuse3.PollHandle) -> None:
        """Wake ``handle`` when the view of ``ino`` (a ``revision`` file) changes."""
        self._pollers.setdefault(ino, {})[fh] = handle

    def closed(self, ino: int, fh: int) -> None:
        """File handle ``fh`` of ``ino`` was released: it waits no more."""
        waiting = self._pollers.get(ino)
        if waiting is not None:
            waiting.pop(fh, None)
            if not waiting:
                del self._pollers[ino]

    # -- what the view cache reports ----------------------------------------------------

    def views_swapped(self, unit_ids: list[str]) -> None:
        self._untold.update(unit_ids)

    def view_changed(self, unit_id: str, old: Dir | None, new: Dir | None) -> None:
        self._untold.discard(unit_id)
        base: Path = (unit_id,)
        self._diff(base, old, new)
        rev_ino = self.inodes.known((*base, "revision"))
        if rev_ino is not None:
            for ph in self._pollers.pop(rev_ino, {}).values():
                ph.notify()

    def list_changed(self, old: Dir, new: Dir) -> None:
        if not self.host_mode:
            return
        for uid in old.children.keys() ^ new.children.keys():
            self._entry((), uid)
        self._inode(pyfuse3.ROOT_INODE)

    def _diff(self, path: Path, old: Node | None, new: Node | None) -> None:
        if old is new and old is not None:
            return  # a subtree the delta kept: the very same object, nothing changed
        ino = self.inodes.known(path)
        if ino is None:
            return  # the kernel never saw this path, nor anything below it
        if old is None or new is None:  # a whole view came or went: diff against nothing
            old, new = old or Dir(), new or Dir()
        if isinstance(old, Leaf) and isinstance(new, Leaf):
            if (old.value, old.mtime) != (new.value, new.mtime):
                self._inode(ino)
            return
        if not (isinstance(old, Dir) and isinstance(new, Dir)):
            return
        if (old.rev, old.mtime) != (new.rev, new.mtime):
            self._inode(ino, attr_only=True)
        for name in old.children.keys() | new.children.keys():
            o, n = old.children.get(name), new.children.get(name)
            if o is None or n is None or isinstance(o, Leaf) is not isinstance(n, Leaf):
                self._entry(path, name)
                if o is not None and n is not None:  # a file became a directory: new inode
                    self.inodes.renumber((*path, name))
            else:
                self._diff((*path, name), o, n)

    def _inode(self, ino: int, attr_only: bool = False) -> None:
        if self.live:
            self.invalidations += 1
            self._queued += 1
            self._queue.put((ino, attr_only))

    def _entry(self, parent: Path, name: str) -> None:
        parent_ino = self.inodes.known(parent)
        if parent_ino is not None and self.live:
            self.invalidations += 1
            self._queued += 1
            self._queue.put((parent_ino, os.fsencode(encode_name(name))))

    def stop(self) -> None:
        """Let queued invalidations finish (briefly) before the session goes away."""
        self._queue.put(None)
        self._thread.join(timeout=2)

    def _send_loop(self) -> None:
        """Send invalidations to the kernel, in order (see the module docstring)."""
        while (item := self._queue.get()) is not None:
            _send(*item)
            self._sent += 1


def _send(ino: int, what: bool | bytes) -> None:
    try:
        if isinstance(what, bytes):
            pyfuse3.invalidate_entry(ino, what)
        else:
            pyfuse3.invalidate_inode(ino, what)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTCONN, errno.EBADF):
            log.warning("invalidate %d %r: %s", ino, what, exc)
