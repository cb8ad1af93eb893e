"""The key layout: where each record and index lives in the store.

Each account, stack, service, unit and host is one record (JSON) under its own key::

    a/<account>/                           account (labels)
    t/<account>/<stack>/                   stack (labels)
    s/<account>/<stack>/<service>/         service (service_domain, scale, labels, metadata)
    u/<account>/<stack>/<service>/<unit>/  deployment unit
    h/<host>/                              host
    i/<unit>/                              index: unit id -> "<account>/<stack>/<service>"
    hu/<host>/<unit>/                      index: the units placed on a host
    k/<token id>/                          a token: its SHA-256, kind, subject (never the token)
"""

from __future__ import annotations

KIND_PREFIX = {"account": "a", "stack": "t", "service": "s", "unit": "u"}


LEVELS = ["account", "stack", "service", "unit"]


COLLECTIONS = ["accounts", "stacks", "services", "units"]


def record_key(kind: str, ids: tuple[str, ...]) -> str:
    return ("h" if kind == "host" else KIND_PREFIX[kind]) + "/" + "".join(i + "/" for i in ids)


def index_key(unit_id: str) -> str:
    return f"i/{unit_id}/"


def host_index_key(host: str, unit_id: str = "") -> str:
    return f"hu/{host}/{unit_id}/" if unit_id else f"hu/{host}/"


def token_key(token_id: str) -> str:
    return f"k/{token_id}/"


RECORD_PREFIXES = ("a/", "t/", "s/", "u/", "h/")


def key_ids(key: str) -> list[str]:
    """The ids in a record key: ``u/5/t/s/x/`` -> ``['5', 't', 's', 'x']``."""
    return key.split("/")[1:-1]


def doc_path(kind: str, ids: tuple[str, ...]) -> str:
    """The dotted document path of a record, as validation errors name it."""
    if kind == "host":
        return f"hosts.{ids[0]}"
    return ".".join(f"{c}.{i}" for c, i in zip(COLLECTIONS, ids, strict=False))


def view_prefixes(a: str, t: str, s: str) -> list[str]:
    """What the views of service ``a/t/s`` are read from: its units, its stack's services
    (a unit's ``stack/services/``), the stack, and every host."""
    return [record_key("unit", (a, t, s)), record_key("service", (a, t)), record_key("stack", (a, t)), "h/"]
