"""The baseline: a minimal low-level SDK server over stdio with one trivial tool, started like ours."""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.stdio import stdio_server


async def list_tools(ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
    schema = {"type": "object", "properties": {"run_id": {"type": "string"}}}
    return types.ListToolsResult(tools=[types.Tool(name="get_run", input_schema=schema)])


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    text = f"run {(params.arguments or {}).get('run_id')!r} not found"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


async def main() -> None:
    server: Server[Any] = Server("minimal", on_list_tools=list_tools, on_call_tool=call_tool)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
