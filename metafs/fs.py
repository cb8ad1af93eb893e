"""The FUSE filesystem (pyfuse3 on trio): unit views as read-only files.

Organised like pyfuse3's ``examples/tmpfs.py``: an inode table (one stable inode number
per path for the life of the mount), small async handlers that answer from the cached
views, and invalidation of exactly what changed. Handlers only wait on the network the
first time a view is touched (bounded by the cache's ``fetch_timeout``).

Paths are tuples of raw names; in host mode the first element is the unit id, in unit
mode the root is the unit's view.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import stat
import threading
import time
from dataclasses import dataclass
from queue import Queue
from typing import NoReturn

import pyfuse3

from .tree import Dir, Leaf, Node, decode_name, descend, encode_name, leaf_bytes
from .viewcache import ViewCache, ViewMissing, ViewUnavailable

log = logging.getLogger("metafs.fs")

Path = tuple[str, ...]
DIR_MODE = stat.S_IFDIR | 0o555
FILE_MODE = stat.S_IFREG | 0o444
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


@dataclass(slots=True)
class _Open:
    ino: int
    seen: object  # for the `revision` file: the value this open file last reported
    content: bytes | None = None  # what a read at offset 0 returned (see `read`)


class MetaFS(pyfuse3.Operations):
    """Read-only views of units; live, by invalidation of the kernel's caches."""

    def __init__(self, cache: ViewCache, unit: str | None = None, cache_timeout: float = 300.0) -> None:
        super().__init__()
        self.cache = cache
        cache.on_view = self.view_changed
        cache.on_list = self.list_changed
        self.unit = unit
        self.timeout = cache_timeout
        self.started = time.time()
        self._inos: dict[Path, int] = {}
        self._paths: dict[int, Path] = {}
        self._next_ino = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._bind((unit,) if unit else (), pyfuse3.ROOT_INODE)
        self._open: dict[int, _Open] = {}
        self._next_fh = itertools.count(1)
        self._pollers: dict[int, dict[int, pyfuse3.PollHandle]] = {}
        #: set once the kernel session exists: invalidations before that have no target
        self.live = False
        self._invalidator: Queue[tuple[int, bool | bytes] | None] = Queue()
        self._invalidating = threading.Thread(target=_invalidate_loop, args=(self._invalidator,), daemon=True)
        self._invalidating.start()

    # -- the inode table -----------------------------------------------------------

    def _bind(self, path: Path, ino: int) -> int:
        self._inos[path] = ino
        self._paths[ino] = path
        return ino

    def _ino(self, path: Path) -> int:
        ino = self._inos.get(path)
        return ino if ino is not None else self._bind(path, next(self._next_ino))

    def _path(self, ino: int) -> Path:
        path = self._paths.get(ino)
        if path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return path

    # -- resolving paths to nodes ----------------------------------------------------

    async def _node(self, path: Path, fetch: bool = False) -> Node | None:
        """The node at ``path``; None for host mode's synthetic directories (the root, and
        a unit whose view is not fetched yet unless ``fetch``). Raises ENOENT or EIO."""
        if not path:
            return None
        if self.unit is None and len(path) == 1:
            if path[0] not in self.cache.units.children:
                raise pyfuse3.FUSEError(errno.ENOENT)
            view = self.cache.cached(path[0])
            if view is not None or not fetch:
                return view.root if view else None
        try:
            view = await self.cache.get(path[0])
        except ViewMissing:
            if self.unit is not None and len(path) == 1:
                return Dir()  # unit mode, the unit deleted (or not there yet): an empty root
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except ViewUnavailable:
            raise pyfuse3.FUSEError(errno.EIO) from None
        node = descend(view.root, path[1:])
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _attrs(self, path: Path, node: Node | None) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = self._ino(path)
        e.generation = 0
        e.entry_timeout = self.timeout
        e.attr_timeout = self.timeout
        e.st_uid = e.st_gid = 0
        e.st_blksize = 4096
        if isinstance(node, Leaf):
            size = len(leaf_bytes(node.value))
            e.st_mode, e.st_nlink, e.st_size = FILE_MODE, 1, size
            e.st_blocks = (size + 511) // 512
        else:
            e.st_mode, e.st_nlink, e.st_size = DIR_MODE, 2, 0
        if node is not None:
            mtime = node.mtime
        elif path:  # a unit in host mode, not fetched yet: when it was listed
            listed = self.cache.units.children.get(path[0])
            mtime = listed.mtime if listed else self.started
        else:
            mtime = self.cache.units.mtime or self.started
        e.st_atime_ns = e.st_mtime_ns = e.st_ctime_ns = int(mtime * 1e9)
        return e

    def _children(self, path: Path, node: Node | None) -> list[tuple[str, Node | None]]:
        if isinstance(node, Dir):
            return sorted(node.children.items(), key=lambda kv: encode_name(kv[0]))
        if isinstance(node, Leaf):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if not path:  # host mode's root: one directory per unit
            return [(uid, None) for uid in sorted(self.cache.units.children)]
        raise pyfuse3.FUSEError(errno.EIO)

    # -- handlers --------------------------------------------------------------------

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(name)
        try:
            raw = decode_name(text)
        except UnicodeDecodeError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        if encode_name(raw) != text:  # only the one spelling a name is shown with
            raise pyfuse3.FUSEError(errno.ENOENT)
        path = (*self._path(parent_inode), raw)
        return self._attrs(path, await self._node(path))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        return self._attrs(path, await self._node(path))

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        node = await self._node(self._path(inode), fetch=True)
        if isinstance(node, Leaf):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        path = self._path(fh)
        node = await self._node(path, fetch=True)
        entries = self._children(path, node)
        for i in range(start_id, len(entries)):
            name, child = entries[i]
            child_path = (*path, name)
            if child is None and self.unit is None and not path:
                view = self.cache.cached(name)
                child = view.root if view else None
            if not pyfuse3.readdir_reply(
                token, os.fsencode(encode_name(name)), self._attrs(child_path, child), i + 1
            ):
                return

    async def releasedir(self, fh: int) -> None:
        return None

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = await self._node(self._path(inode))
        if not isinstance(node, Leaf):
            raise pyfuse3.FUSEError(errno.EISDIR)
        fh = next(self._next_fh)
        self._open[fh] = _Open(inode, node.value)
        # direct_io: every read is answered here with a whole value. Through the page
        # cache, the kernel cuts or zero-pads a value whose length changed while its
        # attributes and pages were being invalidated (a torn read); lxcfs does the same
        # for its /proc files. Attributes and entries stay cached, with invalidation.
        return pyfuse3.FileInfo(fh=fh, direct_io=True)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self._open.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        try:
            node = await self._node(self._path(handle.ino))
        except pyfuse3.FUSEError as exc:
            raise pyfuse3.FUSEError(errno.ESTALE if exc.errno == errno.ENOENT else exc.errno) from None
        if not isinstance(node, Leaf):
            raise pyfuse3.FUSEError(errno.ESTALE)
        # Like sysfs: a read at offset 0 takes the current value; reads further on continue
        # that same value, so that a reader taking a file in several reads (cat, Python's
        # open().read()) never gets the head of one value and the tail of the next. A
        # read from the start again (pread(fd, n, 0), lseek + read) sees a newer value.
        if off == 0 or handle.content is None:
            handle.content = leaf_bytes(node.value)
            handle.seen = node.value
        return handle.content[off : off + size]

    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)  # nothing to flush: the kernel stops asking

    async def release(self, fh: int) -> None:
        handle = self._open.pop(fh, None)
        if handle is not None:
            self._pollers.get(handle.ino, {}).pop(fh, None)

    async def poll(
        self, inode: int, fh: int, poll_handle: pyfuse3.PollHandle | None, ctx: pyfuse3.RequestContext
    ) -> int:
        """Always readable; POLLPRI once the value changed since this open file last read
        it (like sysfs): a program sleeps in poll() on ``revision`` until its view changes."""
        ready = select.POLLIN | select.POLLRDNORM
        handle = self._open.get(fh)
        if handle is None:
            return ready
        node = await self._node(self._path(inode))
        if isinstance(node, Leaf) and node.value != handle.seen:
            return ready | select.POLLPRI
        if poll_handle is not None:
            self._pollers.setdefault(inode, {})[fh] = poll_handle
        return ready

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = len(self._paths)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    # every change is refused: the mount is read-only (and mounted `ro`, so the kernel
    # mostly refuses before asking)
    async def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = create = symlink = link = _refuse
    unlink = rmdir = rename = write = setxattr = removexattr = _refuse

    # -- invalidation (called by the view cache's watcher, never from a handler) ---------

    def view_changed(self, unit_id: str, old: Dir | None, new: Dir | None) -> None:
        base: Path = (unit_id,)
        self._diff(base, old, new)
        rev_ino = self._inos.get((*base, "revision"))
        if rev_ino is not None:
            for ph in self._pollers.pop(rev_ino, {}).values():
                ph.notify()

    def list_changed(self, old: Dir, new: Dir) -> None:
        if self.unit is not None:
            return
        for uid in old.children.keys() ^ new.children.keys():
            self._inval_entry((), uid)
        self._inval_inode(pyfuse3.ROOT_INODE)

    def _diff(self, path: Path, old: Node | None, new: Node | None) -> None:
        if old is new and old is not None:
            return  # a subtree the delta kept: the very same object, nothing changed
        ino = self._inos.get(path)
        if ino is None:
            return  # the kernel never saw this path, nor anything below it
        if old is None or new is None:  # a whole view came or went: diff against nothing
            old, new = old or Dir(), new or Dir()
        if isinstance(old, Leaf) and isinstance(new, Leaf):
            if (old.value, old.mtime) != (new.value, new.mtime):
                self._inval_inode(ino)
            return
        if not (isinstance(old, Dir) and isinstance(new, Dir)):
            return
        if (old.rev, old.mtime) != (new.rev, new.mtime):
            self._inval_inode(ino, attr_only=True)
        for name in old.children.keys() | new.children.keys():
            o, n = old.children.get(name), new.children.get(name)
            if o is None or n is None or type(o) is not type(n):
                self._inval_entry(path, name)
                if o is not None and n is not None:  # a file became a directory: new inode
                    stale = self._inos.pop((*path, name), None)
                    if stale is not None:
                        self._paths.pop(stale, None)
            else:
                self._diff((*path, name), o, n)

    def _inval_inode(self, ino: int, attr_only: bool = False) -> None:
        if self.live:
            self.cache.stats.invalidations += 1
            self._invalidator.put((ino, attr_only))

    def _inval_entry(self, parent: Path, name: str) -> None:
        parent_ino = self._inos.get(parent)
        if parent_ino is not None and self.live:
            self.cache.stats.invalidations += 1
            self._invalidator.put((parent_ino, os.fsencode(encode_name(name))))

    def stop_invalidator(self) -> None:
        """Let queued invalidations finish (briefly) before the session goes away."""
        self._invalidator.put(None)
        self._invalidating.join(timeout=2)


def _invalidate_loop(queue: Queue[tuple[int, bool | bytes] | None]) -> None:
    """Send invalidations to the kernel, in order, from a thread of their own.

    The kernel may have to wait for a request in flight before it can drop a page or an
    entry (a READ holds the page lock); that request needs the trio thread to answer it,
    so blocking there would deadlock. pyfuse3 releases the GIL during these calls."""
    while (item := queue.get()) is not None:
        ino, what = item
        try:
            if isinstance(what, bytes):
                pyfuse3.invalidate_entry(ino, what)
            else:
                pyfuse3.invalidate_inode(ino, what)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTCONN, errno.EBADF):
                log.warning("invalidate %d %r: %s", ino, what, exc)
