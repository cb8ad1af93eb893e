"""The store suite: every backend must pass it unchanged (SQLite now; etcd joins later)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from metafs.store import Conflict, Delete, Guard, Put, Store, open_store
from metafs.store.base import Stamps
from tests.support.etcd_cluster import EtcdCluster

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        s = open_store(f"sqlite://{tmp_path / 'store.db'}")
    else:
        s = open_store(request.getfixturevalue("etcd").url())  # a namespace of its own
    try:
        async with s.running():
            yield s
    finally:
        await s.close()


async def test_revision_grows_by_one_per_commit(store: Store) -> None:
    r0 = await store.revision()  # 0 for a new SQLite file; etcd counts from its own start
    assert await store.commit([Put("a/1/", "x"), Put("a/2/", "y")]) == r0 + 1
    assert await store.commit([Put("a/1/", "z")]) == r0 + 2
    assert await store.commit([]) == r0 + 2  # nothing to do: no new revision
    async with store.snapshot() as snap:
        items = {i.key: i for i in await snap.range("a/")}
    assert items["a/1/"].value == "z"
    assert (items["a/1/"].create_rev, items["a/1/"].mod_rev) == (r0 + 1, r0 + 2)
    assert (items["a/2/"].create_rev, items["a/2/"].mod_rev) == (r0 + 1, r0 + 1)
    assert items["a/1/"].mod_time >= items["a/2/"].mod_time > time.time() - 60


async def test_prefix_ranges_do_not_leak_into_siblings(store: Store) -> None:
    await store.commit([Put("s/a/b/", "1"), Put("s/a/bc/", "2"), Put("s/a/b/c/", "3")])
    async with store.snapshot() as snap:
        assert [i.key for i in await snap.range("s/a/b/")] == ["s/a/b/", "s/a/b/c/"]
        assert await snap.get("s/a/b") is None


async def test_guards_make_commits_conditional_and_atomic(store: Store) -> None:
    rev = await store.commit([Put("k/1/", "a")], [Guard("k/1/", 0)])
    with pytest.raises(Conflict):
        await store.commit([Put("k/1/", "b"), Put("k/2/", "b")], [Guard("k/1/", 0)])
    async with store.snapshot() as snap:
        assert (await snap.get("k/1/")).value == "a"  # type: ignore[union-attr]
        assert await snap.get("k/2/") is None  # nothing of the failed commit landed
    assert await store.commit([Put("k/1/", "c")], [Guard("k/1/", rev)]) == rev + 1


async def test_delete_leaves_a_tombstone_that_reports_the_change(store: Store) -> None:
    await store.commit([Put("u/1/", "a"), Put("u/2/", "b"), Put("v/1/", "c")])
    rev = await store.commit([Delete("u/", prefix=True)])
    async with store.snapshot() as snap:
        assert await snap.range("u/") == []
        assert snap.changed == rev
    # a key put again after a delete is new again
    rev2 = await store.commit([Put("u/1/", "again")])
    async with store.snapshot() as snap:
        item = await snap.get("u/1/")
    assert item is not None and item.create_rev == rev2


async def test_deleted_since_lists_the_tombstones_after_a_revision(store: Store) -> None:
    r0 = await store.commit([Put("u/s/1/", "a"), Put("u/s/2/", "b"), Put("u/s/3/", "c"), Put("u/t/1/", "d")])
    r1 = await store.commit([Delete("u/s/1/")])
    r2 = await store.commit([Delete("u/s/2/"), Delete("u/t/1/")])
    async with store.snapshot() as snap:
        assert await snap.deleted_since("u/s/", r0) == ["u/s/1/", "u/s/2/"]
        assert await snap.deleted_since("u/s/", r1) == ["u/s/2/"]
        assert await snap.deleted_since("u/s/", r2) == []
        assert await snap.deleted_since("u/t/", r0) == ["u/t/1/"]
    # read at an older revision, a later delete is not there yet
    await store.commit([Put("u/s/1/", "back")])
    async with store.snapshot() as snap:
        assert "u/s/3/" not in await snap.deleted_since("u/s/", r0)
        live = {i.key for i in await snap.range("u/s/")}
    assert live == {"u/s/1/", "u/s/3/"}


async def test_snapshot_is_consistent_while_writes_land(store: Store) -> None:
    await store.commit([Put("x/a/", "1"), Put("x/b/", "1")])
    async with store.snapshot() as snap:
        first = await snap.range("x/a/")
        await store.commit([Put("x/a/", "2"), Put("x/b/", "2")])
        second = await snap.range("x/b/")
        assert (first[0].value, second[0].value) == ("1", "1")
    async with store.snapshot() as snap:
        assert [i.value for i in await snap.range("x/")] == ["2", "2"]


async def test_wait_wakes_for_its_prefix_only(store: Store) -> None:
    rev = await store.commit([Put("w/a/", "1"), Put("w/b/", "1")])
    woke: list[tuple[int | None, float]] = []

    async def waiter() -> None:
        t0 = time.monotonic()
        woke.append((await store.wait(["w/a/"], rev, timeout=5), time.monotonic() - t0))

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiter)
        await anyio.sleep(0.1)
        await store.commit([Put("w/b/", "2")])  # another prefix: must not wake it
        await anyio.sleep(0.2)
        assert woke == []
        target = await store.commit([Put("w/a/", "2")])
    assert woke[0][0] == target
    assert woke[0][1] < 1.0


async def test_wait_returns_at_once_when_already_changed_and_none_on_timeout(store: Store) -> None:
    rev = await store.commit([Put("w/a/", "1")])
    await store.commit([Put("w/a/", "2")])
    assert await store.wait(["w/a/"], rev, timeout=5) == rev + 1
    t0 = time.monotonic()
    assert await store.wait(["w/a/"], rev + 1, timeout=0.3) is None
    assert 0.25 < time.monotonic() - t0 < 2


async def test_wait_sees_deletes(store: Store) -> None:
    rev = await store.commit([Put("d/a/", "1")])
    async with anyio.create_task_group() as tg:
        result: list[int | None] = []

        async def waiter() -> None:
            result.append(await store.wait(["d/"], rev, timeout=5))

        tg.start_soon(waiter)
        await anyio.sleep(0.1)
        deleted = await store.commit([Delete("d/a/")])
    assert result == [deleted]


async def test_committed_data_survives_reopen(tmp_path: Path) -> None:
    path = f"sqlite://{tmp_path / 'reopen.db'}"
    s = open_store(path)
    rev = await s.commit([Put("p/1/", "kept")])
    await s.close()
    s = open_store(path)
    try:
        assert await s.revision() == rev
        async with s.snapshot() as snap:
            assert (await snap.get("p/1/")).value == "kept"  # type: ignore[union-attr]
    finally:
        await s.close()


def test_store_urls_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown store URL"):
        open_store("mysql://x")
    with pytest.raises(ValueError, match="no file path"):
        open_store("sqlite://")


def test_stamps_hold_one_revision_at_a_time() -> None:
    """The last-change memo shared by a store's snapshots: valid for its revision only."""
    memo = Stamps(limit=3)
    memo.put(5, "u/a/", (4, 1.0))
    assert memo.get(5, "u/a/") == (4, 1.0)
    assert memo.get(6, "u/a/") is None  # another revision: read again
    memo.put(4, "u/b/", (2, 0.5))  # a read at an older revision does not replace the newer
    assert memo.get(4, "u/b/") is None and memo.get(5, "u/a/") == (4, 1.0)
    memo.put(6, "u/b/", (6, 2.0))  # a newer revision replaces everything
    assert memo.get(5, "u/a/") is None and memo.get(6, "u/b/") == (6, 2.0)
    for p in ("x/", "y/", "z/"):
        memo.put(6, p, (1, 0.0))
    assert len([p for p in ("u/b/", "x/", "y/", "z/") if memo.get(6, p)]) <= 3  # bounded


async def test_etcd_reads_at_the_watch_revision_skip_round_trips_and_stay_exact(etcd: EtcdCluster) -> None:
    """A reader that has seen revision R reads where the watch is (no round trip for what
    it keeps); a change through another store (another server) is seen once delivered;
    a reader that has seen nothing reads at the head: a write elsewhere shows at once."""
    from metafs.store.etcd import EtcdStore

    url = etcd.url()
    a, b = open_store(url), open_store(url)
    assert isinstance(a, EtcdStore)
    calls = 0
    real = a.gateway.call

    async def counted(path: str, body: dict[str, object]) -> dict[str, object]:
        nonlocal calls
        calls += 1
        return await real(path, body)

    a.gateway.call = counted  # type: ignore[method-assign]
    try:
        async with a.running(), b.running():
            rev = await b.commit([Put("u/x/1", "one")])
            with anyio.fail_after(5):
                while a.watched.at < rev:
                    await anyio.sleep(0.01)
            async with a.snapshot(rev) as snap:
                assert snap.revision == a.watched.at >= rev
                assert (await snap.last_changes_at(["u/x/"]))[0][0] == rev
                assert (await snap.get("u/x/1")).value == "one"  # type: ignore[union-attr]
            before = calls
            async with a.snapshot(rev) as snap:
                assert (await snap.last_changes_at(["u/x/"]))[0][0] == rev
                assert (await snap.get("u/x/1")).value == "one"  # type: ignore[union-attr]
            assert calls == before  # both from what the watch keeps
            rev2 = await b.commit([Put("u/x/1", "two")])
            async with a.snapshot() as snap:  # has seen nothing: the head, at once
                assert (await snap.get("u/x/1")).value == "two"  # type: ignore[union-attr]
            with anyio.fail_after(5):
                while a.watched.at < rev2:
                    await anyio.sleep(0.01)
            async with a.snapshot(rev) as snap:  # the event dropped the stale entries
                assert (await snap.last_changes_at(["u/x/"]))[0][0] == rev2
                assert (await snap.get("u/x/1")).value == "two"  # type: ignore[union-attr]
            rev3 = await a.commit([Delete("u/x/1")])  # its own: at the head until delivered
            async with a.snapshot(rev) as snap:
                assert await snap.get("u/x/1") is None
                assert snap.revision >= rev3
    finally:
        await a.close()
        await b.close()


async def test_etcd_a_watch_revision_compacted_away_is_read_at_the_head(etcd: EtcdCluster) -> None:
    """The namespace was quiet while other writes moved etcd on and a compaction passed the
    watch's revision: a snapshot there reads at the head instead of failing, and the
    watch's revision is used again from the next event on."""
    import httpx

    from metafs.store.etcd import EtcdStore

    url = etcd.url()
    a, b, other = open_store(url), open_store(url), open_store(etcd.url())  # other: elsewhere
    assert isinstance(a, EtcdStore)
    try:
        async with a.running():
            rev = await a.commit([Put("u/x/1", "one")])
            with anyio.fail_after(5):
                while a.watched.revision() < rev:
                    await anyio.sleep(0.01)
            for i in range(5):
                head = await other.commit([Put(f"y/{i}", "z")])
            r = httpx.post(etcd.members[0].client_url + "/v3/kv/compaction", json={"revision": str(head)})
            assert r.status_code == 200, r.text
            async with a.snapshot(rev) as snap:
                assert snap.revision == rev  # the watch's, not yet read
                assert (await snap.get("u/x/1")).value == "one"  # type: ignore[union-attr]
                assert snap.revision >= head
            assert a.watched.revision() == 0  # the head, until the next event
            rev2 = await b.commit([Put("u/x/1", "two")])
            with anyio.fail_after(5):
                while a.watched.revision() < rev2:
                    await anyio.sleep(0.01)
            async with a.snapshot(rev2) as snap:
                assert (await snap.get("u/x/1")).value == "two"  # type: ignore[union-attr]
                assert snap.revision == rev2
    finally:
        for s in (a, b, other):
            await s.close()


async def test_a_store_keeps_its_identity_and_a_new_one_has_another(
    tmp_path: Path, etcd: EtcdCluster
) -> None:
    """What X-Metafs-Store says: kept in the store (the same after a reopen, the same for
    two servers over one etcd namespace), another for another store."""
    seen = []
    for url in [
        f"sqlite://{tmp_path / 'a.db'}",
        f"sqlite://{tmp_path / 'a.db'}",
        f"sqlite://{tmp_path / 'b.db'}",
    ]:
        s = open_store(url)
        async with s.running():
            seen.append(s.identity)
        await s.close()
    assert seen[0] == seen[1] != seen[2] and len(seen[0]) == 32
    url = etcd.url()
    a, b, other = open_store(url), open_store(url), open_store(etcd.url())
    try:
        async with a.running(), b.running(), other.running():
            assert a.identity == b.identity != other.identity
            assert a.identity and other.identity
            r0 = await a.revision()
            assert await a.commit([Put("x/", "1")]) == r0 + 1  # the identity is no commit's
    finally:
        for s in (a, b, other):
            await s.close()


async def test_compaction_removes_old_tombstones_and_raises_the_compacted_revision(store: Store) -> None:
    """Tombstones of deletes before the cut go (in batches), younger ones stay; the
    compacted revision is the newest removed, read by every snapshot after."""
    await store.commit([Put(f"c/{i}/", "x") for i in range(1200)])
    gone = await store.commit([Delete("c/", prefix=True)])
    async with store.snapshot() as snap:
        assert len(await snap.deleted_since("c/", 0)) == 1200
        assert snap.compacted == 0 or snap.compacted < gone
    await anyio.sleep(0.05)
    cut = time.time()
    await anyio.sleep(0.05)
    await store.commit([Put("young/1/", "y")])
    young = await store.commit([Delete("young/1/")])
    nothing = await store.compact(cut - 3600)  # older than an hour: none
    assert nothing.removed == 0 and nothing.kept >= 1201
    done = await store.compact(cut)
    assert done.removed == 1200 and done.compacted == gone and done.kept >= 1
    async with store.snapshot() as snap:
        await snap.range("c/")
        assert snap.compacted == gone
        assert await snap.deleted_since("c/", 0) == []
        assert await snap.deleted_since("young/", 0) == ["young/1/"]  # younger: kept
        assert (await snap.last_changes_at(["young/"]))[0][0] == young
    again = await store.compact(cut)
    assert again.removed == 0 and again.compacted == gone  # never goes down


async def test_a_store_of_a_newer_format_is_refused_and_an_older_one_upgraded(tmp_path: Path) -> None:
    import sqlite3

    from metafs.store.base import STORE_FORMAT, FormatError

    old = tmp_path / "old.db"  # the layout before formats were recorded: kv and meta only
    db = sqlite3.connect(old)
    db.executescript(
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT, create_rev INTEGER NOT NULL,"
        " mod_rev INTEGER NOT NULL, mod_time REAL NOT NULL) WITHOUT ROWID;"
        "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO meta VALUES ('revision', 7); INSERT INTO kv VALUES ('a/', 'v', 7, 7, 1.0);"
    )
    db.commit()
    db.close()
    s = open_store(f"sqlite://{old}")
    try:
        async with s.snapshot() as snap:
            assert snap.revision == 7 and (await snap.get("a/")).value == "v"  # type: ignore[union-attr]
        assert await s.commit([Put("b/", "w")]) == 8
    finally:
        await s.close()
    db = sqlite3.connect(old)
    assert db.execute("SELECT value FROM info WHERE name='format'").fetchone() == (str(STORE_FORMAT),)
    db.execute("UPDATE info SET value = '99' WHERE name='format'")  # as a newer metafs leaves it
    db.commit()
    before = db.execute("SELECT COUNT(*) FROM kv").fetchone()
    db.close()
    with pytest.raises(FormatError, match=f"store format 99.*reads format {STORE_FORMAT} at most"):
        open_store(f"sqlite://{old}")
    db = sqlite3.connect(old)
    assert db.execute("SELECT COUNT(*) FROM kv").fetchone() == before  # nothing written
    db.close()


async def test_an_etcd_namespace_of_a_newer_format_is_refused(etcd: EtcdCluster) -> None:
    import httpx

    from metafs.store.base import FormatError
    from metafs.store.etcd_gateway import b64

    url = etcd.url()
    ns = url.rsplit("/", 1)[1] + "/"
    member = etcd.members[0].client_url
    r = httpx.post(f"{member}/v3/kv/put", json={"key": b64(ns + "info/format"), "value": b64("99")})
    assert r.status_code == 200
    s = open_store(url)
    try:
        with pytest.raises(FormatError, match="format 99"):
            async with s.running():
                pass
    finally:
        await s.close()
