"""The policy is authoritative: a forbidden call or a refused path is an `isError` result that names
the setting or the path, and no process starts; `tools/list` still lists the tool and says why."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client import Client
from pydantic import Field

from mcp_server.api import ToolArgs, ToolContext, ToolOutput, ToolSpec
from mcp_server.builtin_tools import load_builtin_tools
from mcp_server.server import CodeToolsServer
from mcp_server.transports.memory import memory_transport
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


class RunArgs(ToolArgs):
    path: str = Field(default=".", description="A file or directory in the workspace.")


async def run_project_code(ctx: ToolContext, args: RunArgs) -> ToolOutput:
    """Stands in for run_tests: resolves its path, then runs a process through the executor."""
    target = ctx.path(args.path)
    result = await ctx.executor.run(
        [sys.executable, "-c", "print('ran')"],
        cwd=target.root,
        tool=ctx.tool,
        connection=ctx.connection_id,
        timeout_s=30,
        project_env=True,
    )
    return ToolOutput({"stdout": result.stdout.strip(), "path": target.rel})


def policy_tools() -> list[ToolSpec[Any]]:
    return [
        ToolSpec(
            name="run_project",
            title="Run project code",
            description="Runs the project's code.",
            args=RunArgs,
            handler=run_project_code,
            requires_test_execution=True,
            read_only=False,
        ),
        ToolSpec(
            name="inspect_path",
            title="Inspect a path",
            description="Runs a harmless process on a path.",
            args=RunArgs,
            handler=run_project_code,
        ),
    ]


@asynccontextmanager
async def serve(tmp_path: Path, mode: str = "legacy", **settings: Any) -> AsyncIterator[tuple[CodeToolsServer, Client]]:
    app = CodeToolsServer(make_settings(tmp_path, tmp_path, **settings), loaders=[load_builtin_tools, policy_tools])
    async with Client(memory_transport(app), mode=mode) as client:
        yield app, client


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def text_of(result: types.CallToolResult) -> str:
    content = result.content[0]
    assert isinstance(content, types.TextContent)
    return content.text


async def tool_named(client: Client, name: str) -> types.Tool:
    return next(t for t in (await client.list_tools(cache_mode="bypass")).tools if t.name == name)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_forbidden_tool_is_refused_without_starting_a_process(tmp_path: Path, mode: str) -> None:
    with anyio.fail_after(30):
        async with serve(tmp_path, mode, allow_test_execution=False) as (app, client):
            tool = await tool_named(client, "run_project")
            assert tool.description is not None
            assert "disabled by policy" in tool.description and "allow_test_execution" in tool.description
            assert "MCP_CODE_TOOLS_ALLOW_TEST_EXECUTION" in tool.description
            result = await client.call_tool("run_project", {})
            assert result.is_error
            assert "allow_test_execution" in text_of(result)
            assert app.app.executor.live == set()
    assert audit_lines(tmp_path) == []  # nothing ran


async def test_network_transports_forbid_running_code_unless_allowed(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with serve(tmp_path, transport="websocket") as (_, client):
            tool = await tool_named(client, "run_project")
            assert "over a network transport" in (tool.description or "")
            result = await client.call_tool("run_project", {})
            assert result.is_error and "allow_test_execution" in text_of(result)
        assert audit_lines(tmp_path) == []
        async with serve(tmp_path, transport="websocket", allow_test_execution=True) as (_, client):
            tool = await tool_named(client, "run_project")
            assert "disabled" not in (tool.description or "")
            result = await client.call_tool("run_project", {})
            assert not result.is_error and result.structured_content is not None
            assert result.structured_content["stdout"] == "ran"
    (line,) = audit_lines(tmp_path)  # the one allowed call ran one process, and it was audited
    assert line["tool"] == "run_project" and line["exit_status"] == 0


async def test_an_allowed_tool_runs_and_is_audited(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with serve(tmp_path) as (_, client):  # stdio default: test execution allowed
            tool = await tool_named(client, "run_project")
            assert "disabled" not in (tool.description or "")
            result = await client.call_tool("run_project", {"path": "."})
            assert not result.is_error
    assert [line["tool"] for line in audit_lines(tmp_path)] == ["run_project"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("../outside", "outside every allowed root"),
        ("/etc", "outside every allowed root"),
        ("missing.py", "does not exist"),
        ("a\x00b", "NUL byte"),
        ("link", "outside every allowed root"),
    ],
)
async def test_a_refused_path_is_an_error_naming_it_and_nothing_runs(tmp_path: Path, raw: str, expected: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (root / "link").symlink_to(tmp_path / "outside")
    with anyio.fail_after(30):
        app = CodeToolsServer(make_settings(root, tmp_path), loaders=[load_builtin_tools, policy_tools])
        async with Client(memory_transport(app)) as client:
            result = await client.call_tool("inspect_path", {"path": raw})
            assert result.is_error
            message = text_of(result)
            assert expected in message
            assert repr(raw) in message  # the message names the path
    assert audit_lines(tmp_path) == []


async def test_bad_arguments_are_a_clear_error_and_nothing_runs(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with serve(tmp_path) as (_, client):
            result = await client.call_tool("inspect_path", {"path": 42, "extra": True})
            assert result.is_error
            message = text_of(result)
            assert "path" in message and "extra" in message and "unknown argument" in message
            assert "Traceback" not in message
    assert audit_lines(tmp_path) == []
