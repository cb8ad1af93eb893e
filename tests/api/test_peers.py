"""``/v1/view/<unit>/?peers=``: a big service's peers lazily and by change (see
metafs/catalog/peers.py), against a real server and SQLite file. Whatever form the peers
come in, merged into what the client held they are exactly the whole view."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from metafs.catalog.peers import INLINE_PEERS
from metafs.tree import from_meta, merge_meta, to_meta
from tests.support.churn import service
from tests.support.servers import OPERATOR_TOKEN, ZK1, ServerProcess

UNITS = 200
ME, PEER, GONE = "big-0000", "big-0007", "big-0150"
VIEW = f"/v1/view/{ME}/"


@pytest.fixture
def big(http: httpx.Client) -> httpx.Client:
    http.post("/v1/load", json=service("big", UNITS, {})).raise_for_status()
    return http


def meta(http: httpx.Client, path: str = VIEW, **params: str) -> httpx.Response:
    r = http.get(path, params={"format": "meta", **params})
    assert r.status_code == 200, r.text
    return r


def all_hosts(view: dict[str, Any]) -> dict[str, Any]:
    got: dict[str, Any] = view["c"]["service"]["c"]["all_hosts"]
    return got


@pytest.mark.timeout(60)
def test_a_lazy_view_leaves_the_peers_pending_and_one_call_brings_them(big: httpx.Client) -> None:
    full = meta(big)
    lazy = meta(big, peers="lazy")
    pending = all_hosts(lazy.json())
    assert pending["d"] == 1 and pending["n"] == UNITS and "c" not in pending
    assert pending["r"] == all_hosts(full.json())["r"]
    assert len(lazy.content) < 4000 < len(full.content) // 20
    assert lazy.json()["c"]["self"] == full.json()["c"]["self"]
    assert lazy.headers["ETag"] != full.headers["ETag"]
    peers = meta(big, f"{VIEW}service/all_hosts/")
    assert peers.json() == all_hosts(full.json()) and len(peers.json()["c"]) == UNITS
    # every unit of the service is sent the same peers (made once, for all of them)
    assert meta(big, f"/v1/view/{PEER}/service/all_hosts/").content == peers.content
    whole = lazy.json()
    whole["c"]["service"]["c"]["all_hosts"] = peers.json()
    assert whole == full.json()
    # an ETag revalidates the lazy form, not the whole one
    again = big.get(
        VIEW, params={"format": "meta", "peers": "lazy"}, headers={"If-None-Match": lazy.headers["ETag"]}
    )
    assert again.status_code == 304


@pytest.mark.timeout(60)
def test_a_small_service_comes_whole_even_when_asked_lazily(loaded: httpx.Client) -> None:
    view = f"/v1/view/{ZK1}/"
    lazy, full = meta(loaded, view, peers="lazy").json(), meta(loaded, view).json()
    assert lazy == full and len(all_hosts(lazy)["c"]) == 3 <= INLINE_PEERS


@pytest.mark.timeout(60)
def test_changes_carry_the_changed_peer_and_the_deleted_one_only(big: httpx.Client) -> None:
    before = meta(big)
    seen = before.headers["X-Metafs-Revision"]
    assert big.put(f"/v1/kv/7/churn/big/{PEER}/hostname", content="moved-on").status_code == 200
    assert big.delete(f"/v1/kv/7/churn/big/{GONE}").status_code == 200
    full = meta(big)
    delta = meta(big, since=seen, peers="changes")
    old_delta = meta(big, since=seen)
    # the changed records and a few stamps: not a stub per peer
    assert len(delta.content) < 2048 < len(old_delta.content)
    # the service's own record did not change: it comes as a patch of its all_hosts
    patch = delta.json()["c"]["service"]["p"]["all_hosts"]
    assert sorted(patch["p"]) == [PEER] and patch["x"] == [GONE] and patch["n"] == UNITS - 1
    assert patch["p"][PEER]["c"]["hostname"]["v"] == "moved-on"
    assert delta.json()["c"]["self"] == {"k": 1} and delta.json()["c"]["stack"] == {"k": 1}
    merged = merge_meta(from_meta(before.json()), delta.json())
    assert to_meta(merged) == full.json()
    # and again from there: nothing changed, the whole answer is stamps
    seen2 = full.headers["X-Metafs-Revision"]
    quiet = meta(big, since=seen2, peers="changes")
    assert len(quiet.content) < 300
    assert to_meta(merge_meta(merged, quiet.json())) == full.json()


@pytest.mark.timeout(60)
def test_a_lazy_delta_keeps_the_peers_pending(big: httpx.Client) -> None:
    lazy = meta(big, peers="lazy")
    seen = lazy.headers["X-Metafs-Revision"]
    assert big.put(f"/v1/kv/7/churn/big/{PEER}/hostname", content="moved-on").status_code == 200
    delta = meta(big, since=seen, peers="lazy")
    assert len(delta.content) < 400
    merged = merge_meta(from_meta(lazy.json()), delta.json())
    assert to_meta(merged) == meta(big, peers="lazy").json()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        (VIEW, {"format": "meta", "peers": "some"}, "peers='some': expected one of all, lazy, changes"),
        (VIEW, {"format": "meta", "peers": "changes"}, "peers=changes needs since=<revision>"),
        (f"{VIEW}self/", {"format": "meta", "peers": "lazy"}, "peers= applies to a whole view"),
        (VIEW, {"format": "json", "peers": "lazy"}, "format=meta"),
    ],
)
def test_bad_peers_parameters_are_400s_naming_them(
    big: httpx.Client, path: str, params: dict[str, str], says: str
) -> None:
    r = big.get(path, params=params)
    assert r.status_code == 400 and says in r.text, r.text


class _Told:
    """A view listener with no kernel behind it."""

    def views_swapped(self, unit_ids: list[str]) -> None: ...

    def view_changed(self, unit_id: str, old: object, new: object) -> None: ...

    def list_changed(self, old: object, new: object) -> None: ...

    def keeps(self, unit_id: str) -> bool:
        return True


@pytest.mark.timeout(60)
def test_peers_loaded_while_a_lazy_refetch_was_asked_are_kept(
    big: httpx.Client, server: ServerProcess
) -> None:
    """The mount's view cache asked a delta without peers; they were listed (loaded)
    meanwhile: the answer must not leave them pending again (they are asked by change)."""
    import trio

    from metafs.client import Answer, AsyncMetadataClient
    from metafs.mount.peers import unloaded_peers
    from metafs.mount.viewcache import ViewCache

    class Racing(AsyncMetadataClient):
        """Runs ``meanwhile`` after the next view request was answered, before it is used."""

        meanwhile: Any = None

        async def view(
            self, unit_id: str, since: int | None = None, peers: str = "lazy", wait: float | None = None
        ) -> Answer:
            ans = await super().view(unit_id, since, peers, wait)
            if self.meanwhile is not None:
                hook, self.meanwhile = self.meanwhile, None
                await hook()
            return ans

    async def main() -> None:
        client = Racing(server.url, OPERATOR_TOKEN)
        cache = ViewCache(
            client, _Told(), host_mode=False, fetch_timeout=10, poll_wait=30, view_ttl=60, max_bytes=64 << 20
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(cache.run)
            view = await cache.get(ME)
            assert unloaded_peers(view.root)
            await trio.to_thread.run_sync(
                lambda: big.put(f"/v1/kv/7/churn/big/{PEER}/hostname", content="moved-on").raise_for_status()
            )

            async def load() -> None:
                assert await cache.peers.load(view)

            client.meanwhile = load
            new = await cache.fetch(ME, view)
            assert new is not None and not unloaded_peers(new.root)
            peer = new.root.children["service"].children["all_hosts"].children[PEER]  # type: ignore[union-attr]
            assert peer.children["hostname"].value == "moved-on"  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()
        await client.aclose()

    trio.run(main)


@pytest.mark.timeout(30)
def test_deleting_a_peer_moves_the_revision_and_time_of_all_hosts(loaded: httpx.Client) -> None:
    """A directory's listing changed: its revision and mtime say so (they stayed at the
    last peer put, so `find -newer` and any stat-based check missed a peer that left)."""
    before = meta(loaded, f"/v1/view/{ZK1}/").json()
    gone = next(u for u in all_hosts(before)["c"] if u != ZK1)
    r = loaded.delete(f"/v1/kv/5/test1/s4/{gone}")
    assert r.status_code == 200, r.text
    rev = int(r.headers["X-Metafs-Revision"])
    after = meta(loaded, f"/v1/view/{ZK1}/").json()
    assert gone not in all_hosts(after)["c"]
    assert all_hosts(after)["r"] == rev > all_hosts(before)["r"]
    assert all_hosts(after)["m"] > all_hosts(before)["m"]
    assert after["c"]["service"]["r"] == rev  # service/ holds all_hosts/: it moves too
