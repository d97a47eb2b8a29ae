"""Handshake-era `tools/call` served as one exchange: the reply kinds, cancellation, session end,
keep-alive comments (transports/http_exchange.py), over real sockets and through the SDK client."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.client import Client
from starlette.types import Message

from mcp_server.api import AppState, ToolArgs, ToolContext, ToolOutput, ToolSpec
from mcp_server.server import CodeToolsServer
from mcp_server.transports import http_exchange
from mcp_server.transports.http import http_server
from mcp_server.transports.http_exchange import CallReply, Envelope, Exchanges
from tests.conftest import make_settings
from tests.mcp_server.transports.conftest import INITIALIZE, loaders

pytestmark = pytest.mark.anyio

MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}


class Waiting:
    """The `waits` tool: says it started, then waits for `release` (or is cancelled, which it records)."""

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.release = anyio.Event()
        self.cancelled = anyio.Event()


WAITING = Waiting()


async def waits_handler(ctx: ToolContext, args: ToolArgs) -> ToolOutput:
    WAITING.started.set()
    try:
        with anyio.fail_after(30):
            await WAITING.release.wait()
    except anyio.get_cancelled_exc_class():
        WAITING.cancelled.set()
        raise
    return ToolOutput({"released": True})


def app_for(tmp_path: Path) -> CodeToolsServer:
    def extra() -> list[ToolSpec[Any]]:
        return [ToolSpec(name="waits", title="Waits", description="Waits.", args=ToolArgs, handler=waits_handler)]

    return CodeToolsServer(make_settings(tmp_path, tmp_path, transport="http", port=0), loaders=[*loaders(), extra])


@asynccontextmanager
async def session(tmp_path: Path) -> AsyncIterator[tuple[str, httpx2.AsyncClient, dict[str, str]]]:
    global WAITING
    WAITING = Waiting()
    async with http_server(app_for(tmp_path)) as endpoint, httpx2.AsyncClient(timeout=30) as http:
        opened = await http.post(
            endpoint.url,
            content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE}),
            headers=MCP_HEADERS,
        )
        headers = {**MCP_HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
        await http.post(
            endpoint.url, content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=headers
        )
        yield endpoint.url, http, headers


def call(request_id: int, name: str, arguments: dict[str, Any] | None = None) -> str:
    params = {"name": name, "arguments": arguments or {}}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})


def answer_of(response: httpx2.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        events = [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
        return dict(events[-1])
    return dict(response.json())


async def test_a_cancelled_call_stops_and_is_answered_request_cancelled(tmp_path: Path) -> None:
    async with session(tmp_path) as (url, http, headers):
        replies: list[httpx2.Response] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def waiting_call() -> None:
                    replies.append(await http.post(url, content=call(7, "waits"), headers=headers))

                tg.start_soon(waiting_call)
                await WAITING.started.wait()
                cancel = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 7}}
                accepted = await http.post(url, content=json.dumps(cancel), headers=headers)
                assert accepted.status_code == 202  # handed on to the SDK as before
            await WAITING.cancelled.wait()
        reply = answer_of(replies[0])
        assert reply["id"] == 7 and reply["error"]["code"] == -32800
        # the session goes on
        after = await http.post(url, content=call(8, "get_run", {"run_id": "run_nope"}), headers=headers)
        assert answer_of(after)["result"]["isError"] is True


async def test_ending_the_session_cancels_its_calls(tmp_path: Path) -> None:
    async with session(tmp_path) as (url, http, headers):
        replies: list[httpx2.Response] = []
        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:

                async def waiting_call() -> None:
                    replies.append(await http.post(url, content=call(3, "waits"), headers=headers))

                tg.start_soon(waiting_call)
                await WAITING.started.wait()
                ended = await http.delete(url, headers=headers)
                assert ended.status_code == 200
            await WAITING.cancelled.wait()
        reply = answer_of(replies[0])
        assert reply["id"] == 3 and reply["error"]["code"] == -32000


async def test_a_client_that_goes_away_does_not_cancel_its_call(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """As on the SDK's path in this era: the call runs on, its answer has nowhere to go, no error."""
    async with session(tmp_path) as (url, http, headers):
        with anyio.fail_after(30):
            async with httpx2.AsyncClient(timeout=30) as other, anyio.create_task_group() as tg:

                async def waiting_call() -> None:
                    await other.post(url, content=call(9, "waits"), headers=headers)

                tg.start_soon(waiting_call)
                await WAITING.started.wait()
                tg.cancel_scope.cancel()  # the client gives up and closes its connection
            WAITING.release.set()
            after = await http.post(url, content=call(10, "get_run", {"run_id": "run_nope"}), headers=headers)
            assert answer_of(after)["result"]["isError"] is True
        assert not WAITING.cancelled.is_set()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


async def test_a_silent_call_gets_keep_alive_comments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http_exchange, "KEEPALIVE_S", 0.05)
    async with session(tmp_path) as (url, http, headers):
        lines: list[str] = []
        with anyio.fail_after(30):
            async with http.stream("POST", url, content=call(4, "waits"), headers=headers) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                async for line in response.aiter_lines():
                    lines.append(line)
                    if line.startswith(": ping"):
                        WAITING.release.set()  # a comment came while the call was still silent
        assert any(line.startswith(": ping") for line in lines)
        answer = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
        assert answer["id"] == 4 and answer["result"]["structuredContent"]["released"] is True


async def test_bad_arguments_are_answered_as_on_the_sdk_path(tmp_path: Path) -> None:
    async with session(tmp_path) as (url, http, headers):
        with anyio.fail_after(30):
            bad = await http.post(url, content=call(5, "get_run", {"run_id": 42}), headers=headers)
            unknown = await http.post(url, content=call(6, "no_such_tool"), headers=headers)
        assert bad.headers["content-type"] == "application/json"
        bad_reply, unknown_reply = answer_of(bad), answer_of(unknown)
        assert bad_reply["id"] == 5 and (bad_reply.get("error") or bad_reply["result"]["isError"])
        assert unknown_reply["id"] == 6 and (unknown_reply.get("error") or unknown_reply["result"]["isError"])


class Backend:
    def __init__(self) -> None:
        self.on = False

    async def available(self, app: AppState) -> str | None:
        return None if self.on else "backend missing"


async def test_tools_list_changed_still_reaches_a_session_whose_calls_are_exchanged(tmp_path: Path) -> None:
    """The session a client listed tools on keeps getting `tools/list_changed` after calls served
    as exchanges (their per-call connection has no channel for it)."""
    backend = Backend()
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ToolListChangedNotification):
            changed.set()

    def extra() -> list[ToolSpec[Any]]:
        description = "Appears with its backend."
        return [
            ToolSpec(
                name="late",
                title="Late",
                description=description,
                args=ToolArgs,
                handler=waits_handler,
                available=backend.available,
            )
        ]

    settings = make_settings(tmp_path, tmp_path, transport="http", port=0, tool_poll_interval_s=0.05)
    app = CodeToolsServer(settings, loaders=[*loaders(), extra])
    with anyio.fail_after(30):
        async with (
            http_server(app) as endpoint,
            Client(endpoint.url, mode="legacy", message_handler=on_message) as client,
        ):
            assert "late" not in [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]
            assert (await client.call_tool("get_run", {"run_id": "run_nope"})).is_error
            backend.on = True
            await changed.wait()
            assert "late" in [t.name for t in (await client.list_tools(cache_mode="bypass")).tools]


# --- the reply on its own ----------------------------------------------------------------------------


async def replies(*steps: tuple[str, bytes]) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    reply = CallReply(send, "s1")
    for kind, data in steps:
        await getattr(reply, kind)(*([data] if data else []))
    return sent


async def test_the_answer_alone_is_json_and_anything_first_makes_a_stream() -> None:
    plain = await replies(("answer", b'{"id":1}'))
    assert [m["type"] for m in plain] == ["http.response.start", "http.response.body"]
    assert dict(plain[0]["headers"])[b"content-type"] == b"application/json"
    assert dict(plain[0]["headers"])[b"mcp-session-id"] == b"s1" and plain[1]["body"] == b'{"id":1}'

    streamed = await replies(
        ("event", b'{"method":"m"}'), ("keep_alive", b""), ("answer", b'{"id":1}'), ("event", b"x")
    )
    assert dict(streamed[0]["headers"])[b"content-type"] == b"text/event-stream"
    bodies = [m["body"] for m in streamed[1:]]
    assert bodies == [
        b'event: message\r\ndata: {"method":"m"}\r\n\r\n',
        b": ping\r\n\r\n",
        b'event: message\r\ndata: {"id":1}\r\n\r\n',
        b"",
    ]  # nothing after the answer
    assert streamed[-1]["more_body"] is False


def test_only_a_tools_call_request_is_exchanged_and_the_envelope_is_read() -> None:
    assert Exchanges.request_of(call(1, "lint").encode()) is not None
    assert Exchanges.request_of(b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}') is None
    assert Exchanges.request_of(b'{"jsonrpc":"2.0","method":"tools/call"}') is None  # a notification
    assert Exchanges.request_of(b"[1, 2]") is None and Exchanges.request_of(b"{") is None
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE}).encode()
    envelope = Envelope.of_initialize(body)
    assert envelope is not None and envelope.protocol_version == "2025-11-25"
    assert envelope.client_info == INITIALIZE["clientInfo"]
    assert Envelope.of_initialize(b'{"method":"ping"}') is None and Envelope.of_initialize(b"x") is None
