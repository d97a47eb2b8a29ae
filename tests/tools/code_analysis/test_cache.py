"""The result cache's key sizing: `key_size` is `approx_size` of a key, without walking it."""

from __future__ import annotations

import pytest

from tools.code_analysis.cache import ResultCache, ResultKey, approx_size, key_size

KEYS = [
    ResultKey("lint", "0.14.0", (), "/work/proj", "src/mod000.py", "ab" * 16, "cfg:1"),
    ResultKey("fix+unsafe", "0.14.0", (("E", "F401"), ("W",)), "/r", "src/é名.py", "cd" * 16, ""),
    ResultKey("format", "", (), "", "", "", ""),
]


@pytest.mark.parametrize("key", KEYS)
def test_key_size_is_the_generic_estimate(key: ResultKey) -> None:
    assert key_size(key) == approx_size(key)


def test_the_cache_accounts_keys_by_key_size() -> None:
    cache: ResultCache[list[str]] = ResultCache()
    for key in KEYS:
        cache.put(key, ["x"])
    assert cache.bytes == sum(approx_size(k) + approx_size(["x"]) for k in KEYS)
