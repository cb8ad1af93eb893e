"""The kernel notifier's settling: a read of a new value waits for its invalidations.

The kernel side is a fake here (``pyfuse3.invalidate_inode`` blocking until released);
tests/fs/test_fs.py checks the same promise through a real mount.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pyfuse3
import pytest
import trio

from metafs.mount import notify
from metafs.mount.inodes import InodeTable
from metafs.tree import Dir, Leaf

pytestmark = pytest.mark.timeout(20)

UNIT = "u-1"


class _Kernel:
    """invalidate_inode that blocks until released, and records what it was sent."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.sent: list[int] = []

    def invalidate_inode(self, ino: int, attr_only: bool = False) -> None:
        assert self.release.wait(10), "the test never released the fake kernel"
        self.sent.append(ino)


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> _Kernel:
    k = _Kernel()
    monkeypatch.setattr(pyfuse3, "invalidate_inode", k.invalidate_inode)
    return k


@pytest.fixture
def notifier() -> Iterator[notify.KernelNotifier]:
    inodes = InodeTable(())
    n = notify.KernelNotifier(inodes, host_mode=True)
    n.live = True
    inodes.ino((UNIT,))
    inodes.ino((UNIT, "hostname"))
    yield n
    n.stop()


def _views(old: str, new: str) -> tuple[Dir, Dir]:
    return Dir({"hostname": Leaf(old)}), Dir({"hostname": Leaf(new)})


def test_nothing_queued_is_settled_at_once(notifier: notify.KernelNotifier) -> None:
    async def main() -> tuple[bool, float]:
        t0 = time.monotonic()
        return await notifier.settled(UNIT), time.monotonic() - t0

    ok, took = trio.run(main)
    assert ok and took < 0.05


def test_waits_for_the_sender_and_gives_up_at_its_bound(
    notifier: notify.KernelNotifier, kernel: _Kernel
) -> None:
    hostname = notifier.inodes.known((UNIT, "hostname"))

    async def main() -> None:
        notifier.view_changed(UNIT, *_views("a", "b"))
        t0 = time.monotonic()
        assert await notifier.settled(UNIT, within=0.2) is False  # the kernel is stuck
        assert 0.2 <= time.monotonic() - t0 < 2
        kernel.release.set()
        assert await notifier.settled(UNIT, within=5) is True
        assert hostname in kernel.sent

    trio.run(main)


def test_a_swapped_view_is_waited_for_until_it_was_diffed(
    notifier: notify.KernelNotifier, kernel: _Kernel
) -> None:
    """The view cache serves a service's new views at once and diffs them a few at a time:
    a read of one not diffed yet waits for its diff and then for the kernel."""
    kernel.release.set()
    order: list[str] = []

    async def main() -> None:
        notifier.views_swapped([UNIT, "u-2"])

        async def diff_later() -> None:
            await trio.sleep(0.1)
            order.append("diffed")
            notifier.view_changed(UNIT, *_views("a", "b"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(diff_later)
            assert await notifier.settled(UNIT, within=5) is True
            order.append("settled")
        assert notifier._sent == notifier._queued == 1

    trio.run(main)
    assert order == ["diffed", "settled"]
