"""The bounded LRU mapping: entry and byte caps, LRU order, TTL by idle time (a fake clock)."""

from __future__ import annotations

import pytest

from mcp_server.lru import BoundedLRU


def test_the_entry_cap_drops_the_least_recently_used() -> None:
    evicted: list[tuple[str, int]] = []
    lru: BoundedLRU[str, int] = BoundedLRU(3, on_evict=lambda k, v: evicted.append((k, v)))
    for i, key in enumerate("abc"):
        lru.put(key, i)
    assert lru.get("a") == 0  # "a" is now the most recent: "b" goes first
    lru.put("d", 3)
    assert evicted == [("b", 1)] and len(lru) == 3
    assert list(lru) == ["c", "a", "d"]
    assert lru.peek("c") == 2 and list(lru) == ["c", "a", "d"]  # peek does not reorder
    lru.put("c", 20)  # a replaced value is the most recent and is not an eviction
    assert list(lru) == ["a", "d", "c"] and lru.get("c") == 20 and evicted == [("b", 1)]
    assert lru.pop("a") == 0 and lru.pop("a") is None and lru.get("missing") is None
    assert len(lru) == 2


def test_the_byte_cap_counts_given_or_measured_sizes() -> None:
    lru: BoundedLRU[str, str] = BoundedLRU(100, max_bytes=10, sizeof=lambda k, v: len(v))
    assert lru.put("a", "xxxx") and lru.put("b", "yyyy")
    assert lru.bytes_used == 8
    lru.put("c", "zzzz")  # 12 > 10: the oldest goes
    assert list(lru) == ["b", "c"] and lru.bytes_used == 8
    lru.put("d", "w", size=7)  # a size given at put wins over sizeof: 11 > 10
    assert list(lru) == ["d"] and lru.bytes_used == 7
    assert lru.pop("d") == "w" and lru.bytes_used == 0
    lru.put("e", "v")
    lru.clear()
    assert len(lru) == 0 and lru.bytes_used == 0


def test_an_item_larger_than_the_byte_cap_is_not_kept() -> None:
    lru: BoundedLRU[str, str] = BoundedLRU(100, max_bytes=10)
    lru.put("small", "s", size=3)
    lru.put("big", "old", size=2)
    assert lru.put("big", "huge", size=11) is False  # not kept, and its old value is gone
    assert lru.get("big") is None and list(lru) == ["small"] and lru.bytes_used == 3
    assert lru.put("exact", "e", size=10)  # the cap itself fits, alone
    assert list(lru) == ["exact"] and lru.bytes_used == 10


def test_ttl_is_idle_time_on_an_injected_clock() -> None:
    now = [1000.0]
    evicted: list[str] = []
    lru: BoundedLRU[str, int] = BoundedLRU(10, ttl=5.0, clock=lambda: now[0], on_evict=lambda k, v: evicted.append(k))
    lru.put("a", 1)
    lru.put("b", 2)
    now[0] += 4.0
    assert lru.get("a") == 1  # used: its deadline moves forward
    now[0] += 1.0  # "b" is 5 s idle: gone; "a" 1 s
    assert lru.peek("b") is None and lru.peek("a") == 1
    assert lru.get("b") is None and evicted == ["b"] and list(lru) == ["a"]
    now[0] += 5.0
    lru.put("c", 3)  # a put drops the expired ones in front of it
    assert list(lru) == ["c"] and evicted == ["b", "a"]
    now[0] += 10.0
    assert lru.pop("c") is None  # expired: no value
    assert len(lru) == 0


def test_a_cap_below_one_entry_is_an_error() -> None:
    with pytest.raises(ValueError, match="max_entries must be at least 1"):
        BoundedLRU(0)
