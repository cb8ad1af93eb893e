"""An etcd namespace's own records, under ``<ns>info/``: its store format, its identity
(what ``X-Metafs-Store`` says) and its compacted revision. The first server to reach a
namespace writes the first two, each in one transaction (written if absent, else read),
so that every server over it says the same."""

from __future__ import annotations

from .base import STORE_FORMAT, StoreError, check_format, new_identity
from .etcd_gateway import Gateway, b64, unb64


async def open_namespace(gateway: Gateway, info: str) -> tuple[str, int]:
    """Check the namespace's format (a newer one is refused; none is recorded as this
    metafs's: format 0 needs nothing more), then its identity and compacted revision."""
    found = await put_if_absent(gateway, info + "format", str(STORE_FORMAT))
    check_format(int(found or 0), f"etcd namespace {info.removesuffix('info/')!r}")
    compacted = await read_compacted(gateway, b64(info + "compacted"))
    return await put_if_absent(gateway, info + "identity", new_identity()), compacted


async def put_if_absent(gateway: Gateway, name: str, default: str) -> str:
    """The value of key ``name``, written as ``default`` if absent (one transaction)."""
    key = b64(name)
    txn = {
        "compare": [{"key": key, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
        "success": [{"request_put": {"key": key, "value": b64(default)}}],
        "failure": [{"request_range": {"key": key}}],
    }
    data = await gateway.call("/v3/kv/txn", txn)
    if data.get("succeeded"):
        return default
    kvs = data["responses"][0]["response_range"].get("kvs", [])
    return unb64(kvs[0]["value"]) if kvs else ""


async def read_compacted(gateway: Gateway, key: str) -> int:
    """The compacted revision (``key`` in base64); 0 before the first compaction."""
    kvs = (await gateway.call("/v3/kv/range", {"key": key})).get("kvs", [])
    return int(unb64(kvs[0]["value"])) if kvs else 0


async def raise_compacted(gateway: Gateway, key: str, to: int) -> None:
    """The compacted revision to at least ``to``, by compare-and-swap (several servers
    may compact at once, as Kubernetes' API servers do: it only rises)."""
    for _ in range(16):
        kvs = (await gateway.call("/v3/kv/range", {"key": key})).get("kvs", [])
        if kvs and int(unb64(kvs[0]["value"])) >= to:
            return
        held = (
            {"target": "MOD", "mod_revision": kvs[0]["mod_revision"]}
            if kvs
            else {"target": "CREATE", "create_revision": "0"}
        )
        compare = {"key": key, "result": "EQUAL", **held}
        txn = {"compare": [compare], "success": [{"request_put": {"key": key, "value": b64(str(to))}}]}
        if (await gateway.call("/v3/kv/txn", txn)).get("succeeded"):
            return
    raise StoreError("etcd: the compacted revision kept changing under this server; try again")
