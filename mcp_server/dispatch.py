"""The tools/call path: look the tool up, run the guards and the policy, call it, shape its answer.

Errors a tool raises become a result with `isError: true` (never a JSON-RPC error); an unknown
tool or a refused call (a guard raising `MCPError`) is a JSON-RPC error. Everything a call sends
back leaves through the result pipeline (`results.py`: redaction, the output budget, the run) or
is redacted here (error messages, progress notifications).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS
from pydantic import ValidationError

from mcp_server import results
from mcp_server.api import AppState, ProgressFn, ToolContext, ToolOutput
from mcp_server.config import Settings
from mcp_server.connections import ConnectionInfo
from mcp_server.errors import NotFound, tool_error_message
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
            raise MCPError(INVALID_PARAMS, self.app.redactor.redact(f"unknown tool {name!r}"))
        for guard in self.guards:
            await guard(info, name)
        disabled = spec.disabled_reason(self.settings)
        if disabled:
            return error_result(f"{name} is {disabled}", self.app)
        if self.registry.listed() and name not in self.registry.listed():
            reason = self.registry.unavailable_reason(name) or "its backend is not available"
            return error_result(f"{name} is not available: {reason}", self.app)
        tctx = ToolContext(
            app=self.app,
            tool=name,
            owner=info.owner,
            connection_id=info.id,
            report_progress=self._progress(ctx.session.report_progress),
        )
        try:
            args = spec.args.model_validate(params.arguments or {})
            output = await spec.handler(tctx, args)
        except (Exception, ValidationError) as exc:
            if isinstance(exc, NotFound):
                return error_result(str(exc), self.app)
            return error_result(tool_error_message(exc, name), self.app)
        return self.finish(tctx, output)

    def finish(self, tctx: ToolContext, output: ToolOutput) -> types.CallToolResult:
        """The result pipeline (`results.finish`): redacted, within the budget, the rest in a run."""
        return results.finish(tctx, output)

    def _progress(self, report: ProgressFn) -> ProgressFn:
        """Progress notifications leave redacted (a message may name a test id holding a secret)."""
        redact = self.app.redactor.redact

        async def send(progress: float, total: float | None, message: str | None) -> None:
            await report(progress, total, redact(message) if message else message)

        return send


def error_result(message: str, app: AppState | None = None) -> types.CallToolResult:
    return results.error_result(app, message)
