"""The OpenAPI 3.1 description of the HTTP API, served at ``/openapi.json``.

Paths whose tail is a path inside a tree (``/v1/kv/...``, ``/v1/view/<unit>/...``) are
described at their fixed depths, since an OpenAPI path parameter cannot hold a ``/``.
"""

from __future__ import annotations

from typing import Any

from ..catalog.peers import INLINE_PEERS
from ..model import NAME_RE
from ..protocol import FLAVOR

NAME = {"type": "string", "pattern": NAME_RE.pattern}
_STATUSES = {
    "200": "the value (text), or the subtree (JSON)",
    "304": "not modified since the ETag in If-None-Match",
    "400": "malformed path, query or body, or invalid metadata",
    "401": "no token, or an invalid or revoked one",
    "403": "no Metadata-Flavor (nor X-Consul-Token), a proxy header, or out of the token's scope",
    "404": "no such key (yet)",
    "405": "method not allowed here",
    "408": "the request body did not arrive in time",
    "409": "a unit id used elsewhere",
    "410": (
        "index= or since= names a revision this store never reached: the store was replaced (an"
        " older copy put back, wiped and reloaded, restored). Read again without them, whole;"
        " X-Metafs-Store names the store. Consul's protocol answers such an index at once instead"
    ),
    "413": "body over the size limit",
    "503": "the store is unavailable",
}
_FLAVOR = {
    "name": FLAVOR[0],
    "in": "header",
    "required": True,
    "schema": {"type": "string", "const": FLAVOR[1]},
    "description": "required on every /v1 request (SSRF guard)",
}
_READ_QUERY = [
    {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["text", "json", "meta"]}},
    {
        "name": "index",
        "in": "query",
        "schema": {"type": "integer", "minimum": 0},
        "description": (
            "long poll: answer when what is read changes after this revision (or wait= ends);"
            " every answer carries X-Metafs-Store, the store's identity: when it changes, or a"
            " 410 comes, what was read before is from another store (refetch whole)"
        ),
    },
    {"name": "wait", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,4}(ms|s|m)?$"}},
]


#: Consul's KV protocol on /v1/kv (metafs/server/consul.py): a request with
#: X-Consul-Token or any of these parameters gets Consul's shapes; the others metafs's
CONSUL_RULE = (
    "Consul's KV protocol on the same paths: a request that carries X-Consul-Token, or any of"
    " raw, recurse, keys, separator, dc, stale, consistent, cached, token, cas, flags, is answered"
    " as Consul answers (JSON entries with a base64 Value, X-Consul-Index, true/false for"
    " writes); every other request gets metafs's text and JSON. X-Consul-Token stands in for"
    " Metadata-Flavor; ?token= does not."
)
_CONSUL_TOKEN = {
    "name": "X-Consul-Token",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "a metafs token, as Consul clients send it (stands in for Metadata-Flavor)",
}


def _flag(name: str, text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "schema": {"type": "string"},
        "allowEmptyValue": True,
        "description": text,
    }


_CONSUL_QUERY = {
    "get": [
        _flag("raw", "Consul: the value itself"),
        _flag("recurse", "Consul: every key with this prefix"),
        _flag("keys", "Consul: the key names with this prefix"),
        _flag("separator", "Consul, with keys: names up to the next separator"),
        _flag("token", "Consul: a token (beside Metadata-Flavor only)"),
        *(
            _flag(n, "Consul: accepted (one datacenter, every read consistent)")
            for n in ("dc", "stale", "consistent", "cached")
        ),
    ],
    "put": [
        {
            "name": "cas",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0},
            "description": "Consul: check-and-set",
        },
        {
            "name": "flags",
            "in": "query",
            "schema": {"type": "integer", "const": 0},
            "description": "Consul: only 0",
        },
    ],
    "delete": [
        _flag("recurse", "Consul: a record and everything below it"),
        {
            "name": "cas",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0},
            "description": "Consul: check-and-set",
        },
    ],
}


def _consul(item: dict[str, Any]) -> dict[str, Any]:
    """A /v1/kv path item that also speaks Consul's protocol."""
    for method, op in item.items():
        op["parameters"] = [*op["parameters"], _CONSUL_TOKEN, *_CONSUL_QUERY[method]]
        op["description"] = CONSUL_RULE
    return item


def _path_params(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "path", "required": True, "schema": NAME} for n in names]


def _responses() -> dict[str, Any]:
    return {code: {"description": text} for code, text in _STATUSES.items()}


def _op(summary: str, params: list[dict[str, Any]], body: bool = False, query: bool = True) -> dict[str, Any]:
    op: dict[str, Any] = {
        "summary": summary,
        "parameters": [_FLAVOR, *params, *(_READ_QUERY if query else [])],
        "responses": _responses(),
    }
    if body:
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": {}},
                "text/plain": {"schema": {"type": "string"}},
            },
        }
    return op


def _resource(summary: str, params: list[dict[str, Any]], writable: bool = True) -> dict[str, Any]:
    item = {"get": _op(f"read {summary}", params)}
    if writable:
        item["put"] = _op(f"create or replace {summary}", params, body=True, query=False)
        item["delete"] = _op(f"delete {summary}", params, query=False)
    return item


def _discovery(summary: str, *names: str) -> dict[str, Any]:
    """A Consul catalog, health or agent read (metafs/server/consul_catalog.py): a
    blocking query by Consul's rules, with its filters; writes there answer 405."""
    query = [
        {"name": "index", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "wait", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,4}(ms|s|m)?$"}},
        {"name": "tag", "in": "query", "schema": {"type": "string"}, "description": "repeatable"},
        {"name": "node-meta", "in": "query", "schema": {"type": "string", "pattern": "^[^:]+:.*$"}},
        *({"name": n, "in": "query", "schema": {"type": "string"}} for n in ("dc", "passing", "stale")),
    ]
    params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in names]
    op = {"summary": summary, "parameters": [_FLAVOR, *params, *query], "responses": _responses()}
    return {"get": op}


def _fleet() -> dict[str, Any]:
    """``/v1/fleet/...`` (metafs/server/fleet.py): the web page's paged lists and search."""
    page: list[dict[str, Any]] = [
        {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 1000}},
        *_READ_QUERY[1:],
    ]
    units: list[dict[str, Any]] = [
        {
            "name": "service",
            "in": "query",
            "schema": {"type": "string"},
            "description": "ACCOUNT/STACK/SERVICE",
        },
        {"name": "host", "in": "query", "schema": {"type": "string"}},
    ]
    found: list[dict[str, Any]] = [
        {"name": "q", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 200}},
        *_READ_QUERY[1:],
    ]

    def op(summary: str, params: list[dict[str, Any]]) -> dict[str, Any]:
        return {"get": {"summary": summary, "parameters": [_FLAVOR, *params], "responses": _responses()}}

    return {
        "/v1/fleet/services": op("services with their unit counts and last change, paged", page),
        "/v1/fleet/hosts": op("hosts with their units, paged", page),
        "/v1/fleet/units": op("units (of a service, or on a host), paged", page + units),
        "/v1/fleet/search": op("units whose id, hostname, address, host or label contains q", found),
    }


def _view_resource(unit: str) -> dict[str, Any]:
    item = _resource("a unit's view (the file layout)", _path_params(unit), writable=False)
    item["get"]["parameters"].append(
        {
            "name": "since",
            "in": "query",
            "schema": {"type": "integer", "minimum": 0},
            "description": (
                "with format=meta, the revision of the view you hold: what did not change since"
                ' comes as {"k": 1} (with peers=all, each unchanged peer too)'
            ),
        }
    )
    item["get"]["parameters"].append(
        {
            "name": "peers",
            "in": "query",
            "schema": {"type": "string", "enum": ["all", "lazy", "changes"], "default": "all"},
            "description": (
                "with format=meta, how service/all_hosts comes. all: every peer inline. lazy: a"
                f" service of more than {INLINE_PEERS} units sends all_hosts pending"
                ' ({"r", "m", "n": count, "d": 1}): GET /v1/view/{unit}/service/all_hosts/ brings'
                " every peer at once. changes (needs since): all_hosts as a patch"
                ' ({"r", "m", "p": {changed peers}, "x": [deleted], "n": count after}); apply it'
                " to the peers you hold, or fetch the view whole if the count does not match"
            ),
        }
    )
    return item


def document() -> dict[str, Any]:
    """The OpenAPI document (built on each call: it is small)."""
    acc, stk, svc, unit = "account", "stack", "service", "unit"
    paths: dict[str, Any] = {
        "/healthz": {
            "get": {
                "summary": "liveness (the store's revision only to an operator token)",
                "responses": _responses(),
            }
        },
        "/metrics": {"get": {"summary": "Prometheus metrics (text format)", "responses": _responses()}},
        "/v1/kv/": _consul(_resource("the list of accounts", [], writable=False)),
        "/v1/kv/{account}/": _consul(_resource("an account (seed layout)", _path_params(acc))),
        "/v1/kv/{account}/{stack}/": _consul(_resource("a stack (seed layout)", _path_params(acc, stk))),
        "/v1/kv/{account}/{stack}/{service}/": _consul(
            _resource("a service: lists its units", _path_params(acc, stk, svc))
        ),
        "/v1/kv/{account}/{stack}/{service}/{unit}/": _consul(
            _resource("a unit's files (seed layout)", _path_params(acc, stk, svc, unit))
        ),
        "/v1/kv/{account}/{stack}/{service}/{unit}/{key}": _consul(
            _resource("one value of a unit", _path_params(acc, stk, svc, unit, "key"))
        ),
        "/v1/view/{unit}/": _view_resource(unit),
        "/v1/view/{unit}/service/all_hosts/": _resource(
            "every peer of the unit's service at once (what a lazy view leaves pending)",
            _path_params(unit),
            writable=False,
        ),
        "/v1/view/{unit}/self/{key}": _resource(
            "one value of a unit's own files", _path_params(unit, "key"), writable=False
        ),
        "/v1/units/": _resource("the units this token may see", [], writable=False),
        "/v1/accounts/": _resource("every account (document API)", [], writable=False),
        "/v1/accounts/{account}": _resource("an account", _path_params(acc)),
        "/v1/accounts/{account}/stacks/{stack}": _resource("a stack", _path_params(acc, stk)),
        "/v1/accounts/{account}/stacks/{stack}/services/{service}": _resource(
            "a service", _path_params(acc, stk, svc)
        ),
        "/v1/accounts/{account}/stacks/{stack}/services/{service}/units/{unit}": _resource(
            "a unit", _path_params(acc, stk, svc, unit)
        ),
        "/v1/hosts/": _resource("every host", [], writable=False),
        "/v1/hosts/{host}": _resource("a host", _path_params("host")),
        "/v1/watch": {
            "get": _op(
                "long-poll for changes to many views",
                [
                    {
                        "name": "units",
                        "in": "query",
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.,:@-]*$"},
                    },
                    {"name": "list", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}},
                ],
            )
        },
        "/v1/load": {"post": _op("load a document, all or nothing", [], body=True, query=False)},
        "/v1/backup": {
            "get": _op(
                "every live record and token digest at one revision, as JSON lines with a checksum"
                " (operator; see metafs/backup.py)",
                [],
                query=False,
            )
        },
        "/v1/tokens/": {
            "get": _op("list tokens (operator)", []),
            "post": _op("mint a token (operator)", [], body=True, query=False),
        },
        "/v1/tokens/{id}": {"delete": _op("revoke a token (operator)", _path_params("id"), query=False)},
        "/v1/agent/self": _discovery("Consul: this server as an agent (Config.Datacenter)"),
        "/v1/agent/members": _discovery("Consul: every host in scope as a LAN member"),
        "/v1/catalog/datacenters": _discovery("Consul: the one datacenter (serve --datacenter)"),
        "/v1/catalog/services": _discovery("Consul: each service in scope and its tags"),
        "/v1/catalog/service/{name}": _discovery("Consul: a service's instances, flat", "name"),
        "/v1/catalog/nodes": _discovery("Consul: every host in scope as a node"),
        "/v1/catalog/node/{node}": _discovery("Consul: a node and its instances in scope", "node"),
        "/v1/health/service/{name}": _discovery("Consul: a service's instances with node and check", "name"),
        "/v1/health/checks/{name}": _discovery("Consul: a service's checks (one passing per unit)", "name"),
        "/v1/health/node/{node}": _discovery("Consul: the checks of a node's instances", "node"),
        "/v1/health/state/{state}": _discovery("Consul: the checks in a state (any, passing, ...)", "state"),
        **_fleet(),
        "/v1/prometheus/targets": {
            "get": {
                "summary": "Prometheus HTTP SD: a target group per unit with an address; a token in"
                " Authorization (Bearer, or alone) is enough, no Metadata-Flavor",
                "parameters": [],
                "responses": _responses(),
            }
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "metafs",
            "version": "1",
            "description": "container metadata as files. /v1/kv: " + CONSUL_RULE,
        },
        "paths": paths,
        "components": {"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}},
        "security": [{"token": []}],
    }
