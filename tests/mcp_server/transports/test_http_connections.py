"""The HTTP port's TCP connections: the total cap (issue 11 item 4), and corked replies that still stream."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from anyio.abc import SocketStream
from mcp.client import Client

from mcp_server.api import ToolArgs, ToolContext, ToolOutput, ToolSpec
from mcp_server.server import CodeToolsServer
from mcp_server.transports.http import HttpEndpoint, http_server
from mcp_server.transports.http_sockets import ConnectionLedger, TrackedConnection, refusal_bytes
from tests.conftest import make_settings
from tests.mcp_server.transports.conftest import INITIALIZE, loaders

pytestmark = pytest.mark.anyio

MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


class Gate:
    """The `gated` tool reports progress, then waits until the test opens the gate."""

    def __init__(self) -> None:
        self.open = anyio.Event()


GATE = Gate()


async def gated_handler(ctx: ToolContext, args: ToolArgs) -> ToolOutput:
    await ctx.progress(1, 2, "half way")
    with anyio.fail_after(30):
        await GATE.open.wait()
    return ToolOutput({"done": True})


def gated_loaders() -> list[Any]:
    def extra() -> list[ToolSpec[Any]]:
        return [
            ToolSpec(
                name="gated", title="Gated", description="Progress, then a wait.", args=ToolArgs, handler=gated_handler
            )
        ]

    return [*loaders(), extra]


@asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[HttpEndpoint]:
    values: dict[str, Any] = {**settings, "transport": "http", "port": 0}
    app = CodeToolsServer(make_settings(tmp_path, tmp_path, **values), loaders=gated_loaders())
    with anyio.fail_after(60):
        async with http_server(app) as endpoint:
            yield endpoint


async def read_until_closed(stream: SocketStream) -> bytes:
    reply = b""
    try:
        while True:
            reply += await stream.receive()
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        pass
    return reply


async def test_total_connections_are_capped_and_room_comes_back(tmp_path: Path) -> None:
    """Idle sockets fill the cap: the next connection gets 503 and is closed, whoever it is; once the
    idle ones are ended by their clients, a normal client is served again at once (hypercorn would keep
    such a socket open until http_idle_timeout_s, 60 s here: a gone client must not hold a place)."""
    # The SDK's client below holds up to 4 connections at once (POSTs, its GET stream, the DELETE).
    async with serving(tmp_path, max_http_connections=8, http_idle_timeout_s=60) as endpoint:
        idle = [await anyio.connect_tcp("127.0.0.1", endpoint.port) for _ in range(8)]
        with anyio.fail_after(20):
            over = [await anyio.connect_tcp("127.0.0.1", endpoint.port) for _ in range(5)]
            for stream in over:  # refused at once, before any request is read
                reply = await read_until_closed(stream)
                assert reply.startswith(b"HTTP/1.1 503"), reply[:200]
                assert b"max_http_connections" in reply
                await stream.aclose()
            async with httpx2.AsyncClient(timeout=10) as http, _refused_or_503() as seen:
                seen.response = await http.get(endpoint.base_url + "/healthz")
            for stream in idle:  # their clients end them: each leaves the count as its end is read
                await stream.send_eof()
            await anyio.wait_all_tasks_blocked()  # the server (this event loop) has read those ends
        async with Client(endpoint.url, mode="legacy") as client:
            assert "get_run" in [tool.name for tool in (await client.list_tools()).tools]
        for stream in idle:
            await stream.aclose()


class _Seen:
    response: httpx2.Response | None = None


@asynccontextmanager
async def _refused_or_503() -> AsyncIterator[_Seen]:
    """A client at the cap is answered 503, or sees its connection closed (when it wrote first)."""
    seen = _Seen()
    try:
        yield seen
    except httpx2.TransportError:
        return
    assert seen.response is not None and seen.response.status_code == 503, seen.response


async def test_a_reply_still_streams_progress_while_its_call_runs(tmp_path: Path) -> None:
    """Replies are corked for one packet, but a progress event reaches the client while the call runs."""
    GATE.open = anyio.Event()
    async with serving(tmp_path) as endpoint, httpx2.AsyncClient(timeout=30) as http:
        opened = await http.post(
            endpoint.url,
            content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE}),
            headers=MCP_HEADERS,
        )
        headers = {**MCP_HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
        await http.post(
            endpoint.url, content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=headers
        )
        call = {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {"name": "gated", "arguments": {}, "_meta": {"progressToken": "p1"}},
        }
        events: list[dict[str, Any]] = []
        with anyio.fail_after(30):
            async with http.stream("POST", endpoint.url, content=json.dumps(call), headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                async for line in response.aiter_lines():
                    if not line.startswith("data:") or not line[5:].strip():
                        continue
                    events.append(json.loads(line[5:]))
                    if events[-1].get("method") == "notifications/progress":
                        assert not GATE.open.is_set()  # it came while the call was still waiting
                        GATE.open.set()
        assert events[0]["method"] == "notifications/progress" and events[0]["params"]["progressToken"] == "p1"
        assert events[-1]["id"] == 2 and events[-1]["result"]["structuredContent"]["done"] is True


def test_the_ledger_counts_each_connection_once_and_finds_it_by_peer() -> None:
    ledger = ConnectionLedger(cap=2)
    a, b = socket.socketpair()
    try:
        tracked = TrackedConnection(a, ("127.0.0.1", 5000), ledger)
        assert len(ledger) == 1 and ledger.has_room()
        assert ledger.for_peer(("127.0.0.1", 5000)) is tracked and ledger.for_peer(["127.0.0.1", 5001]) is None
        tracked.cork()
        tracked.uncork()
        tracked.close()
        tracked.close()  # asyncio and a finally may both close it: counted once
        assert len(ledger) == 0 and ledger.for_peer(("127.0.0.1", 5000)) is None
        tracked.uncork()  # after close: nothing to do, no error
    finally:
        b.close()
    c, d = socket.socketpair()
    try:
        ended = TrackedConnection(c, ("127.0.0.1", 5002), ledger)
        d.sendall(b"x")
        d.shutdown(socket.SHUT_WR)
        assert ended.recv(10) == b"x" and len(ledger) == 1
        assert ended.recv(10) == b"" and len(ledger) == 0  # the peer's end: its place is free
        assert ledger.sockets == 1 and ledger.has_room()  # the socket stays open until hypercorn closes it
        ended.close()
        assert len(ledger) == 0 and ledger.sockets == 0
    finally:
        d.close()
    assert refusal_bytes(7).startswith(b"HTTP/1.1 503 ") and b"holds 7" in refusal_bytes(7)
