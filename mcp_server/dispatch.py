"""The tools/call path: look the tool up, run the guards and the policy, call it, shape its answer.

Errors a tool raises become a result with `isError: true` (never a JSON-RPC error); an unknown
tool or a refused call (a guard raising `MCPError`) is a JSON-RPC error.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import ValidationError

from mcp_server.api import AppState, ToolContext, ToolOutput
from mcp_server.config import Settings
from mcp_server.connections import ConnectionInfo
from mcp_server.errors import NotFound, tool_error_message
from mcp_server.output import fit
from mcp_server.registry import ToolRegistry

CallGuard = Callable[[ConnectionInfo, str], Awaitable[None]]
"""Runs before every tool call; raises `MCPError` to refuse it (the rate limiter is one)."""


class Dispatcher:
    """Runs one `tools/call` for a connection: guards, policy, the tool, the output budget."""

    def __init__(self, app: AppState, registry: ToolRegistry, settings: Settings, guards: list[CallGuard]) -> None:
        self.app = app
        self.registry = registry
        self.settings = settings
        self.guards = guards

    async def call_tool(
        self, ctx: Any, info: ConnectionInfo, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        name = params.name
        spec = self.registry.get(name)
        if spec is None:
            raise MCPError(INVALID_PARAMS, f"unknown tool {name!r}")
        for guard in self.guards:
            await guard(info, name)
        disabled = spec.disabled_reason(self.settings)
        if disabled:
            return error_result(f"{name} is {disabled}")
        if self.registry.listed() and name not in self.registry.listed():
            reason = self.registry.unavailable_reason(name) or "its backend is not available"
            return error_result(f"{name} is not available: {reason}")
        tctx = ToolContext(
            app=self.app,
            tool=name,
            owner=info.owner,
            connection_id=info.id,
            report_progress=ctx.session.report_progress,
        )
        try:
            args = spec.args.model_validate(params.arguments or {})
            output = await spec.handler(tctx, args)
        except (Exception, ValidationError) as exc:
            if isinstance(exc, NotFound):
                return error_result(str(exc))
            return error_result(tool_error_message(exc, name))
        return self.finish(tctx, output)

    def finish(self, tctx: ToolContext, output: ToolOutput) -> types.CallToolResult:
        """Apply the output budget; whatever does not fit stays in a run context."""
        budget = self.settings.output_budget
        fitted, truncated = fit(output.structured, budget)
        run = output.run
        if truncated and run is None:
            run = tctx.new_run()
            self.app.runs.store(run, summary=None, result=output.structured)
            self.app.runs.finish(run)
        if run is not None:
            fitted = {**fitted, "run_id": run.run_id}
        fitted.setdefault("truncated", truncated)
        text = output.text if output.text is not None else json.dumps(fitted, separators=(",", ":"), default=str)
        if len(text) > budget:
            text = text[: budget - 80] + f"\n…[truncated; get_run({run.run_id if run else ''}) has the rest]"
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structured_content=fitted,
            is_error=output.is_error,
        )


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)
