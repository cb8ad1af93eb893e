"""The inode table: the inode number of each path the kernel was told about.

Paths are tuples of raw names (in host mode the first is the unit id). A number is
given to a path the first time the kernel looks it up and kept while the mount lives,
so ``st_ino`` stays the same for a path.
"""

from __future__ import annotations

import errno
import itertools

import pyfuse3

Path = tuple[str, ...]


class InodeTable:
    """Two maps kept in step: path -> inode number, and back."""

    def __init__(self, root: Path) -> None:
        self._inos: dict[Path, int] = {}
        self._paths: dict[int, Path] = {}
        self._next = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._bind(root, pyfuse3.ROOT_INODE)

    def __len__(self) -> int:
        return len(self._paths)

    def _bind(self, path: Path, ino: int) -> int:
        self._inos[path] = ino
        self._paths[ino] = path
        return ino

    def ino(self, path: Path) -> int:
        """The inode number of ``path``, given now if it has none."""
        ino = self._inos.get(path)
        return ino if ino is not None else self._bind(path, next(self._next))

    def known(self, path: Path) -> int | None:
        """The inode number of ``path`` if the kernel was ever told of it, else None."""
        return self._inos.get(path)

    def path(self, ino: int) -> Path:
        """The path of inode ``ino``; ENOENT for a number this table never gave."""
        path = self._paths.get(ino)
        if path is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return path

    def renumber(self, path: Path) -> None:
        """Forget ``path``'s number: what is there now is another file (a file became a
        directory), and gets a new one on its next lookup."""
        stale = self._inos.pop(path, None)
        if stale is not None:
            self._paths.pop(stale, None)
