"""The names both sides of the HTTP API spell the same way: the ``/v1`` routes, the
guard header, the headers a read answers with. The server, its metrics, its OpenAPI
document and the client all take them from here."""

from __future__ import annotations

#: ``/v1/<route>/...``; ``load`` takes a POST only, ``watch`` is long-polled
ROUTES = (
    "kv",
    "view",
    "units",
    "watch",
    "accounts",
    "hosts",
    "tokens",
    "load",
    "backup",
    "agent",
    "catalog",
    "health",
    "prometheus",
    "fleet",
)
#: the first segments of a key that name a route of their own (the rest are seed paths)
KEY_ROUTES = frozenset({"accounts", "hosts", "units", "view", "kv"})
#: sent on every request: guest-facing reads require it (SSRF guard, like GCE's
#: ``Metadata-Flavor: Google``)
FLAVOR = ("Metadata-Flavor", "metafs")
#: the revision of the store a read was made at, or a write committed
REVISION_HEADER = "X-Metafs-Revision"
#: the identity of the store an answer comes from: made when a store is created (or
#: restored from a backup), the same for every server over one etcd cluster. A client
#: that sees it change has a new store behind the same URL: what it holds, and the
#: revisions it has seen, are from another history (refetch whole)
STORE_HEADER = "X-Metafs-Store"
#: the status of a read whose ``index`` or ``since`` this store cannot answer from: a
#: revision it never reached (it was replaced by an older copy, or wiped). Kubernetes'
#: answer to a watch from an expired version; the client refetches whole
EXPIRED = 410
#: the revision at which the subtree read last changed (a long poll's ``index``)
INDEX_HEADER = "X-Metafs-Index"
#: ``value`` or ``directory``
KIND_HEADER = "X-Metafs-Kind"
#: where a unit's view holds its service's peers (``?peers=`` sends them lazily or as a
#: change: see metafs/catalog/peers.py); a client fetches this path for them all at once
PEERS_AT = ("service", "all_hosts")
