"""Handshake-era replies: plain JSON when a request's first event is its response, SSE otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp.client import Client
from starlette.types import Message

from mcp_server.api import ToolArgs, ToolContext, ToolOutput, ToolSpec
from mcp_server.server import CodeToolsServer
from mcp_server.transports.http import http_server
from mcp_server.transports.http_replies import PlainReply, response_of
from tests.conftest import make_settings
from tests.mcp_server.transports.conftest import INITIALIZE, error_text, loaders, structured

pytestmark = pytest.mark.anyio

MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-11-25",
}
SSE_HEAD: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [
        (b"cache-control", b"no-cache, no-transform"),
        (b"content-type", b"text/event-stream"),
        (b"mcp-session-id", b"abc123"),
        (b"x-accel-buffering", b"no"),
    ],
}
ANSWER = b'{"jsonrpc":"2.0","id":7,"result":{"content":[],"isError":false}}'
PROGRESS = b'{"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":"p","progress":1.0}}'


def event(data: bytes) -> Message:
    return {"type": "http.response.body", "body": b"event: message\r\ndata: " + data + b"\r\n\r\n", "more_body": True}


END: Message = {"type": "http.response.body", "body": b"", "more_body": False}


async def replay(messages: list[Message]) -> tuple[list[Message], PlainReply]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    reply = PlainReply(send)
    for message in messages:
        await reply(message)
    await reply.close()
    return sent, reply


async def test_a_stream_that_is_only_its_answer_goes_out_as_json() -> None:
    sent, reply = await replay([SSE_HEAD, event(ANSWER), END])
    assert reply.plain
    head, body = sent
    headers = dict(head["headers"])
    assert head["status"] == 200 and headers[b"content-type"] == b"application/json"
    assert headers[b"content-length"] == str(len(ANSWER)).encode() and headers[b"mcp-session-id"] == b"abc123"
    assert b"x-accel-buffering" not in headers
    assert body == {"type": "http.response.body", "body": ANSWER, "more_body": False}


@pytest.mark.parametrize(
    "first",
    [
        event(PROGRESS),  # a notification tied to the request
        event(b'{"jsonrpc":"2.0","id":3,"method":"roots/list"}'),  # a request to the client
        {"type": "http.response.body", "body": b": ping - 2026-12-02\r\n\r\n", "more_body": True},  # keep-alive
        {"type": "http.response.body", "body": b"id: 1\r\ndata: \r\n\r\n", "more_body": True},  # a priming event
        END,  # the stream ended with no event
    ],
)
async def test_anything_else_first_keeps_the_sse_stream_as_the_sdk_wrote_it(first: Message) -> None:
    messages = [SSE_HEAD, first, event(ANSWER), END] if first is not END else [SSE_HEAD, END]
    sent, reply = await replay(messages)
    assert sent == messages and not reply.plain


async def test_replies_that_are_not_event_streams_pass_unchanged() -> None:
    accepted: Message = {
        "type": "http.response.start",
        "status": 202,
        "headers": [(b"content-type", b"application/json")],
    }
    sent, _ = await replay([accepted, END])
    assert sent == [accepted, END]
    refused = {**SSE_HEAD, "status": 404}
    sent, _ = await replay([refused, END])
    assert sent == [refused, END]


async def test_a_head_held_with_nothing_after_it_still_goes_out() -> None:
    sent, reply = await replay([SSE_HEAD])
    assert sent == [SSE_HEAD] and not reply.plain


def test_only_one_event_that_is_a_response_is_recognised() -> None:
    assert response_of(b"event: message\r\ndata: " + ANSWER + b"\r\n\r\n") == ANSWER
    assert response_of(b"data: " + ANSWER + b"\n\n") == ANSWER
    escaped = b'{"jsonrpc":"2.0","id":"a\\"b","error":{"code":-32600,"message":"no"}}'
    assert response_of(b"event: message\r\ndata: " + escaped + b"\r\n\r\n") == escaped
    two = b"event: message\r\ndata: " + PROGRESS + b"\r\n\r\nevent: message\r\ndata: " + ANSWER + b"\r\n\r\n"
    assert response_of(two) is None
    assert response_of(b"event: message\r\ndata: " + ANSWER) is None  # not a whole event
    assert response_of(b"event: message\r\ndata: " + PROGRESS + b"\r\n\r\n") is None


# --- over a real socket ---------------------------------------------------------------------------


async def chatty_handler(ctx: ToolContext, args: ToolArgs) -> ToolOutput:
    await ctx.progress(1, 2, "half way")
    await ctx.log("warning", "chatty says hello")
    return ToolOutput({"done": True})


def chatty_app(tmp_path: Path) -> CodeToolsServer:
    def extra() -> list[ToolSpec[Any]]:
        description = "Progress and a log entry."
        return [ToolSpec(name="chatty", title="Chatty", description=description, args=ToolArgs, handler=chatty_handler)]

    return CodeToolsServer(make_settings(tmp_path, tmp_path, transport="http", port=0), loaders=[*loaders(), extra])


@pytest.mark.parametrize("version_header", [True, False])
async def test_a_call_that_sends_nothing_first_is_answered_with_plain_json(
    tmp_path: Path, version_header: bool
) -> None:
    """With its MCP-Protocol-Version the call is served as an exchange (http_exchange.py); without it
    the SDK serves it and PlainReply turns its one-event stream into JSON."""
    async with http_server(chatty_app(tmp_path)) as endpoint, httpx2.AsyncClient(timeout=30) as http:
        with anyio.fail_after(30):
            opened = await http.post(
                endpoint.url,
                content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE}),
                headers=MCP_HEADERS,
            )
            assert opened.headers["content-type"] == "application/json"
            session = opened.headers["mcp-session-id"]
            assert opened.json()["result"]["protocolVersion"] == "2025-11-25"
            headers = {**MCP_HEADERS, "Mcp-Session-Id": session}
            if not version_header:
                del headers["MCP-Protocol-Version"]
            await http.post(
                endpoint.url,
                content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
                headers=headers,
            )
            call = {"name": "get_run", "arguments": {"run_id": "run_nope"}}
            answered = await http.post(
                endpoint.url,
                content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}),
                headers=headers,
            )
            assert answered.status_code == 200 and answered.headers["content-type"] == "application/json"
            assert answered.headers["mcp-session-id"] == session
            assert int(answered.headers["content-length"]) == len(answered.content)
            reply = answered.json()
            assert reply["id"] == 2 and reply["result"]["isError"] is True


async def test_progress_and_log_entries_still_arrive_before_the_answer(tmp_path: Path) -> None:
    """A call that sends progress (it gave a progressToken) and log entries (the level allows them)
    is still answered with an SSE stream that carries them, through the SDK's own client."""
    seen: list[tuple[float, float | None, str | None]] = []
    logged: list[types.LoggingMessageNotificationParams] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        logged.append(params)

    async with http_server(chatty_app(tmp_path)) as endpoint:
        with anyio.fail_after(30):
            async with Client(endpoint.url, mode="legacy", logging_callback=on_log) as client:
                assert "not found" in error_text(await client.call_tool("get_run", {"run_id": "run_nope"}))
                assert structured(await client.call_tool("chatty", {}, progress_callback=on_progress))["done"]
                assert seen == [(1, 2, "half way")]
                assert any(isinstance(m.data, dict) and "chatty says hello" in json.dumps(m.data) for m in logged)
