"""The result cache: per-file results keyed by what determines them, bounded, least recently used out.

A key is (kind, ruff version, rule selection, root, file, content hash, config key): the same bytes
under the same resolved config give the same answer, so an unchanged file is never linted twice.
A config change makes new keys; `drop_root()` also throws the old ones away at once.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Generic, NamedTuple, TypeVar

V = TypeVar("V")


class ResultKey(NamedTuple):
    """A tuple underneath: hashing and comparing it is cheap (a tree call looks up one per file)."""

    kind: str
    version: str
    selection: tuple[Any, ...]
    root: str
    path: str
    content: str
    config: str


class ResultCache(Generic[V]):
    def __init__(self, max_entries: int = 50_000) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[ResultKey, V] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: ResultKey) -> V | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return value

    def put(self, key: ResultKey, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    def drop_root(self, root: str) -> int:
        """Forget every entry of `root` (its config changed)."""
        doomed = [k for k in self._items if k.root == root]
        for key in doomed:
            del self._items[key]
        return len(doomed)


class LruDict(Generic[V]):
    """A small bounded mapping for derived data (discovery results, selection checks)."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[Any, V] = OrderedDict()

    def get(self, key: Any) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def peek(self, key: Any) -> V | None:
        """A lookup that does not reorder (safe from a worker thread while the loop uses the dict)."""
        return self._items.get(key)

    def put(self, key: Any, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)
