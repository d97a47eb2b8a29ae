"""The ToolSpecs of the workflow tools: `check` and `check_history`."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mcp_server.api import ToolArgs, ToolContext, ToolOutput, ToolSpec
from tools.workflow.args import CheckArgs
from tools.workflow.check import check
from tools.workflow.history import get_history


class CheckHistoryArgs(ToolArgs):
    limit: int = Field(default=20, ge=1, le=1000, description="How many of the latest checks.")


async def check_history(ctx: ToolContext, args: CheckHistoryArgs) -> ToolOutput:
    history = await get_history(ctx.app)
    return ToolOutput({"checks": history.recent(ctx.owner, args.limit), "kept": history.entries.maxlen})


def check_spec() -> ToolSpec[Any]:
    return ToolSpec(
        name="check",
        title="Check a change",
        description="Is this change good? Runs lint, format check, the complexity gate (analyze) and the tests "
        "concurrently, and judges each by its gate (settings check_lint_clean, check_format_clean, "
        "check_max_complexity, check_tests_pass). Returns {run_id, status: passed|failed|error|cancelled|"
        "timeout, phases: [{name, status, duration_s, summary}], sections}; each phase's lists are in the run: "
        "get_run(run_id, section='phases/tests/failures'), 'phases/lint/diagnostics', 'phases/format/files', "
        "'phases/analyze/over_limit'. Progress arrives in phase order. `fail_fast` cancels the rest on the "
        "first failed gate; `affected` runs only the affected tests. A root without tests skips that phase.",
        args=CheckArgs,
        handler=check,
        read_only=False,
    )


def check_history_spec() -> ToolSpec[Any]:
    return ToolSpec(
        name="check_history",
        title="Recent checks",
        description="The latest `check` runs of this connection, newest first: run_id, root, status, the "
        "status of each phase, duration. The server keeps the last check_history_size checks.",
        args=CheckHistoryArgs,
        handler=check_history,
    )
