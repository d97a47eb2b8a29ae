"""One bounded least-recently-used mapping, for every cache of ours that keeps "the recent ones".

Bounded in entries, optionally in bytes (each entry's size given at `put`, or measured by a
`sizeof` function) and optionally by idle time (`ttl`: an entry not used for that long is gone;
the deadline moves forward on every `get` and `put`, so entries in LRU order are also in deadline
order and expired ones are dropped from the front). Not thread-safe: one owner mutates it (an event
loop); `peek` is a read that changes nothing, so a worker thread may call it meanwhile.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, NamedTuple, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class _Entry(NamedTuple, Generic[V]):
    value: V
    size: int
    deadline: float


class BoundedLRU(Generic[K, V]):
    """A mapping that drops its least recently used entries past `max_entries` or `max_bytes`.

    An entry larger than `max_bytes` on its own is not kept (a few huge values cannot hold the
    memory). `on_evict(key, value)` is called for each entry dropped to make room or by its TTL,
    not for `pop`, `clear` or a replaced value.
    """

    def __init__(
        self,
        max_entries: int,
        *,
        max_bytes: int | None = None,
        sizeof: Callable[[K, V], int] | None = None,
        ttl: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[K, V], None] | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, not {max_entries}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self._sizeof = sizeof
        self._clock = clock
        self._on_evict = on_evict
        self._items: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        """Entries held (with a TTL, expired ones count until an access drops them)."""
        return len(self._items)

    def __iter__(self) -> Iterator[K]:
        """The keys, least recently used first (a snapshot: the mapping may change meanwhile)."""
        return iter(list(self._items))

    @property
    def bytes_used(self) -> int:
        """The sum of the sizes of the entries held (0 without a byte bound or a `sizeof`)."""
        return self._bytes

    def get(self, key: K) -> V | None:
        """The value, now the most recently used (its TTL deadline moved forward); None if absent."""
        entry = self._items.get(key)
        if entry is None:
            return None
        if self.ttl is not None:  # inline, not `_expired`: this is the hot path
            now = self._clock()
            if entry.deadline <= now:
                self._drop_expired()  # it is in front of every live entry: dropped with them
                return None
            self._items[key] = entry._replace(deadline=now + self.ttl)
        self._items.move_to_end(key)
        return entry.value

    def peek(self, key: K) -> V | None:
        """The value without making it recent (changes nothing: safe from a worker thread)."""
        entry = self._items.get(key)
        if entry is None or self._expired(entry):
            return None
        return entry.value

    def put(self, key: K, value: V, size: int | None = None) -> bool:
        """Keep `value` as the most recently used; drop the least recently used past the bounds.

        `size`: the entry's bytes (default: `sizeof(key, value)`, or 0 without one). False when the
        entry alone is larger than `max_bytes`: it is not kept (and an old value of `key` is gone).
        """
        if size is None:
            size = self._sizeof(key, value) if self._sizeof is not None else 0
        self.pop(key)
        if self.max_bytes is not None and size > self.max_bytes:
            return False
        deadline = self._clock() + self.ttl if self.ttl is not None else 0.0
        self._items[key] = _Entry(value, size, deadline)
        self._bytes += size
        self._drop_expired()
        while len(self._items) > self.max_entries or (self.max_bytes is not None and self._bytes > self.max_bytes):
            self._evict_oldest()
        return True

    def pop(self, key: K) -> V | None:
        """Remove `key`; its value, or None if absent (or expired)."""
        entry = self._items.pop(key, None)
        if entry is None:
            return None
        self._bytes -= entry.size
        return None if self._expired(entry) else entry.value

    def clear(self) -> None:
        self._items.clear()
        self._bytes = 0

    def _expired(self, entry: _Entry[V]) -> bool:
        return self.ttl is not None and entry.deadline <= self._clock()

    def _drop_expired(self) -> None:
        if self.ttl is None:
            return
        now = self._clock()
        while self._items:
            entry = next(iter(self._items.values()))
            if entry.deadline > now:
                return
            self._evict_oldest()

    def _evict_oldest(self) -> None:
        key, entry = self._items.popitem(last=False)
        self._bytes -= entry.size
        if self._on_evict is not None:
            self._on_evict(key, entry.value)
