"""get_run / cancel_run and tool-call errors over every transport."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import ClientFactory

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_unknown_run_is_not_found(mcp_client: ClientFactory, mode: str, tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with mcp_client(mode=mode) as client:
            result = await client.call_tool("get_run", {"run_id": "run_doesnotexist"})
            assert result.is_error
            assert "not found" in result.content[0].text  # type: ignore[union-attr]


async def test_bad_arguments_are_tool_errors(mcp_client: ClientFactory) -> None:
    with anyio.fail_after(30):
        async with mcp_client() as client:
            result = await client.call_tool("get_run", {"run_id": 5, "extra": True})
            assert result.is_error
            text = result.content[0].text  # type: ignore[union-attr]
            assert "run_id" in text and "extra: unknown argument" in text
            with pytest.raises(MCPError, match="unknown tool"):
                await client.call_tool("no_such_tool", {})
            # the connection still serves
            tools = await client.list_tools()
            assert "get_run" in [t.name for t in tools.tools]
