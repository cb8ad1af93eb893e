"""What the etcd store keeps from its watch (metafs/store/watched.py): used only at the
revision it is exact for, dropped by the first event under it, bounded."""

from __future__ import annotations

from metafs.store.base import Item, Range
from metafs.store.watched import MANY_KEYS, Watched


def small(key: str, value: str = "v") -> Range:
    return Range([Item(key, value, 1, 1, 0.0)], 1, 0.0)


def test_only_at_the_revision_the_watch_is_at() -> None:
    w = Watched()
    assert w.revision() == 0  # no watch yet: read at etcd's head
    w.started(10)
    assert w.revision() == 10
    w.learn_stamp(9, "u/a/", (8, 1.0))  # read at another revision: not kept
    assert w.stamp(10, "u/a/") is None
    w.learn_stamp(10, "u/a/", (8, 1.0))
    assert w.stamp(10, "u/a/") == (8, 1.0)
    assert w.stamp(9, "u/a/") is None and w.stamp(0, "u/a/") is None
    w.committed = 12  # this server wrote at 12: until the watch passes it, the head
    assert w.revision() == 0 and w.stamp(10, "u/a/") is None
    w.applied(12, ["u/b/x"])
    assert w.revision() == 12 and w.stamp(12, "u/a/") == (8, 1.0)  # not under u/b/


def test_an_event_drops_every_entry_it_lies_under() -> None:
    w = Watched()
    w.started(5)
    for prefix in ("", "u/", "u/a/", "u/a/t/s/", "u/a/t/s/x", "u/b/", "i/x"):
        w.learn_stamp(5, prefix, (3, 0.0))
    w.learn_range(5, "i/x", small("i/x"))
    w.learn_range(5, "i/y", small("i/y"))
    w.applied(6, ["u/a/t/s/x"])
    gone = [p for p in ("", "u/", "u/a/", "u/a/t/s/", "u/a/t/s/x") if w.stamp(6, p) is not None]
    assert gone == []
    assert w.stamp(6, "u/b/") == (3, 0.0) and w.stamp(6, "i/x") == (3, 0.0)
    assert w.range(6, "i/x") is not None
    w.applied(7, ["i/x"])
    assert w.range(7, "i/x") is None and w.range(7, "i/y") is not None
    w.applied(8, [f"k/{n}" for n in range(MANY_KEYS + 1)])  # a bulk load: all dropped
    assert w.range(8, "i/y") is None and w.stamp(8, "u/b/") is None


def test_lost_and_compacted_fall_back_to_the_head() -> None:
    w = Watched()
    w.started(5)
    w.learn_stamp(5, "u/", (5, 0.0))
    w.lost()
    assert w.revision() == 0 and len(w) == 0
    w.started(5)
    assert w.revision() == 5
    w.compacted = True
    assert w.revision() == 0
    w.applied(6, ["x"])  # the next event: current again
    assert w.revision() == 6
    w.resynced(40)
    assert w.revision() == 0 and w.at == 40


def test_big_ranges_are_not_kept_and_the_count_is_bounded() -> None:
    w = Watched(max_entries=4)
    w.started(1)
    w.learn_range(1, "u/", Range([Item(f"u/{n}", "v", 1, 1, 0.0) for n in range(50)], 1, 0.0))
    assert w.range(1, "u/") is None
    for n in range(10):
        w.learn_stamp(1, f"p{n}/", (1, 0.0))
    assert sum(w.stamp(1, f"p{n}/") is not None for n in range(10)) == 4
