"""The inode table: the inode number of each path the kernel holds, and how many
references it holds (its lookup count).

Paths are tuples of raw names (in host mode the first is the unit id). A path gets a
number when the kernel first looks it up (``lookup``, or an entry of ``readdir``), each
such reply counts one reference, and ``forget`` gives them back: a path the kernel holds
no reference to any more is dropped, and its number is never given again. So ``st_ino``
is stable for as long as the kernel holds the inode (the kernel cannot tell otherwise),
and the table holds what the kernel holds, not what was ever looked at (pyfuse3's
``examples/passthroughfs.py`` counts the same way).
"""

from __future__ import annotations

import errno
import itertools

import pyfuse3

Path = tuple[str, ...]


class InodeTable:
    """path <-> inode number, with the kernel's lookup count of each."""

    def __init__(self, root: Path) -> None:
        self._inos: dict[Path, int] = {root: pyfuse3.ROOT_INODE}
        self._paths: dict[int, Path] = {pyfuse3.ROOT_INODE: root}
        self._lookups: dict[int, int] = {}
        self._next = itertools.count(pyfuse3.ROOT_INODE + 1)

    def __len__(self) -> int:
        return len(self._paths)

    def ino(self, path: Path) -> int:
        """The inode number of ``path``, given now if it has none (not counted: see
        :meth:`looked_up`)."""
        ino = self._inos.get(path)
        if ino is None:
            ino = next(self._next)
            self._inos[path] = ino
            self._paths[ino] = path
        return ino

    def looked_up(self, ino: int) -> None:
        """The kernel was given an entry for ``ino`` (a lookup or readdir reply)."""
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def forget(self, ino: int, n: int) -> None:
        """The kernel gives back ``n`` references; at none left, the path is dropped."""
        left = self._lookups.pop(ino, 0) - n
        if left > 0:
            self._lookups[ino] = left
        else:
            self._drop(ino)

    def drop_unreferenced(self, ino: int) -> None:
        """Drop ``ino`` if the kernel holds no reference to it (a number given for an
        entry the kernel did not take: a full readdir buffer)."""
        if ino not in self._lookups:
            self._drop(ino)

    def _drop(self, ino: int) -> None:
        if ino != pyfuse3.ROOT_INODE:
            path = self._paths.pop(ino, None)
            if path is not None and self._inos.get(path) == ino:
                del self._inos[path]

    def known(self, path: Path) -> int | None:
        """The inode number of ``path`` if the kernel holds it, else None."""
        return self._inos.get(path)

    def path(self, ino: int) -> Path:
        """The path of inode ``ino``; ENOENT for a number the kernel no longer holds."""
        path = self._paths.get(ino)
        if path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return path

    def renumber(self, path: Path) -> None:
        """What is at ``path`` now is another file (a file became a directory): its next
        lookup gets a new number, and the old number answers ENOENT until forgotten."""
        stale = self._inos.pop(path, None)
        if stale is not None:
            self._paths.pop(stale, None)
