"""Summary-first results: the summary fields always, the long list cut to the budget, the rest kept in a run.

The server's `finish()` would do the same generically; doing it here for big lists costs one
serialization instead of several, and keeps the list order (worst or first items survive).
"""

from __future__ import annotations

from typing import Any

from mcp_server.api import ToolContext, ToolOutput
from mcp_server.output import CLIP_MARK, size_of

SHARE_OF_BUDGET = 0.8
STRING_SHARE = 0.25


def summary_first(
    ctx: ToolContext, full: dict[str, Any], list_key: str, *, run_only: tuple[str, ...] = ()
) -> ToolOutput:
    """`full` if it fits the output budget; else a cut copy plus a run context holding `full`.

    Keys in `run_only` (the per-file diffs behind one long `fix_diff`, say) are only needed when
    the answer is cut: they go into the run, where `get_run` pages them. The size of a long list
    is estimated from a sample, so a big result is not serialized in full just to learn it is big.
    """
    budget = ctx.settings.output_budget
    shown = {k: v for k, v in full.items() if k not in run_only}
    items: list[Any] = list(shown.get(list_key) or [])
    head = {k: v for k, v in shown.items() if k != list_key}
    head_size = size_of(head)
    average = _average_size(items)
    if head_size + average * len(items) <= budget * SHARE_OF_BUDGET and size_of(shown) <= budget:
        return ToolOutput(shown)
    run = ctx.new_run()
    ctx.runs.finish(run)  # finished first, so the store below measures the big result only once
    ctx.runs.store(run, summary=None, result=full)
    cut = dict(head)
    cut["truncated"] = True
    limit = int(budget * STRING_SHARE)
    for key, value in head.items():  # long strings (a fix diff) get a share of the budget
        if isinstance(value, str) and len(value) > limit:
            cut[key] = value[:limit] + CLIP_MARK
    room = int(budget * SHARE_OF_BUDGET) - size_of(cut)
    keep = min(len(items), int(room / average)) if room > 0 else 0
    while keep > 0 and size_of(items[:keep]) > room:
        keep = keep * 3 // 4
    cut[list_key] = items[:keep]
    cut["omitted"] = {list_key: len(items) - keep}
    return ToolOutput(cut, run=run)


def _average_size(items: list[Any], sample: int = 64) -> float:
    if not items:
        return 1.0
    step = max(1, len(items) // sample)
    picked = items[::step][:sample]
    return max(1.0, (size_of(picked) - 1) / len(picked))
