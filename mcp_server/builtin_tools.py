"""Tools of the server itself: reading and cancelling run contexts."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import Field

from mcp_server.api import ToolArgs, ToolContext, ToolError, ToolOutput, ToolSpec
from mcp_server.output import fit, page
from mcp_server.runs import RunContext

CANCEL_WAIT_S = 10.0


class GetRunArgs(ToolArgs):
    run_id: str = Field(description="The run_id a tool returned.")
    section: str = Field(
        default="summary",
        description="`summary` (the tool's result shape), `log` (text), or a list in the result "
        "(`diagnostics`, `failures`, `tests`, ...), paged by offset/limit.",
    )
    offset: int = Field(default=0, ge=0, description="First item (for lists) or character (for the log).")
    limit: int | None = Field(default=None, ge=1, description="How many items or characters; default fits the budget.")


class CancelRunArgs(ToolArgs):
    run_id: str = Field(description="The run_id of a running run.")


def run_summary(ctx: ToolContext, run: RunContext) -> dict[str, Any]:
    """The run's result in the shape its tool returned, budgeted; or its progress while running."""
    if run.result is None:
        base = dict(run.summary or {})
        base.setdefault("status", "running" if run.running else "unknown")
        base["run_id"] = run.run_id
        base.setdefault("done", len(run.events))
        return base
    fitted, truncated = fit(run.result, ctx.settings.output_budget)
    fitted = dict(fitted)
    fitted["run_id"] = run.run_id
    fitted["truncated"] = truncated or bool(run.result.get("truncated", False))
    return fitted


async def get_run(ctx: ToolContext, args: GetRunArgs) -> ToolOutput:
    run = ctx.runs.get(ctx.owner, args.run_id)
    budget = ctx.settings.output_budget
    if args.section == "summary":
        return ToolOutput(run_summary(ctx, run))
    if args.section == "log":
        text = run.log.text()
        limit = min(args.limit or budget // 2, budget // 2)
        chunk = text[args.offset : args.offset + limit]
        end = args.offset + len(chunk)
        structured = {
            "run_id": run.run_id,
            "section": "log",
            "offset": args.offset,
            "total": len(text),
            "text": chunk,
            "next_offset": end if end < len(text) else None,
        }
        return ToolOutput(structured, text=chunk or "(no more log)")
    result = run.result or {}
    items = result.get(args.section)
    if not isinstance(items, list):
        names = ["summary", "log", *sorted(k for k, v in result.items() if isinstance(v, list))]
        raise ToolError(f"run {run.run_id} has no section {args.section!r}; sections: {', '.join(names)}")
    items_page, more = page(items, args.offset, args.limit or 100, budget - 500)
    structured = {
        "run_id": run.run_id,
        "section": args.section,
        "offset": args.offset,
        "total": len(items),
        "items": items_page,
        "next_offset": args.offset + len(items_page) if more else None,
    }
    return ToolOutput(structured)


async def cancel_run(ctx: ToolContext, args: CancelRunArgs) -> ToolOutput:
    run = ctx.runs.get(ctx.owner, args.run_id)
    if not run.running:
        summary = run_summary(ctx, run)
        summary["already_finished"] = True
        return ToolOutput(summary)
    run.cancel()
    with anyio.move_on_after(CANCEL_WAIT_S):
        await run.finished.wait()
    summary = run_summary(ctx, run)
    if run.running:
        summary["status"] = "cancelling"
    return ToolOutput(summary)


def load_builtin_tools() -> list[ToolSpec[Any]]:
    return [
        ToolSpec(
            name="get_run",
            title="Read a run",
            description="Read a run context by run_id: its summary, its log, or a page of one of its lists "
            "(e.g. diagnostics, failures). Runs expire after run_ttl_s without access.",
            args=GetRunArgs,
            handler=get_run,
        ),
        ToolSpec(
            name="cancel_run",
            title="Cancel a run",
            description="Cancel a running run (e.g. run_tests with wait=false); returns what it gathered so far.",
            args=CancelRunArgs,
            handler=cancel_run,
            read_only=False,
        ),
    ]
