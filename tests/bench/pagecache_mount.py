"""``metafs mount --foreground`` with files served through the kernel's page cache
(``keep_cache``) instead of ``direct_io``. NOT what metafs ships.

The benchmark mounts this variant next to the real one to put numbers on the choice:
what the page cache would buy (reads answered by the kernel, like tmpfs) and what it
costs (a read that races a change of a value's length can come back cut or zero-padded,
counted in the same run). Invalidation is the shipped code's: ``invalidate_inode`` drops
the pages and attributes of a changed file.

Usage: ``python pagecache_mount.py MOUNTPOINT --server URL [--unit UNIT] ...`` (the
arguments of ``metafs mount``; always in the foreground).
"""

from __future__ import annotations

import sys

import pyfuse3

from metafs.cli.main import main
from metafs.mount import daemon
from metafs.mount.fs import MetaFS


class PageCacheFS(MetaFS):
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        info = await super().open(inode, flags, ctx)
        info.direct_io = False
        info.keep_cache = True
        return info


if __name__ == "__main__":
    setattr(daemon, "MetaFS", PageCacheFS)  # noqa: B010  # the daemon builds this class
    sys.exit(main(["mount", *sys.argv[1:], "--foreground"]))
