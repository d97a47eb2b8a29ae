"""The output budget: every answer summary-first, under a size budget; the rest stays in the run.

Pure functions on JSON-like values. `fit()` shortens long strings inside lists first (tracebacks,
diffs), then cuts the longest lists, until the serialized result fits.
"""

from __future__ import annotations

import copy
import json
from typing import Any

CLIP_MARK = "…[truncated]"


def size_of(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False))


def _clip_strings(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + CLIP_MARK
    if isinstance(value, list):
        return [_clip_strings(v, limit) for v in value]
    if isinstance(value, dict):
        return {k: _clip_strings(v, limit) for k, v in value.items()}
    return value


def fit(structured: dict[str, Any], budget: int) -> tuple[dict[str, Any], bool]:
    """Return (result, truncated). `result` serializes to at most `budget` characters where possible."""
    if size_of(structured) <= budget:
        return structured, False
    result = copy.deepcopy(structured)
    result["truncated"] = True
    totals = {k: len(v) for k, v in result.items() if isinstance(v, list)}
    # 1. Long strings inside lists and top-level strings (tracebacks, diffs, logs).
    limit = max(200, budget // 10)
    while size_of(result) > budget and limit >= 200:
        result = {k: (_clip_strings(v, limit) if isinstance(v, (list, str)) else v) for k, v in result.items()}
        limit //= 2
    # 2. Cut the largest list in half until it fits.
    while size_of(result) > budget:
        lists = [(size_of(v), k) for k, v in result.items() if isinstance(v, list) and v]
        if not lists:
            break
        _, key = max(lists)
        items = result[key]
        result[key] = items[: len(items) // 2]
    omitted = {k: n - len(result[k]) for k, n in totals.items() if n - len(result[k]) > 0}
    if omitted:
        result["omitted"] = omitted
    if size_of(result) > budget:
        # Last resort: only scalars survive (counts, totals, status).
        result = {k: v for k, v in result.items() if not isinstance(v, (list, dict, str)) or k in ("status", "run_id")}
        result["truncated"] = True
    return result, True


def page(items: list[Any], offset: int, limit: int, budget: int) -> tuple[list[Any], bool]:
    """A page of `items` from `offset`, at most `limit` long and within `budget` characters."""
    chunk = items[offset : offset + limit]
    while len(chunk) > 1 and size_of(chunk) > budget:
        chunk = chunk[: len(chunk) // 2]
    return chunk, offset + len(chunk) < len(items)
