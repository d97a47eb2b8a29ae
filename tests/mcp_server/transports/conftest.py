"""Network servers in the test's event loop on real loopback sockets, with a tool that makes runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
from pydantic import Field

from mcp_server.api import ToolArgs, ToolContext, ToolOutput, ToolSpec
from mcp_server.builtin_tools import load_builtin_tools
from mcp_server.server import CodeToolsServer
from tests.conftest import make_settings

TOKEN = "s3cret-token-for-tests"
INITIALIZE = {
    "protocolVersion": "2025-11-25",
    "capabilities": {},
    "clientInfo": {"name": "raw-test", "version": "0"},
}


class BigArgs(ToolArgs):
    n: int = Field(default=500, ge=0)


async def big_handler(ctx: ToolContext, args: BigArgs) -> ToolOutput:
    """A result over the output budget: the server keeps it in a run context owned by the caller."""
    items = [{"i": i, "text": f"item number {i} " + "x" * 40} for i in range(args.n)]
    return ToolOutput({"items": items, "total": args.n})


def loaders() -> list[Any]:
    def extra() -> list[ToolSpec[Any]]:
        return [ToolSpec(name="big", title="Big", description="A large result.", args=BigArgs, handler=big_handler)]

    return [load_builtin_tools, extra]


def make_app(tmp_path: Path, transport: str, **settings: Any) -> CodeToolsServer:
    """A server for `transport` on 127.0.0.1, port 0, with a small budget so `big` makes a run."""
    values: dict[str, Any] = {"output_budget": 2000, **settings, "transport": transport, "port": 0}
    return CodeToolsServer(make_settings(tmp_path, tmp_path, **values), loaders=loaders())


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def error_text(result: types.CallToolResult) -> str:
    assert result.is_error
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


class ClosedConnections:
    """Records the owners whose connections ended (via `app.connection_closed`); waits are bounded."""

    def __init__(self, app: CodeToolsServer) -> None:
        self.owners: list[str | None] = []
        self._changed = anyio.Event()
        original = app.connection_closed

        def closed(owner: str | None) -> None:
            original(owner)
            self.owners.append(owner)
            self._changed.set()
            self._changed = anyio.Event()

        app.connection_closed = closed  # type: ignore[method-assign]

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> None:
        with anyio.fail_after(timeout_s):
            while len(self.owners) < count:
                await self._changed.wait()
