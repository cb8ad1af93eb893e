"""The catalog as service discovery sees it: each unit an *instance* of its service (an
address, a port, tags), each host a *node*, read in a snapshot for a scope. What Consul's
catalog and health APIs and Prometheus' HTTP SD serve (server/consul_catalog.py,
server/prometheus_sd.py) is made from these.

Each answer reads only the prefixes it depends on (the services in scope, then one
service's units, the hosts they name), so its index, and the long poll of a blocking
query, move with what it shows and not with the rest of the fleet. Instances decoded from
a service's records are kept while those records are unchanged (:class:`Instances`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import anyio

from ..lru import LRU
from ..store import Snapshot, yielding
from ..tree import scalar_text
from .keys import key_ids, record_key
from .records import Record
from .scope import Scope
from .views import BIG_SERVICE

#: a service's Consul name: its ids, most specific first, each ``.`` made ``-`` (Consul
#: clients such as consul-template read ``a.b`` as a tag and a name)
NAME_SEPARATOR = "--"
#: a port as a unit lists it: ``80``, ``80/tcp``, ``8080:80/udp`` (the last number is the
#: container's, which is what the unit's address serves)
_PORT = re.compile(r"(?:.*:)?(\d{1,5})(?:/[a-z]+)?")
#: the label that picks the port to scrape, as Kubernetes' convention spells it
SCRAPE_PORT_LABEL = "prometheus.io/port"


#: answers of more entries than this are encoded off the event loop
BIG_ANSWER = 1_000


async def encoded(value: Any) -> bytes:
    """``value`` as JSON bytes; a big one (5,000 target groups: ~25 ms) in a worker
    thread, so the event loop runs meanwhile."""
    if isinstance(value, (list, dict)) and len(value) > BIG_ANSWER:
        return await anyio.to_thread.run_sync(lambda: json.dumps(value).encode())
    return json.dumps(value).encode()


def natural(text: str) -> list[Any]:
    """A sort key that orders ``u2`` before ``u10`` (and ignores case)."""
    return [int(part) if i % 2 else part.lower() for i, part in enumerate(re.split(r"(\d+)", text))]


def consul_name(ids: tuple[str, ...]) -> str:
    """``(account, stack, service)`` -> ``service--stack--account`` (no ``.``)."""
    return NAME_SEPARATOR.join(i.replace(".", "-") for i in reversed(ids))


def port_number(item: str) -> int | None:
    m = _PORT.fullmatch(item.strip())
    if m is None or not 0 < int(m.group(1)) < 65536:
        return None
    return int(m.group(1))


def strings(labels: dict[str, Any]) -> dict[str, str]:
    """Labels as discovery carries them: every value a string, as its file shows it."""
    return {k: scalar_text(v) for k, v in labels.items()}


@dataclass(frozen=True, slots=True)
class Instance:
    """One unit, as a service instance."""

    unit: str
    ids: tuple[str, str, str]  # (account, stack, service)
    hostname: str
    cardinal: int
    address: str  # its virt_ip_address, or ""
    port: int | None  # its first port
    host: str  # "" when it has none
    labels: dict[str, str]
    service_labels: dict[str, str]
    create_rev: int
    mod_rev: int
    mod_time: float
    #: account, stack, service and unit id in natural order (made once per decode)
    order: tuple[list[Any], ...]

    @property
    def tags(self) -> list[str]:
        """Its service's labels and its own (its own win), as ``key=value``."""
        return [f"{k}={v}" for k, v in sorted({**self.service_labels, **self.labels}.items())]

    @property
    def scrape_port(self) -> int | None:
        """``prometheus.io/port`` of the unit, else of its service, else its first port."""
        for labels in (self.labels, self.service_labels):
            if SCRAPE_PORT_LABEL in labels:
                return port_number(labels[SCRAPE_PORT_LABEL])
        return self.port


@dataclass(frozen=True, slots=True)
class Node:
    """One host, as a Consul node."""

    name: str
    address: str  # its agent_ip, or ""
    hostname: str
    meta: dict[str, str]
    create_rev: int
    mod_rev: int


@dataclass(frozen=True, slots=True)
class Service:
    """A service in scope: its ids and the name discovery gives it."""

    ids: tuple[str, str, str]
    name: str


def _instance(unit: Record, service_labels: dict[str, str]) -> Instance:
    a, t, s, u = key_ids(unit.item.key)
    d = unit.data
    ports = [p for p in (port_number(str(i)) for i in d.get("ports") or []) if p is not None]
    return Instance(
        unit=u,
        ids=(a, t, s),
        hostname=str(d.get("hostname", "")),
        cardinal=int(d.get("cardinal_value", 0)),
        address=str(d.get("virt_ip_address") or ""),
        port=ports[0] if ports else None,
        host=str(d.get("host") or ""),
        labels=strings(d.get("labels") or {}),
        service_labels=service_labels,
        create_rev=unit.item.create_rev,
        mod_rev=unit.item.mod_rev,
        mod_time=unit.item.mod_time,
        order=(natural(a), natural(t), natural(s), natural(u)),
    )


@dataclass(frozen=True, slots=True)
class ServiceInstances:
    """A service's instances, as of ``stamps`` (see ``Snapshot.version_of``: its unit and
    service records) and its service record's revision."""

    stamps: tuple[object, ...]
    service_rev: int
    by_key: dict[str, Instance]
    instances: list[Instance]

    @property
    def changed(self) -> tuple[int, float]:
        """The revision and time at which its units last changed (deletions included)."""
        return self.stamps[0]  # type: ignore[return-value]


class Instances:
    """The instances of each service, kept while its records are unchanged, and after a
    change only the units that changed decoded again: decoding 5,000 unit records costs
    ~100 ms, and Prometheus, consul-template and Traefik each ask again on every change.
    Bounded by ``max_bytes`` (``serve --instance-cache-size``), at
    :data:`BYTES_PER_INSTANCE` each (tracemalloc: 880 B for a unit with one label, and its
    slot). A fleet over the bound is read again at each list (an LRU scanned in order
    keeps nothing): 50,000 units did not fit in 64 MiB at 1.5 KB each, and every search
    took 1.2-2.4 s. The stamps carry their time and the compacted revision, so a store put
    back, or a tombstone compacted away, never matches a kept entry."""

    BYTES_PER_INSTANCE = 1_000

    def __init__(self, max_bytes: int = 96 << 20) -> None:
        def weigh(kept: ServiceInstances) -> int:
            return 256 + self.BYTES_PER_INSTANCE * len(kept.instances)

        self._kept: LRU[tuple[str, ...], ServiceInstances] = LRU(weigh, max_bytes)

    async def of(self, snap: Snapshot, ids: tuple[str, str, str]) -> ServiceInstances:
        """The instances of service ``ids``, sorted by unit id. A scope reads every
        instance of a service it may read: a unit's view shows its peers (``all_hosts/``)."""
        prefixes = [record_key("unit", ids), record_key("service", ids)]
        stamps = await snap.version_of(prefixes)
        kept = self._kept.get(ids)
        if kept is None or kept.stamps != stamps:
            service = await snap.get(prefixes[1])
            labels = strings(Record.load(service).data.get("labels") or {}) if service else {}
            rev = service.mod_rev if service else 0
            old = kept.by_key if kept is not None and kept.service_rev == rev else {}
            by_key = {}
            # sorted by key, so by unit id; the loop runs between batches
            async for item in yielding(await snap.range(prefixes[0]), BIG_SERVICE):
                inst = old.get(item.key)
                if inst is None or inst.mod_rev != item.mod_rev:
                    inst = _instance(Record.load(item), labels)
                by_key[item.key] = inst
            kept = ServiceInstances(stamps, rev, by_key, list(by_key.values()))
            self._kept.put(ids, kept)
        return kept

    def drop(self, under: tuple[str, ...] = ()) -> None:
        """Forget the services at and below ``under`` (an account, stack or service
        deleted: what they describe is gone)."""
        for ids in self._kept:
            if ids[: len(under)] == under:
                self._kept.pop(ids)

    def __len__(self) -> int:
        return len(self._kept)

    @property
    def size(self) -> int:
        return self._kept.size


async def services(snap: Snapshot, scope: Scope) -> list[Service]:
    """Every service ``scope`` may read, sorted by name. Names are unique: two services
    whose names would be the same (ids that differ only by ``.`` and ``-``) each get
    eight hex digits of their ids' hash after their name."""
    if scope.services is None or scope.account is not None:
        prefix = "s/" if scope.account is None else record_key("service", (scope.account,))
        found = [tuple(key_ids(i.key)) for i in await snap.range(prefix)]
    else:
        found = sorted(scope.services)
        await snap.last_change(scope.list_prefix)  # a unit moved in or out changes the list
    named: dict[str, list[tuple[str, ...]]] = {}
    for ids in found:
        named.setdefault(consul_name(ids), []).append(ids)
    out = []
    for name, all_ids in named.items():
        for ids in all_ids:
            if len(all_ids) > 1:
                digest = hashlib.sha256("/".join(ids).encode()).hexdigest()[:8]
                out.append(Service(ids, f"{name}{NAME_SEPARATOR}{digest}"))  # type: ignore[arg-type]
            else:
                out.append(Service(ids, name))  # type: ignore[arg-type]
    return sorted(out, key=lambda s: s.name)


async def in_scope(
    snap: Snapshot, scope: Scope, instances: Instances, only: str | None = None
) -> list[tuple[Service, ServiceInstances]]:
    """Every service ``scope`` may read (``only``: the one of that name), sorted by name,
    with its instances. Only those services' records are read, so an answer about one
    service moves (and wakes its blocking queries) with that service alone."""
    return [
        (svc, await instances.of(snap, svc.ids))
        for svc in await services(snap, scope)
        if only is None or svc.name == only
    ]


async def nodes(snap: Snapshot, names: Iterable[str] | None = None) -> dict[str, Node]:
    """The hosts named (None: every host), by name; a name without a record is left out."""
    if names is None:
        items = await snap.range("h/")
    else:
        keys = [record_key("host", (n,)) for n in sorted(set(names)) if n]
        items = [i for i in (await snap.get_many(keys)).values() if i is not None]
    out = {}
    for item in items:
        rec = Record.load(item)
        (name,) = key_ids(item.key)
        d = rec.data
        out[name] = Node(
            name=name,
            address=str(d.get("agent_ip") or ""),
            hostname=str(d.get("hostname") or ""),
            meta=strings(d.get("labels") or {}),
            create_rev=item.create_rev,
            mod_rev=item.mod_rev,
        )
    return out
