"""How a view's peers travel: lazily, and by change (``/v1/view/<unit>/?peers=``).

Every view of a service embeds ``service/all_hosts/``, one entry per unit: a 1,000-unit
service's view is ~0.9 MB, and each of its 1,000 mounts used to fetch it whole at start
and a stub per peer after every change. With ``peers=`` a client says what it holds:

- ``peers=lazy`` (the client holds no peers): ``all_hosts`` of more than
  :data:`INLINE_PEERS` entries comes *pending*: its revision, time and count, no
  children; the client fetches ``/v1/view/<unit>/service/all_hosts/`` (one request, every
  peer) when something first lists or reads it. A small service comes whole, as before:
  one request is a cold start.
- ``peers=changes`` with ``since=R`` (the client holds the view as of R, peers too):
  ``all_hosts`` comes as a patch: the peers whose ``self/`` changed after R, the units
  deleted after R (the store's tombstones), and the count after.

With ``since=R`` either way, ``self/`` and ``stack/`` unchanged since R come as ``{"k":1}``
and ``service/`` as a patch of its ``all_hosts`` when its own record did not change, so a
delta after one peer changed is that peer and a few stamps: O(change), not O(service).
The peers changed after R are a bisection of :attr:`ServiceView.changes`; the deletions
one store read per revision asked, kept with the service view.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Any

from ..protocol import PEERS_AT
from ..store import Snapshot
from ..tree import KEEP, Dir, patch_meta, pending_meta, to_meta
from .errors import BadRequest
from .keys import key_ids, record_key
from .views import ServiceView, UnitView

#: a service with at most this many units sends its peers inline, whatever ``peers=`` says
INLINE_PEERS = 32
#: the deletion lists a service view keeps (one per ``since`` asked; its clients share few)
KEPT_DELETIONS = 64
#: how long a request waits for another's read of the same deletions before its own
DELETIONS_WAIT = 10.0
MODES = ("all", "lazy", "changes")


@dataclass(frozen=True, slots=True)
class PeersAsked:
    """What ``?peers=`` and ``?since=`` asked of a view: ``all`` is the default (every
    peer inline; with ``since``, a ``{"k":1}`` per unchanged one)."""

    mode: str = "all"
    since: int | None = None

    @classmethod
    def parse(cls, peers: str | None, since: str | None) -> PeersAsked:
        """From the query's values, or :class:`BadRequest` naming what is wrong."""
        mode = peers or "all"
        if mode not in MODES:
            raise BadRequest(f"peers={peers!r}: expected one of {', '.join(MODES)}")
        if since is not None and not since.isdigit():
            raise BadRequest(f"since={since!r}: expected a revision, with format=meta")
        if mode == "changes" and since is None:
            raise BadRequest("peers=changes needs since=<revision>: the revision of the view you hold")
        return cls(mode, int(since) if since is not None else None)


async def apply(snap: Snapshot, view: UnitView, asked: PeersAsked) -> None:
    """Set ``view.swaps``: the subtrees sent in another form for ``asked``."""
    shared = view.shared
    if asked.mode == "all" or shared is None:
        return
    all_hosts = _all_hosts(shared)
    lazy = asked.mode == "lazy" and len(all_hosts.children) > INLINE_PEERS
    view.variant = "+lazy" if lazy else ""
    swaps: dict[int, Any] = {}
    if lazy:
        swaps[id(all_hosts)] = pending_meta(all_hosts)
    if asked.since is None:
        view.swaps = swaps
        return
    since = asked.since
    me = shared.selves.get(view.unit_id)
    if me is not None and max(me[0]) <= since:
        swaps[id(me[1])] = KEEP
    if asked.mode == "changes":
        swaps[id(all_hosts)] = await _peers_patch(snap, shared, all_hosts, since)
    stack_revs = shared.revs[1:3]  # the stack's services, the stack
    if max(stack_revs) <= since:
        swaps[id(shared.stack)] = KEEP
    svc = shared.records.get(record_key("service", shared.ids))
    if svc is not None and svc.rev <= since:
        peers = swaps[id(all_hosts)] if id(all_hosts) in swaps else to_meta(all_hosts)
        if peers == KEEP:
            swaps[id(shared.service)] = KEEP
        else:
            swaps[id(shared.service)] = patch_meta(shared.service, {"all_hosts": peers}, ())
    view.swaps = swaps


def listing(shared: ServiceView) -> UnitView:
    """``/v1/view/<unit>/service/all_hosts/``: the service's peers, as a view of their own
    (keyed by the service, not the unit), so that its rendered body is made once for
    every unit of the service that asks (render.py keeps it) and dropped with it."""
    node = _all_hosts(shared)
    key = "/".join((*shared.ids, *PEERS_AT))  # no unit id has a '/'
    return UnitView(node.children, node.rev, node.mtime, node.seq, shared=shared, unit_id=key)


def _all_hosts(shared: ServiceView) -> Dir:
    node = shared.service.children["all_hosts"]
    assert isinstance(node, Dir)
    return node


async def _peers_patch(snap: Snapshot, shared: ServiceView, all_hosts: Dir, since: int) -> Any:
    """``all_hosts`` as a change of its state at ``since``; KEEP when it did not change."""
    at = bisect.bisect_right(shared.changes, (since, "\U0010ffff"))
    changed = {uid: to_meta(all_hosts.children[uid]) for _, uid in shared.changes[at:]}
    deleted = await _deleted(snap, shared, since)
    if not changed and not deleted:
        return KEEP
    return patch_meta(all_hosts, changed, deleted)


async def _deleted(snap: Snapshot, shared: ServiceView, since: int) -> list[str]:
    """The service's units deleted after ``since`` and not back: the same for every
    snapshot the service view is current at (its units' last change is in ``revs``).
    Read once however many clients ask at once (each woken client asks right away)."""
    kept = shared.deleted.get(since)
    if kept is not None:
        return kept
    if shared.revs[0] <= since:
        return _keep_deleted(shared, since, [])  # no unit of the service changed (or went)
    async with shared.deleting.first(since, DELETIONS_WAIT) as first:
        if not first and (kept := shared.deleted.get(since)) is not None:
            return kept  # another request read them meanwhile
        keys = await snap.deleted_since(record_key("unit", shared.ids), since)
        gone = [uid for uid in (key_ids(k)[3] for k in keys) if uid not in shared.selves]
        return _keep_deleted(shared, since, gone)


def _keep_deleted(shared: ServiceView, since: int, gone: list[str]) -> list[str]:
    if len(shared.deleted) >= KEPT_DELETIONS:
        shared.deleted.clear()
    shared.deleted[since] = gone
    return gone
