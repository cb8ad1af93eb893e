"""A least-recently-used map bounded by the total weight of its values (bytes, measured or
estimated) and optionally by their number: what every cache of the server is made of."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """``weigh(value)`` is a value's weight; while the total passes ``max_bytes`` (or the
    count ``max_entries``), the least recently used go first, but the one put last stays:
    a caller that must not keep something bigger than the bound checks it before.
    ``on_evict(key, value)`` is told of each value the bound pushes out."""

    def __init__(
        self,
        weigh: Callable[[V], int],
        max_bytes: int,
        max_entries: int | None = None,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        self.weigh = weigh
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.on_evict = on_evict
        self._items: OrderedDict[K, V] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._items))  # a copy: callers pop while they iterate

    @property
    def size(self) -> int:
        """The total weight of what is kept."""
        return self._bytes

    def get(self, key: K) -> V | None:
        """The value at ``key``, now the most recently used."""
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def peek(self, key: K) -> V | None:
        """The value at ``key``, leaving the order alone."""
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self.pop(key)
        self._items[key] = value
        self._bytes += self.weigh(value)
        while len(self._items) > 1 and (
            self._bytes > self.max_bytes
            or (self.max_entries is not None and len(self._items) > self.max_entries)
        ):
            gone, dropped = self._items.popitem(last=False)
            self._bytes -= self.weigh(dropped)
            if self.on_evict is not None:
                self.on_evict(gone, dropped)

    def pop(self, key: K) -> V | None:
        value = self._items.pop(key, None)
        if value is not None:
            self._bytes -= self.weigh(value)
        return value

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0
