"""The logging capability: logging/setLevel per connection, notifications/message for tool calls,
redacted and rate-limited, in both protocol eras (2026-07-28: the per-request `_meta` opt-in)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from mcp_server.api import ToolArgs, ToolContext, ToolOutput, ToolSpec
from mcp_server.builtin_tools import load_builtin_tools
from mcp_server.logging_capability import ClientLogger, ConnectionLog, LogLevels, TokenBucket, allowed_levels
from mcp_server.redact import Redactor
from mcp_server.server import CodeToolsServer
from mcp_server.transports.memory import memory_transport
from tests.conftest import make_settings, network_settings, settings_env

pytestmark = [
    pytest.mark.anyio,
    # The client's logging API is deprecated as of 2026-07-28 (SEP-2577); the feature is what we test.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

MODERN = "2026-07-28"


@asynccontextmanager
async def open_client(
    transport: str, root: Path, tmp: Path, mode: str = "legacy", client_kwargs: dict[str, Any] | None = None
) -> AsyncIterator[tuple[Any, Client]]:
    kwargs = client_kwargs or {}
    if transport == "memory":
        app = CodeToolsServer(make_settings(root, tmp))
        async with Client(memory_transport(app), mode=mode, **kwargs) as client:
            yield app, client
        return
    if transport == "websocket":
        from mcp_server.transports.websocket import websocket_server
        from mcp_server.transports.ws_client import websocket_client

        app = CodeToolsServer(make_settings(root, tmp, **network_settings("websocket", {})))
        async with (
            websocket_server(app) as endpoint,
            Client(websocket_client(endpoint.url), mode=mode, **kwargs) as client,
        ):
            yield app, client
        return
    if transport == "stdio":  # the server is a process of its own: no app object to look into
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "mcp_server"], env=settings_env(root, tmp), cwd=str(root)
        )
        async with Client(params, mode=mode, **kwargs) as client:
            yield None, client
        return
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from mcp_server.transports.http import http_server

    app = CodeToolsServer(make_settings(root, tmp, **network_settings("http", {})))
    async with (
        http_server(app) as endpoint,
        httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=120.0)) as http,
        Client(streamable_http_client(endpoint.url, http_client=http), mode=mode, **kwargs) as client,
    ):
        yield app, client


class Inbox:
    def __init__(self) -> None:
        self.messages: list[types.LoggingMessageNotificationParams] = []
        self.arrived = anyio.Event()

    async def __call__(self, params: types.LoggingMessageNotificationParams) -> None:
        self.messages.append(params)
        self.arrived.set()

    def events(self) -> list[str]:
        return [m.data.get("event", "") for m in self.messages if isinstance(m.data, dict)]


def source_file(tmp_path: Path) -> Path:
    (tmp_path / "mod.py").write_text("import os\n")
    return tmp_path


@pytest.mark.parametrize("transport", ["memory", "stdio", "websocket", "http"])
async def test_set_level_filters_tool_events_per_connection(tmp_path: Path, transport: str) -> None:
    root = source_file(tmp_path)
    inbox = Inbox()
    with anyio.fail_after(60):
        async with open_client(transport, root, tmp_path, client_kwargs={"logging_callback": inbox}) as (_, client):
            assert client.server_capabilities.logging is not None
            assert await client.set_logging_level("debug") == types.EmptyResult()
            await client.call_tool("lint", {"paths": ["mod.py"]})
            await inbox.arrived.wait()
            assert inbox.events()[:2] == ["tool_call", "tool_result"]
            result = inbox.messages[1]
            assert result.level == "info" and result.logger == "mcp-code-tools"
            assert result.data["tool"] == "lint" and result.data["is_error"] is False

            inbox.messages.clear()
            await client.set_logging_level("error")
            await client.call_tool("lint", {"paths": ["mod.py"]})
            await client.send_ping()  # anything sent for the call arrived before this answer
            assert inbox.messages == []


@pytest.mark.parametrize("transport", ["memory", "stdio", "websocket", "http"])
async def test_unknown_level_is_invalid_params(tmp_path: Path, transport: str) -> None:
    with anyio.fail_after(30):
        async with open_client(transport, tmp_path, tmp_path) as (_, client):
            with pytest.raises(MCPError) as caught:
                await client.session.send_request(
                    types.SetLevelRequest.model_construct(
                        method="logging/setLevel", params=types.SetLevelRequestParams.model_construct(level="loud")
                    ),
                    types.EmptyResult,
                )
            assert caught.value.error.code == types.INVALID_PARAMS


@pytest.mark.parametrize("transport", ["memory", "stdio", "websocket", "http"])
async def test_modern_era_logs_only_for_requests_that_opt_in(tmp_path: Path, transport: str) -> None:
    root = source_file(tmp_path)
    quiet, loud = Inbox(), Inbox()
    with anyio.fail_after(60):
        async with open_client(transport, root, tmp_path, MODERN, {"logging_callback": quiet}) as (_, client):
            await client.call_tool("lint", {"paths": ["mod.py"]})
            assert quiet.messages == []
        kwargs = {"logging_callback": loud, "log_level": "debug"}
        async with open_client(transport, root, tmp_path, MODERN, kwargs) as (_, client):
            await client.call_tool("lint", {"paths": ["mod.py"]})
            await loud.arrived.wait()
            assert "tool_call" in loud.events()


async def test_level_state_ends_with_the_connection(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with open_client("memory", tmp_path, tmp_path) as (app, client):
            await client.set_logging_level("warning")
            assert len(app.features.log_levels) == 1
        assert len(app.features.log_levels) == 0


# --- the logger itself: redaction and the rate limit ---------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_entries_are_redacted_and_rate_limited() -> None:
    sent: list[types.LoggingMessageNotificationParams] = []

    async def send(note: types.LoggingMessageNotification) -> None:
        sent.append(note.params)

    clock = FakeClock()
    state = ConnectionLog(bucket=TokenBucket(rate=2.0, burst=3, clock=clock))
    log = ClientLogger(send, allowed_levels("2025-11-25", None, "debug"), state, Redactor(["s3cr3t-value-123"]))
    assert await log.log("info", {"message": "token s3cr3t-value-123 used"})
    assert "s3cr3t-value-123" not in str(sent[0].data)
    for _ in range(10):
        await log.log("info", "chatty")
    assert len(sent) == 3  # the burst
    assert state.dropped == 8
    clock.now += 1.0  # two more tokens
    assert await log.log("warning", "after the flood")
    assert sent[-1].data == {"message": "after the flood", "dropped_before": 8}
    assert not await log.log("debug", "x") or len(sent) == 5


def test_levels_by_era() -> None:
    assert allowed_levels("2025-11-25", None, "error") == frozenset({"error", "critical", "alert", "emergency"})
    assert allowed_levels(MODERN, None, "debug") == frozenset()
    assert allowed_levels(MODERN, {"io.modelcontextprotocol/logLevel": "critical"}, "debug") == frozenset(
        {"critical", "alert", "emergency"}
    )
    assert allowed_levels(MODERN, {"io.modelcontextprotocol/logLevel": "bogus"}, "debug") == frozenset()


def test_level_store_is_bounded() -> None:
    levels = LogLevels(max_connections=2)
    for key in ("a", "b", "c"):
        levels.set_level(key, "error")
    assert len(levels) == 2
    assert levels.state("a").level == "warning"  # forgotten: back to the default


# --- a tool's own log entries (ToolContext.log) -------------------------------------------------


class NoArgs(ToolArgs):
    pass


async def chatty(ctx: ToolContext, args: NoArgs) -> ToolOutput:
    await ctx.log("info", "connecting", url="https://u:API_TOKEN=s3cr3tvalue99@example.com")
    await ctx.log("warning", "deploy key DEPLOY_TOKEN=abcdef0123456789abcdef used")
    return ToolOutput({"ok": True})


def chatty_loaders() -> list[Any]:
    def extra() -> list[ToolSpec[Any]]:
        return [ToolSpec(name="chatty", title="Chatty", description="Logs.", args=NoArgs, handler=chatty)]

    return [load_builtin_tools, extra]


async def test_tool_entries_are_redacted_and_filtered_by_level(tmp_path: Path) -> None:
    inbox = Inbox()
    app = CodeToolsServer(make_settings(tmp_path, tmp_path), loaders=chatty_loaders())
    with anyio.fail_after(30):
        async with Client(memory_transport(app), mode="legacy", logging_callback=inbox) as client:
            await client.call_tool("chatty", {})  # the default level: warning and above
            await inbox.arrived.wait()
            assert [m.level for m in inbox.messages] == ["warning"]
            entry = inbox.messages[0]
            assert entry.logger == "mcp-code-tools.chatty"
            assert entry.data["tool"] == "chatty"
            assert "abcdef0123456789abcdef" not in str(entry.data)

            inbox.messages.clear()
            await client.set_logging_level("info")
            await client.call_tool("chatty", {})
            await client.send_ping()
            tool_entries = [m for m in inbox.messages if m.logger == "mcp-code-tools.chatty"]
            assert [m.level for m in tool_entries] == ["info", "warning"]
            assert "s3cr3tvalue99" not in str(tool_entries[0].data)
            assert any(m.data.get("event") == "tool_result" for m in inbox.messages if isinstance(m.data, dict))
