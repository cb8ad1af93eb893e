"""libfuse's ``hello_ll.c`` in pyfuse3 + trio: one file, ``/hello``, and nothing else.

The benchmark mounts it next to the C original to show what the Python toolkit itself
costs per request, apart from anything metafs does. Like ``hello_ll``, ``open`` does not
ask for ``keep_cache``, so every open+read sends OPEN, READ and RELEASE to the daemon.

With ``--direct-io`` it opens the file as metafs does: every read goes to the daemon.
(Without it, this kernel keeps the page cache across opens even without ``keep_cache``:
100 open+read+close sent 100 OPENs and 1 READ, counted; ``hello_ll`` is served the same.)

Usage: ``python hello_pyfuse3.py MOUNTPOINT [--direct-io]`` (runs until unmounted).
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio

NAME, DATA = b"hello", b"Hello World!\n"
HELLO_INODE = pyfuse3.ROOT_INODE + 1


class Hello(pyfuse3.Operations):
    def __init__(self, direct_io: bool) -> None:
        super().__init__()
        self.direct_io = direct_io

    def _attrs(self, inode: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = inode
        e.entry_timeout = e.attr_timeout = 1.0  # hello_ll's timeouts
        if inode == pyfuse3.ROOT_INODE:
            e.st_mode, e.st_nlink = stat.S_IFDIR | 0o755, 2
        else:
            e.st_mode, e.st_nlink, e.st_size = stat.S_IFREG | 0o444, 1, len(DATA)
        return e

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext | None = None) -> pyfuse3.EntryAttributes:
        if inode not in (pyfuse3.ROOT_INODE, HELLO_INODE):
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(inode)

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext | None = None
    ) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE or name != NAME:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(HELLO_INODE)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if start_id == 0:
            pyfuse3.readdir_reply(token, NAME, self._attrs(HELLO_INODE), 1)

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if inode != HELLO_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EACCES)
        return pyfuse3.FileInfo(fh=inode, direct_io=self.direct_io)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return DATA[off : off + size]


def main() -> None:
    options = set(pyfuse3.default_options) | {"fsname=hello_pyfuse3", "ro"}
    pyfuse3.init(Hello("--direct-io" in sys.argv[2:]), sys.argv[1], options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
