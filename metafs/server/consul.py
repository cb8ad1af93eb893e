"""Consul's KV protocol on ``/v1/kv``, so that every Consul client (consul-template,
envconsul, confd, py-consul, a prototype's curl) reads metafs unchanged.

A request speaks Consul when it carries ``X-Consul-Token`` or a parameter only Consul
has (:data:`ONLY_CONSUL`); it gets Consul's shapes. Every other request gets metafs's
own text and JSON, exactly as before. The keys are the seed layout's paths
(``<account>/<stack>/<service>/<unit>/<field...>``, each name as its file name: a label
key ``io.example/zone`` is ``io.example%2Fzone``); a value is the text of that file
without its trailing newline. ``ModifyIndex`` (and ``CreateIndex``: metafs keeps no
creation per value) is the revision the value last changed at; ``X-Consul-Index`` the
last revision anything read changed at, never 0.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from .. import tree
from ..store import Snapshot
from .history import poll_index
from .http import JSON, TEXT, HTTPError

TOKEN_HEADER = "X-Consul-Token"
#: parameters metafs's own API does not have: a request with one speaks Consul
ONLY_CONSUL = frozenset(
    {"raw", "recurse", "keys", "separator", "dc", "stale", "consistent", "cached", "token", "cas", "flags"}
)
#: what each method of /v1/kv takes in Consul's protocol (``dc``, ``stale``,
#: ``consistent``, ``cached`` are accepted and change nothing: one datacenter, every read
#: consistent; ``index`` and ``wait`` make a blocking query)
PARAMS = {
    "GET": (ONLY_CONSUL - {"cas", "flags"}) | {"index", "wait"},
    "PUT": frozenset({"cas", "flags", "dc", "token"}),
    "DELETE": frozenset({"recurse", "cas", "dc", "token"}),
}


def speaks_consul(request: Request) -> bool:
    return TOKEN_HEADER in request.headers or any(
        n in ONLY_CONSUL for n, _ in request.query_params.multi_items()
    )


@dataclass(frozen=True, slots=True)
class KvRead:
    """What a Consul read asks: the seed path to resolve, and what to take under it."""

    at: list[str]  # the seed path read from the store
    base: str  # the key of the node at ``at`` ("" for the root)
    match: str | None  # recurse/keys: names under ``at`` starting with this; None: the key itself
    prefix: str  # the key as asked (what ``separator`` counts from)
    keys: bool
    separator: str
    raw: bool


def names_of(segs: list[str]) -> list[str]:
    """The names a key's segments stand for. A key holds each name as its file name
    (``io.example%2Fzone``), and a Consul client quotes the key into the URL, so the
    segments arrive as those file names, which are decoded here (a segment sent with a
    bare ``%2F`` was decoded already, and comes through unchanged)."""
    try:
        return [tree.decode_name(s) for s in segs]
    except UnicodeDecodeError:
        raise HTTPError(400, "a key's segment is not percent-encoded UTF-8") from None


def kv_read(request: Request, segs: list[str], trailing: bool) -> KvRead:
    """The read ``/v1/kv/<segs>`` asks for (``trailing``: the path ended with ``/``)."""
    segs = names_of(segs)
    q = request.query_params
    listing = "recurse" in q or "keys" in q
    if "raw" in q and listing:
        raise HTTPError(400, "raw reads one key: drop recurse and keys")
    if "separator" in q and "keys" not in q:
        raise HTTPError(400, "separator needs keys")
    names = [tree.encode_name(s) for s in segs]
    prefix = "/".join(names) + ("/" if trailing and names else "")
    match: str | None = "" if listing else None
    at, base = segs, "/".join(names)
    if listing and names and not trailing:  # a prefix of keys: the last name is cut short
        at, base, match = segs[:-1], "/".join(names[:-1]), names[-1]
    return KvRead(at, base, match, prefix, "keys" in q, q.get("separator", ""), "raw" in q)


def _entries(node: tree.Node, r: KvRead) -> list[tuple[str, tree.Leaf]]:
    """The keys ``r`` names under ``node`` (the node at ``r.at``), sorted, with their leaves."""
    if r.match is None:
        return [(r.base, node)] if isinstance(node, tree.Leaf) else []
    found: list[tuple[str, tree.Leaf]] = []

    def walk(n: tree.Node, key: str) -> None:
        if isinstance(n, tree.Leaf):
            found.append((key, n))
            return
        for name, child in n.children.items():
            walk(child, f"{key}/{tree.encode_name(name)}")

    if isinstance(node, tree.Dir):
        for name, child in node.children.items():
            enc = tree.encode_name(name)
            if enc.startswith(r.match):
                walk(child, f"{r.base}/{enc}" if r.base else enc)
    return sorted(found, key=lambda e: e[0])


def value_of(leaf: tree.Leaf) -> bytes:
    """A value as Consul holds it: the file's text without metafs's trailing newline."""
    return tree.render_text(leaf).removesuffix(b"\n")


def headers(snap: Snapshot) -> dict[str, str]:
    """On every answer (the index: see :func:`.history.poll_index`)."""
    return {
        "X-Consul-Index": str(poll_index(snap)),
        "X-Consul-KnownLeader": "true",
        "X-Consul-LastContact": "0",
    }


def read_answer(r: KvRead, node: tree.Node | None, snap: Snapshot) -> Response:
    """Consul's answer to a KV read: its JSON entries, the raw value, or the key names;
    404 with the index when nothing matches."""
    h = headers(snap)
    found = _entries(node, r) if node is not None else []
    if not found:
        return Response(status_code=404, headers=h)
    if r.keys:
        names = set()
        for key, _ in found:
            cut = key.find(r.separator, len(r.prefix)) if r.separator else -1
            names.add(key if cut < 0 else key[: cut + len(r.separator)])
        return Response(json.dumps(sorted(names)), headers=h, media_type=JSON)
    if r.raw:
        return Response(
            value_of(found[0][1]), headers={**h, "X-Content-Type-Options": "nosniff"}, media_type=TEXT
        )
    body = [
        {
            "LockIndex": 0,
            "Key": key,
            "Flags": 0,
            "Value": base64.b64encode(value_of(leaf)).decode(),
            "CreateIndex": leaf.rev,
            "ModifyIndex": leaf.rev,
        }
        for key, leaf in found
    ]
    return Response(json.dumps(body), headers=h, media_type=JSON)


def write_answer(done: bool, revision: int | None = None) -> Response:
    """``true`` or ``false``, as Consul answers a PUT or a DELETE."""
    extra = {"X-Metafs-Revision": str(revision)} if revision is not None else {}
    return Response("true" if done else "false", headers=extra, media_type=JSON)


def cas_of(request: Request) -> int | None:
    text = request.query_params.get("cas")
    if text is None:
        return None
    if not text.isdigit():
        raise HTTPError(400, f"cas={text!r}: expected a ModifyIndex (a whole number >= 0)")
    return int(text)


def check_flags(request: Request) -> None:
    flags = request.query_params.get("flags", "0")
    if flags != "0":
        raise HTTPError(400, f"flags={flags!r}: metafs keeps no flags on a value (only 0)")
