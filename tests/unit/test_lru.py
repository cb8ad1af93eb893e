"""The one bounded LRU the server's caches are made of (metafs/lru.py)."""

from __future__ import annotations

from metafs.lru import LRU


def test_least_recently_used_go_first_by_weight_and_by_count() -> None:
    lru: LRU[str, bytes] = LRU(len, max_bytes=10, max_entries=3)
    for key in "abc":
        lru.put(key, b"xxx")
    assert (len(lru), lru.size) == (3, 9)
    assert lru.get("a") == b"xxx"  # now the most recently used
    lru.put("d", b"xx")  # 11 bytes, 4 entries: "b" goes
    assert list(lru) == ["c", "a", "d"] and lru.size == 8
    assert lru.peek("c") == b"xxx" and list(lru) == ["c", "a", "d"]  # peek leaves the order
    lru.put("a", b"x")  # replaced: its old weight is given back
    assert lru.size == 6 and list(lru) == ["c", "d", "a"]


def test_the_one_put_last_stays_even_over_the_bound() -> None:
    lru: LRU[str, bytes] = LRU(len, max_bytes=4)
    lru.put("a", b"xx")
    lru.put("big", b"x" * 9)
    assert list(lru) == ["big"] and lru.size == 9
    assert lru.pop("big") == b"x" * 9 and (len(lru), lru.size) == (0, 0)
    lru.put("a", b"xx")
    lru.clear()
    assert (len(lru), lru.size, "a" in lru) == (0, 0, False)


def test_what_the_bound_pushes_out_is_told_but_not_what_is_popped() -> None:
    out: list[tuple[str, bytes]] = []
    lru: LRU[str, bytes] = LRU(len, max_bytes=4, on_evict=lambda k, v: out.append((k, v)))
    lru.put("a", b"xx")
    lru.put("b", b"xx")
    lru.pop("b")
    assert out == []
    lru.put("c", b"xxx")
    assert out == [("a", b"xx")] and list(lru) == ["c"]
