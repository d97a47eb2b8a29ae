"""Results of the code-analysis tools: the full result, with the list the server may cut and page.

The server's result pipeline (`mcp_server/results.py`) does the budgeting: it redacts, sizes the
result once, keeps it in a run when it does not fit, and shows the first items of `list_key`.
"""

from __future__ import annotations

from typing import Any

from mcp_server.api import ToolContext, ToolOutput


def summary_first(
    ctx: ToolContext, full: dict[str, Any], list_key: str, *, run_only: tuple[str, ...] = ()
) -> ToolOutput:
    """`full` as the answer, `list_key` its pageable list; keys in `run_only` (the per-file diffs
    behind one long `fix_diff`, say) are kept in the run only, never shown in the answer."""
    return ToolOutput(full, pageable=(list_key,), run_only=run_only)
