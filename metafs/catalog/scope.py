"""Who may read what: a token's principal, and the units and services it may see,
resolved in the snapshot a request reads from."""

from __future__ import annotations

import json
from dataclasses import dataclass

from .. import auth
from ..store import Snapshot
from .errors import Forbidden
from .keys import host_index_key, index_key, key_ids, token_key


@dataclass(frozen=True, slots=True)
class Scope:
    """What a principal may read, resolved in the snapshot a request reads from.

    ``units``: the unit ids whose views it may read; ``services``: the ``(account, stack,
    service)`` whose seed paths it may read; ``list_prefix``: the keys whose changes
    change its list of units. None means everything (the operator)."""

    principal: auth.Principal
    units: frozenset[str] | None
    services: frozenset[tuple[str, ...]] | None
    list_prefix: str

    def require_all(self) -> None:
        """Reads of everything at once (the document API): operators and readers."""
        if self.units is not None:
            raise Forbidden(
                f"a {self.principal.kind} token may not do this: it needs an operator or reader token"
            )

    def require_operator(self) -> None:
        if not self.principal.operator:
            raise Forbidden(f"a {self.principal.kind} token may not do this: it needs an operator token")

    def require_unit(self, unit_id: str) -> None:
        if self.units is not None and unit_id not in self.units:
            raise Forbidden(f"this {self.principal.kind} token may not read unit {unit_id!r}")

    def require_seed_path(self, segs: list[str]) -> None:
        """A seed path is readable if it leads to, or lies inside, a readable service."""
        if self.services is None or not segs:
            return  # everything, or the root (whose listing is pruned to the scope)
        n = min(len(segs), 3)
        if not any(tuple(segs[:n]) == svc[:n] for svc in self.services):
            raise Forbidden(f"this {self.principal.kind} token may not read /v1/kv/{'/'.join(segs)}")


async def scope_of(snap: Snapshot, principal: auth.Principal) -> Scope:
    if principal.operator or principal.kind == "reader":  # the reader reads, never writes
        return Scope(principal, None, None, "i/")
    if principal.kind == "unit":
        idx = await snap.get(index_key(principal.subject))
        services = frozenset([tuple(idx.value.split("/"))]) if idx else frozenset()
        return Scope(principal, frozenset([principal.subject]), services, index_key(principal.subject))
    prefix = host_index_key(principal.subject)
    placed = await snap.range(prefix)
    units = frozenset(key_ids(i.key)[1] for i in placed)
    return Scope(principal, units, frozenset(tuple(i.value.split("/")) for i in placed), prefix)


async def authenticate(snap: Snapshot, token: str) -> auth.Principal | None:
    """The principal a (non-bootstrap) token stands for, or None."""
    d = auth.digest(token)
    item = await snap.get(token_key(auth.token_id(d)))
    if item is None:
        return None
    rec = json.loads(item.value)
    if not auth.same_digest(rec["hash"], d):
        return None
    return auth.Principal(rec["kind"], rec["subject"], auth.token_id(d))
