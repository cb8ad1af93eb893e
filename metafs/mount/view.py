"""One unit's view as a mount holds it, what the view cache counts, and who is told
when a view changes: the words the view cache, its peers and its watcher share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from ..tree import Dir, Leaf, descend


class ViewUnavailable(Exception):
    """The view could not be fetched in time (the filesystem answers EIO)."""


class ViewMissing(Exception):
    """The server has no such unit (the filesystem answers ENOENT)."""


@dataclass(slots=True)
class View:
    unit_id: str
    root: Dir
    #: the store revision this view is known fresh at (read at, or found unchanged by a
    #: watch answer since): the watcher refetches it when the server reports a change to
    #: anything it shows after this revision
    seen: int
    #: what this view's tree weighs, estimated in bytes when it was fetched whole (its
    #: peers packed; a derived view shares its peer's tree: it counts with it, see
    #: ViewCache.size)
    weight: int = 0
    used: float = field(default_factory=time.monotonic)  # when a handler last asked for it


@dataclass(slots=True)
class CacheStats:
    """Counters of the view cache, for the mount's status and metrics."""

    fetches: int = 0
    fetch_errors: int = 0
    watch_answers: int = 0
    evictions: int = 0  # views dropped while their unit still exists (idle, over the bound)
    last_error: str = ""
    last_change: float = 0.0  # when the watcher last applied a change (time.time())


class ViewListener(Protocol):
    """Who is told of changes (the kernel notifier): a view changed (old, new; new None
    when the unit is gone) and the list of units changed (old, new). Called from the
    watcher task, never from a filesystem handler."""

    def views_swapped(self, unit_ids: list[str]) -> None:
        """These units' views were replaced; ``view_changed`` follows for each, soon."""
        ...

    def view_changed(self, unit_id: str, old: Dir | None, new: Dir | None) -> None: ...

    def list_changed(self, old: Dir, new: Dir) -> None: ...

    def keeps(self, unit_id: str) -> bool:
        """Whether the view must stay cached (a program waits in ``poll()`` on it)."""
        ...


def service_of(view: Dir) -> str:
    """``account/stack/service`` of a view (from ``self/deployment_unit_id``)."""
    node = descend(view, ["self", "deployment_unit_id"])
    return str(node.value).rsplit("/", 1)[0] if isinstance(node, Leaf) else ""
