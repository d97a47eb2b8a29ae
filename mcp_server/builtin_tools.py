"""Tools of the server itself: reading and cancelling run contexts."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import Field

from mcp_server.api import ToolArgs, ToolContext, ToolError, ToolOutput, ToolSpec
from mcp_server.output import page_items, page_text, resolve
from mcp_server.results import stored_summary, stored_text
from mcp_server.runs import RunContext

CANCEL_WAIT_S = 10.0


class GetRunArgs(ToolArgs):
    run_id: str = Field(description="The run_id a tool returned.")
    section: str = Field(
        default="summary",
        description="`summary` (the tool's result shape), `log` (text), a list in the result "
        "(`diagnostics`, `failures`, `tests`, ...) paged by offset/limit, or a path to a long string "
        "inside it (`files/0/diff`, as named in `clipped`) paged by character.",
    )
    offset: int = Field(default=0, ge=0, description="First item (for lists) or character (for text).")
    limit: int | None = Field(default=None, ge=1, description="How many items or characters; default fits the budget.")


class CancelRunArgs(ToolArgs):
    run_id: str = Field(description="The run_id of a running run.")


def run_summary(ctx: ToolContext, run: RunContext) -> dict[str, Any]:
    """The run's result in the shape its tool returned, budgeted once; or its progress while running."""
    if run.result is None:
        base = dict(run.summary or {})
        base.setdefault("status", "running" if run.running else "unknown")
        base["run_id"] = run.run_id
        base.setdefault("done", len(run.events))
        return base
    summary = stored_summary(ctx.app, run)
    summary["truncated"] = bool(summary.get("truncated")) or bool(run.result.get("truncated", False))
    return summary


def _text_page(run: RunContext, section: str, text: str, offset: int, limit: int) -> ToolOutput:
    chunk, next_offset = page_text(text, offset, limit)
    structured = {
        "run_id": run.run_id,
        "section": section,
        "offset": offset,
        "total": len(text),
        "text": chunk,
        "next_offset": next_offset,
    }
    return ToolOutput(structured, text=chunk or "(no more text)", view=True)


async def get_run(ctx: ToolContext, args: GetRunArgs) -> ToolOutput:
    run = ctx.runs.get(ctx.owner, args.run_id)
    budget = ctx.settings.output_budget
    text_limit = min(args.limit or budget // 2, budget // 2)
    if args.section == "summary":
        return ToolOutput(run_summary(ctx, run), view=True)
    if args.section == "log":
        output = _text_page(run, "log", run.log.text(), args.offset, text_limit)
        output.text = output.structured["text"] or "(no more log)"
        return output
    result = run.result or {}
    value = resolve(result, args.section)
    if isinstance(value, str):  # a long string of the result (a diff, a traceback): by character
        return _text_page(run, args.section, stored_text(ctx.app, run, args.section, value), args.offset, text_limit)
    if not isinstance(value, list):
        names = ["summary", "log", *sorted(k for k, v in result.items() if isinstance(v, list))]
        raise ToolError(f"run {run.run_id} has no section {args.section!r}; sections: {', '.join(names)}")
    items, next_offset, clipped = page_items(
        value, args.offset, args.limit or 100, budget - 500, section=args.section, redact=ctx.app.redactor.redact_value
    )
    structured: dict[str, Any] = {
        "run_id": run.run_id,
        "section": args.section,
        "offset": args.offset,
        "total": len(value),
        "items": items,
        "next_offset": next_offset,
    }
    if clipped:
        structured["clipped"] = clipped  # each a section of its own: get_run(section=path, offset=...)
    return ToolOutput(structured, view=True)


async def cancel_run(ctx: ToolContext, args: CancelRunArgs) -> ToolOutput:
    run = ctx.runs.get(ctx.owner, args.run_id)
    if not run.running:
        summary = run_summary(ctx, run)
        summary["already_finished"] = True
        return ToolOutput(summary, view=True)
    run.cancel()
    with anyio.move_on_after(CANCEL_WAIT_S):
        await run.finished.wait()
    summary = run_summary(ctx, run)
    if run.running:
        summary["status"] = "cancelling"
    return ToolOutput(summary, view=True)


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
