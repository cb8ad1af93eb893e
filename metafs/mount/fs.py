"""The FUSE filesystem (pyfuse3 on trio): unit views as read-only files.

Organised like pyfuse3's ``examples/tmpfs.py``: an inode table (:mod:`.inodes`), small
async handlers that answer from the cached views (:mod:`.viewcache`); what changed is
told to the kernel by :mod:`.notify`. Handlers only wait on the network the first time a
view is touched (bounded by the cache's ``fetch_timeout``).

Paths are tuples of raw names; in host mode the first element is the unit id, in unit
mode the root is the unit's view.
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import pyfuse3

from ..tree import Dir, Leaf, Node, decode_name, encode_name, leaf_bytes
from .inodes import InodeTable, Path
from .notify import KernelNotifier
from .view import ViewMissing, ViewUnavailable
from .viewcache import ViewCache

DIR_MODE = stat.S_IFDIR | 0o555
FILE_MODE = stat.S_IFREG | 0o444
#: what ``statfs`` reports as the number of inodes (in use + free)
INODE_LIMIT = 1 << 32
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


@dataclass(slots=True)
class _Open:
    ino: int
    seen: object  # for the `revision` file: the value this open file last reported
    content: bytes | None = None  # what a read at offset 0 returned (see `read`)


class MetaFS(pyfuse3.Operations):
    """Read-only views of units; live, by invalidation of the kernel's caches."""

    def __init__(
        self,
        cache: ViewCache,
        inodes: InodeTable,
        notifier: KernelNotifier,
        unit: str | None,
        cache_timeout: float,
    ) -> None:
        super().__init__()
        self.cache = cache
        self.inodes = inodes
        self.notifier = notifier
        self.unit = unit
        self.timeout = cache_timeout
        self.started = time.time()
        self._open: dict[int, _Open] = {}
        self._next_fh = itertools.count(1)

    def _path(self, ino: int) -> Path:
        return self.inodes.path(ino)

    # -- resolving paths to nodes ----------------------------------------------------

    async def _node(self, path: Path, fetch: bool = False) -> Node | None:
        """The node at ``path``; None for host mode's synthetic directories (the root, and
        a unit whose view is not fetched yet unless ``fetch``). ``fetch`` also means the
        node is listed (a big service's peers are fetched then). Raises ENOENT or EIO."""
        if not path:
            return None
        if self.unit is None and len(path) == 1:
            if path[0] not in self.cache.units.children:
                raise pyfuse3.FUSEError(errno.ENOENT)
            view = self.cache.cached(path[0])
            if view is not None or not fetch:
                return view.root if view else None
        try:
            node = await self.cache.node_at(path[0], path[1:], listing=fetch)
        except ViewMissing:
            if self.unit is not None and len(path) == 1:
                return Dir()  # unit mode, the unit deleted (or not there yet): an empty root
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        except ViewUnavailable:
            raise pyfuse3.FUSEError(errno.EIO) from None
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _attrs(self, path: Path, node: Node | None) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = self.inodes.ino(path)
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
        attrs = self._attrs(path, await self._node(path))
        self.inodes.looked_up(attrs.st_ino)  # the kernel holds one more reference
        return attrs

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
                view = self.cache.cached(name, use=False)  # listed, not read
                child = view.root if view else None
            attrs = self._attrs(child_path, child)
            if not pyfuse3.readdir_reply(token, os.fsencode(encode_name(name)), attrs, i + 1):
                self.inodes.drop_unreferenced(attrs.st_ino)  # not sent: the kernel holds nothing
                return
            self.inodes.looked_up(attrs.st_ino)  # readdirplus: each entry sent is a lookup

    async def releasedir(self, fh: int) -> None:
        return None

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        """The kernel dropped inodes: give back their references (never raises)."""
        for ino, n in inode_list:
            self.inodes.forget(ino, n)

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
            path = self._path(handle.ino)
            node = await self._node(path)
        except pyfuse3.FUSEError as exc:
            raise pyfuse3.FUSEError(errno.ESTALE if exc.errno == errno.ENOENT else exc.errno) from None
        if not isinstance(node, Leaf):
            raise pyfuse3.FUSEError(errno.ESTALE)
        # Like sysfs: a read at offset 0 takes the current value; reads further on continue
        # that same value, so that a reader taking a file in several reads (cat, Python's
        # open().read()) never gets the head of one value and the tail of the next. A
        # read from the start again (pread(fd, n, 0), lseek + read) sees a newer value.
        if off == 0 or handle.content is None:
            # A new value's invalidations are sent after it is served: wait (briefly) for
            # them to reach the kernel, so that a reader never gets the new bytes and then
            # the old size from stat (the kernel keeps attributes for --cache-timeout).
            await self.notifier.settled(path[0])
            handle.content = leaf_bytes(node.value)
            handle.seen = node.value
        return handle.content[off : off + size]

    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)  # nothing to flush: the kernel stops asking

    async def release(self, fh: int) -> None:
        handle = self._open.pop(fh, None)
        if handle is not None:
            self.notifier.closed(handle.ino, fh)

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
            self.notifier.wait_poll(inode, fh, poll_handle)
        return ready

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        # inodes in use are those the kernel holds (see inodes.py); numbers are 64-bit,
        # so free ones never run out: ``df -i`` shows the use, not a full table
        s.f_files = INODE_LIMIT
        s.f_ffree = s.f_favail = INODE_LIMIT - len(self.inodes)
        s.f_namemax = 255
        return s

    # every change is refused: the mount is read-only (and mounted `ro`, so the kernel
    # mostly refuses before asking)
    async def _refuse(self, *args: object, **kwargs: object) -> NoReturn:
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = create = symlink = link = _refuse
    unlink = rmdir = rename = write = setxattr = removexattr = _refuse
