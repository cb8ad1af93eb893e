"""API paths as the catalog reads them: a document path (``accounts/5/stacks/t/...``,
``hosts/h``) or a seed path (``5/t/s/<unit>/...``) named as a record and a field."""

from __future__ import annotations

from dataclasses import dataclass

from .. import model
from .errors import BadRequest, NotFound
from .keys import COLLECTIONS, LEVELS, doc_path, record_key


@dataclass(frozen=True, slots=True)
class Target:
    """What a document-API path names: a record (``kind``, ``ids``) and a field in it."""

    kind: str  # "root", "accounts", "hosts", "account", "stack", "service", "unit", "host"
    ids: tuple[str, ...]
    field: tuple[str, ...]

    @property
    def key(self) -> str:
        return record_key(self.kind, self.ids)

    @property
    def where(self) -> str:
        return doc_path(self.kind, self.ids)


def parse_doc_path(segs: list[str]) -> Target:
    """Map ``accounts/5/stacks/t/services/s/units/u/hostname`` (or ``hosts/h/...``)."""
    if not segs:
        return Target("root", (), ())
    if segs[0] == "hosts":
        if len(segs) == 1:
            return Target("hosts", (), ())
        return Target("host", (check_id(segs[1], "host name"),), tuple(segs[2:]))
    if segs[0] != "accounts":
        raise NotFound(f"no such path: /v1/{segs[0]} (expected accounts/ or hosts/)")
    if len(segs) == 1:
        return Target("accounts", (), ())
    ids = [segs[1]]
    i = 2
    while len(ids) < 4 and i + 1 < len(segs) and segs[i] == COLLECTIONS[len(ids)]:
        ids.append(segs[i + 1])
        i += 2
    check_ids(ids)
    return Target(LEVELS[len(ids) - 1], tuple(ids), tuple(segs[i:]))


def check_id(seg: str, what: str) -> str:
    """A path segment that names an account, stack, service, unit or host."""
    try:
        return model.check_name(seg)
    except ValueError as exc:
        raise BadRequest(f"path segment {seg!r} is not a valid {what}: {exc}") from None


def check_ids(segs: list[str]) -> None:
    for seg, what in zip(segs, ("account id", "stack name", "service name", "unit id"), strict=False):
        check_id(seg, what)


def seed_to_target(segs: list[str]) -> Target:
    """The seed's layout ``<account>/<stack>/<service>/<unit>/<field...>`` as a target."""
    n = min(len(segs), 4)
    if n == 0:
        raise BadRequest("a write needs at least an account: /v1/kv/<account>/...")
    check_ids(segs)
    return Target(LEVELS[n - 1], tuple(segs[:n]), tuple(segs[4:]))
