"""The output budget: the one way a result is cut to size, and the one way a stored result is paged.

Pure functions on JSON-like values. `cut()` keeps every scalar, clips long strings (a diff, a
traceback: the full text is a section of its own, paged by character offset), and keeps the
first items of each list in the room left, sharing it between the lists; it serializes only what
it keeps, estimating the size of the rest from a sample. `page_items()` and `page_text()` give one
page of a stored list or string. Every value is passed through `redact` before it is measured or
clipped, so a secret is never cut in half.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CLIP_MARK = "…[truncated]"
MIN_STRING = 200
"""A string is never clipped shorter than this."""
RESERVE = 300
"""Room kept for run_id, truncated, omitted and clipped."""
MAX_CLIP_NOTES = 20

Redact = Callable[[Any], Any]


def size_of(value: Any) -> int:
    return len(json.dumps(value, separators=(",", ":"), default=str, ensure_ascii=False))


def _identity(value: Any) -> Any:
    return value


def estimate(value: Any, sample: int = 64) -> int:
    """The serialized size of `value`, from a sample of each long list (exact for small values)."""
    if isinstance(value, dict):
        return 2 + sum(size_of(k) + 1 + estimate(v, sample) + 1 for k, v in value.items())
    if isinstance(value, list) and len(value) > sample:
        step = len(value) // sample
        picked = value[::step][:sample]
        return int((size_of(picked) - 1) / len(picked) * len(value)) + 1
    return size_of(value)


@dataclass
class Cut:
    """A result cut to the budget: `value` is what is shown."""

    value: dict[str, Any]
    truncated: bool
    full_size: int
    """Estimated serialized size of the whole result (what a run will hold)."""
    omitted: dict[str, int] = field(default_factory=dict)
    clipped: dict[str, int] = field(default_factory=dict)


def _clip(value: Any, limit: int, path: str, clipped: dict[str, int]) -> Any:
    """`value` with strings longer than `limit` clipped; each clipped string's path and length noted."""
    if isinstance(value, str):
        if len(value) <= limit:
            return value
        if len(clipped) < MAX_CLIP_NOTES:
            clipped[path] = len(value)
        return value[:limit] + CLIP_MARK
    if isinstance(value, list):
        return [_clip(v, limit, f"{path}/{i}", clipped) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _clip(v, limit, f"{path}/{k}", clipped) for k, v in value.items()}
    return value


def cut(full: dict[str, Any], budget: int, *, pageable: tuple[str, ...] = (), redact: Redact = _identity) -> Cut:
    """`full` (redacted) when it fits `budget`; else a cut copy: scalars, clipped strings, first items."""
    full_size = estimate(full)
    if full_size <= budget * 1.25:
        shown = redact(full)
        size = size_of(shown)
        if size <= budget:
            return Cut(shown, False, size)
        full_size = size
    clipped: dict[str, int] = {}
    limit = max(MIN_STRING, budget // 4)
    lists = [k for k, v in full.items() if isinstance(v, list)]
    result: dict[str, Any] = {}
    for key, value in full.items():
        if not isinstance(value, list):
            result[key] = _clip(redact(value), limit, key, clipped)
    result["truncated"] = True
    room = int(budget * 0.9) - size_of(result) - RESERVE
    # Lists share the room: the smaller ones first, what one leaves over goes to the next; the
    # lists a tool named pageable last (they are the long ones, paged through get_run).
    order = sorted(lists, key=lambda k: (k in pageable, estimate(full[k])))
    kept: dict[str, list[Any]] = {}
    omitted: dict[str, int] = {}
    for n, key in enumerate(order):
        items: list[Any] = full[key]
        share = max(0, room) // (len(order) - n)
        used = 2
        shown_items: list[Any] = []
        for i, item in enumerate(items):
            item = _clip(redact(item), limit, f"{key}/{i}", clipped)
            size = size_of(item) + 1
            if used + size > share:
                for path in [p for p in clipped if p.startswith(f"{key}/{i}/") or p == f"{key}/{i}"]:
                    del clipped[path]  # noted only for what is shown
                break
            shown_items.append(item)
            used += size
        kept[key] = shown_items
        room -= used
        if len(shown_items) < len(items):
            omitted[key] = len(items) - len(shown_items)
    for key in full:  # the original key order
        if key in kept:
            result[key] = kept[key]
    result.pop("truncated")
    result["truncated"] = True
    if omitted:
        result["omitted"] = omitted
    if clipped:
        result["clipped"] = clipped
    if size_of(result) > budget - RESERVE // 2:
        # Last resort: only scalars survive (counts, totals, status).
        result = {k: v for k, v in result.items() if not isinstance(v, (list, dict, str)) or k == "status"}
        result["truncated"] = True
        clipped = {}
    return Cut(result, True, full_size, omitted, clipped)


def page_items(
    items: list[Any], offset: int, limit: int, budget: int, *, section: str, redact: Redact = _identity
) -> tuple[list[Any], int | None, dict[str, int]]:
    """(page, next_offset, clipped): items from `offset`, at most `limit`, within `budget`.

    An item larger than the page is shown alone with its long strings clipped; `clipped` names
    each clipped string as a section (`files/3/diff`) to page by character offset.
    """
    page: list[Any] = []
    clipped: dict[str, int] = {}
    used = 2
    for i in range(offset, min(len(items), offset + limit)):
        item = redact(items[i])
        size = size_of(item) + 1
        if used + size > budget:
            if page:
                break
            limit_chars = max(MIN_STRING, budget // 2)
            while True:
                notes: dict[str, int] = {}
                small = _clip(item, limit_chars, f"{section}/{i}", notes)
                if size_of(small) <= budget or limit_chars <= MIN_STRING:
                    break
                limit_chars //= 2
            item, clipped = small, notes
            size = size_of(item) + 1
        page.append(item)
        used += size
    end = offset + len(page)
    return page, (end if end < len(items) else None), clipped


def page_text(text: str, offset: int, limit: int) -> tuple[str, int | None]:
    """(chunk, next_offset): characters of `text` from `offset`."""
    chunk = text[offset : offset + limit]
    end = offset + len(chunk)
    return chunk, (end if end < len(text) else None)


def resolve(result: dict[str, Any], section: str) -> Any:
    """The value at `section` in `result`: a key (which may hold slashes), or a path into one
    (`files/3/diff`: key, list index, dict key). None when there is no such value."""
    if section in result:
        return result[section]
    keys = sorted((k for k in result if section.startswith(f"{k}/")), key=len, reverse=True)
    for key in keys:
        value: Any = result[key]
        for part in section[len(key) + 1 :].split("/"):
            if isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            elif isinstance(value, dict) and part in value:
                value = value[part]
            else:
                value = None
                break
        if value is not None:
            return value
    return None
