"""The result cache: per-file results keyed by what determines them, bounded, least recently used out.

A key is (kind, ruff version, rule selection, root, file, content hash, config key): the same bytes
under the same resolved config give the same answer, so an unchanged file is never linted twice.
A config change makes new keys; `drop_root()` also throws the old ones away at once.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Generic, NamedTuple, TypeVar

from mcp_server.api import BoundedLRU, past_span

V = TypeVar("V")


def hit_span(looked_up: float, hits: int, lookups: int) -> None:
    """A `result cache hit` child span for a call's lookups that found results (none: no span),
    beside the `ruff server` and `ruff check`/`ruff format` spans of the misses. `looked_up`:
    `time.perf_counter()` before the lookups. A flag test when telemetry is off."""
    if hits:
        attributes = {"mcp_code_tools.ruff.engine": "cache", "mcp_code_tools.cache.hits": hits}
        past_span(
            "result cache hit", time.perf_counter() - looked_up, {**attributes, "mcp_code_tools.cache.lookups": lookups}
        )


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
    """Bounded in entries and in (estimated) bytes: a few huge results cannot hold the memory."""

    def __init__(self, max_entries: int = 50_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._items: BoundedLRU[ResultKey, V] = BoundedLRU(max_entries, max_bytes=max_bytes)
        self.hits = 0
        self.misses = 0

    @property
    def max_entries(self) -> int:
        return self._items.max_entries

    @property
    def max_bytes(self) -> int:
        return self._items.max_bytes or 0

    @property
    def bytes(self) -> int:
        return self._items.bytes_used

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: ResultKey) -> V | None:
        value = self._items.get(key)
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: ResultKey, value: V) -> None:
        """Keep `value`; one bigger than the whole cache is not kept."""
        self._items.put(key, value, key_size(key) + approx_size(value))

    def drop_root(self, root: str) -> int:
        """Forget every entry of `root` (its config changed)."""
        doomed = [k for k in self._items if k.root == root]
        for key in doomed:
            self._items.pop(key)
        return len(doomed)


SAMPLE = 64
_KEY_OVERHEAD = 56 + 8 * len(ResultKey._fields) + 49 * (len(ResultKey._fields) - 1)


def key_size(key: ResultKey) -> int:
    """`approx_size(key)` without walking it: a tree call puts one key per file it linted (1,500
    keys cost ~7 ms walked generically, ~0.5 ms so). Its strings are ASCII but for file names."""
    kind, version, selection, root, path, content, config = key
    chars = len(kind) + len(version) + len(root) + len(content) + len(config)
    size = _KEY_OVERHEAD + chars + (len(path) if path.isascii() else 4 * len(path))
    return size + (approx_size(selection) if selection else 56)


def approx_size(value: Any) -> int:
    """An estimate of the memory `value` holds (CPython object overheads included), in bytes.

    Meant for results (lists of dicts of scalars, texts); a long list is estimated from a sample of
    its items, so the cost is bounded (it runs on the event loop at every `put`).
    """
    if isinstance(value, str):
        return 49 + len(value) * (1 if value.isascii() else 4)
    if isinstance(value, (bytes, bytearray)):
        return 33 + len(value)
    if isinstance(value, dict):
        return 64 + 24 * len(value) + sum(approx_size(k) + approx_size(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if len(value) > SAMPLE:  # a long list of alike items (diagnostics): measured from a sample
            step = len(value) // SAMPLE
            sample = value[::step][:SAMPLE]
            return 56 + 8 * len(value) + sum(approx_size(v) for v in sample) * len(value) // len(sample)
        return 56 + 8 * len(value) + sum(approx_size(v) for v in value)
    if isinstance(value, (set, frozenset)):
        return 216 + 40 * len(value) + sum(approx_size(v) for v in value)
    if value is None or isinstance(value, (bool, int, float)):
        return 16 if value is None or isinstance(value, bool) else 32
    fields = getattr(value, "__dict__", None)
    if fields is not None:
        return 56 + approx_size(fields)
    return sys.getsizeof(value)


class LruDict(BoundedLRU[Any, V]):
    """A small bounded mapping for derived data (discovery results, selection checks)."""
