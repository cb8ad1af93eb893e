"""The catalog's reads: every tree the API serves, built in one snapshot.

The service views built for one request are kept (:class:`~.views.ServiceViews`) and
reused by the next while the records they read are unchanged, so callers never see the
cache: they ask for a tree in a snapshot, for a scope.
"""

from __future__ import annotations

from ..protocol import PEERS_AT
from ..store import Snapshot
from ..tree import Dir, Node, descend
from . import layouts, peers
from .errors import BadRequest
from .paths import check_id
from .peers import PeersAsked
from .scope import Scope
from .views import ServiceViews, view_tree


class Reads:
    """Trees of the catalog, read in a snapshot the caller holds."""

    def __init__(self, views: ServiceViews) -> None:
        self.views = views

    async def seed(self, snap: Snapshot, segs: list[str], scope: Scope) -> Node | None:
        """``/v1/kv/<account>/<stack>/<service>/<unit>/...``: the seed's layout."""
        return await layouts.seed_tree(snap, segs, scope, self.views)

    async def view(
        self, snap: Snapshot, segs: list[str], scope: Scope, asked: PeersAsked | None = None
    ) -> Node | None:
        """``/v1/view/<unit>/...``: a unit's view (with no unit: the units listed); a whole
        view's peers as ``asked`` (see :mod:`.peers`)."""
        if not segs:
            return await layouts.units_tree(snap, scope)
        check_id(segs[0], "unit id")
        scope.require_unit(segs[0])
        view = await view_tree(snap, segs[0], self.views)
        if view is None:
            return None
        if asked is not None and asked.mode != "all":
            if segs[1:]:
                raise BadRequest("peers= applies to a whole view (/v1/view/<unit>/), not to a path in it")
            await peers.apply(snap, view, asked)
        if [s for s in segs[1:] if s] == list(PEERS_AT) and view.shared is not None:
            return peers.listing(view.shared)  # the same for every unit: made once
        return descend(view, segs[1:])

    async def units(self, snap: Snapshot, segs: list[str], scope: Scope) -> Node | None:
        """``/v1/units/``: every unit id the scope may see."""
        return descend(await layouts.units_tree(snap, scope), segs)

    async def document(self, snap: Snapshot, segs: list[str], scope: Scope) -> Node | None:
        """``/v1/accounts/...``, ``/v1/hosts/...``: the document API (operators and readers;
        one account's reader sees ``/v1/accounts/`` as its account alone)."""
        scope.require_document(segs)
        if scope.account is not None and len(segs) == 1:
            accounts = Dir()
            mine = await layouts.document_tree(snap, ["accounts", scope.account])
            if mine is not None:
                accounts.add(scope.account, mine)
            return accounts
        return await layouts.document_tree(snap, segs)

    async def tokens(self, snap: Snapshot, segs: list[str], scope: Scope) -> Node | None:
        """``/v1/tokens/``: every token's id, kind and subject (operators only)."""
        scope.require_operator()
        return descend(await layouts.tokens_tree(snap), segs)

    async def watch(self, snap: Snapshot, units: list[str], with_list: bool, scope: Scope) -> Dir:
        """``/v1/watch``: when each unit's view (and the list of units) last changed."""
        return await layouts.watch_tree(snap, units, with_list, scope)
