"""Error types, and the one place that turns an exception into what goes on the wire.

Tool failures (bad arguments, refused paths, policy, a backend that is missing) are results with
`isError: true`; protocol failures (unknown method, malformed params) are JSON-RPC errors raised
as `MCPError`. Internal details never leak: an unexpected exception becomes a short message and a
log line on stderr.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

logger = logging.getLogger("mcp_server")


class ToolError(Exception):
    """A failure the caller should see as a tool result with `isError: true`."""


class PolicyRefused(ToolError):
    """The policy forbids this call; the message names the setting."""


class Busy(ToolError):
    """The run queue is full: retry later."""


class NotFound(ToolError):
    """An unknown run, or one that belongs to another connection (the same answer for both)."""


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, naming the argument: `select: Input should be a valid list`."""
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "arguments"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown argument"
        parts.append(f"{loc}: {msg}")
    more = len(exc.errors()) - 5
    if more > 0:
        parts.append(f"... and {more} more")
    return "invalid arguments: " + "; ".join(parts)


def tool_error_message(exc: BaseException, tool: str) -> str:
    """The message of an `isError` result for `exc`; unexpected errors are logged, not leaked."""
    if isinstance(exc, ToolError):
        return str(exc)
    if isinstance(exc, ValidationError):
        return describe_validation_error(exc)
    logger.exception("tool %s failed unexpectedly", tool, exc_info=exc)
    return f"internal error in tool {tool} ({type(exc).__name__}); see the server log"
