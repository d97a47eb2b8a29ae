"""The Streamable HTTP transport on a real socket: eras, health, admission, limits, session end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.server import CodeToolsServer
from mcp_server.transports.http import HttpEndpoint, http_server
from tests.mcp_server.transports.conftest import (
    INITIALIZE,
    TOKEN,
    ClosedConnections,
    error_text,
    make_app,
    structured,
)

pytestmark = pytest.mark.anyio

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@asynccontextmanager
async def serving(
    tmp_path: Path, app: CodeToolsServer | None = None, **settings: Any
) -> AsyncIterator[tuple[CodeToolsServer, HttpEndpoint, httpx2.AsyncClient]]:
    app = app or make_app(tmp_path, "http", **settings)
    with anyio.fail_after(60):
        async with http_server(app) as endpoint, httpx2.AsyncClient(timeout=30) as http:
            yield app, endpoint, http


def initialize_body(request_id: int = 1) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": INITIALIZE})


def payload(response: httpx2.Response) -> dict[str, Any]:
    """The JSON-RPC message of a response, whether sent as JSON or as one SSE event."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        for line in response.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if "method" not in message:  # the answer, not a notification sent before it
                    return dict(message)
        raise AssertionError(f"no answer event in {response.text!r}")
    return dict(response.json())


def client_for(url: str, http: httpx2.AsyncClient, mode: str = "legacy") -> Client:
    return Client(streamable_http_client(url, http_client=http), mode=mode)


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_both_protocol_eras_through_the_sdk_client(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path) as (_, endpoint, _), Client(endpoint.url, mode=mode) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert {"get_run", "big"} <= set(names)
        data = structured(await client.call_tool("big", {"n": 300}))
        assert data["truncated"] is True and data["run_id"]
        assert "not found" in error_text(await client.call_tool("get_run", {"run_id": "run_nope"}))


async def test_healthz_and_readyz(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, endpoint, http):
        live = await http.get(endpoint.base_url + "/healthz")
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        assert live.headers["date"].endswith(" GMT")
        ready = await http.get(endpoint.base_url + "/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert ready.json()["executor"] == {"running": 0, "capacity": 2, "waiting": 0, "max_queued": 64}


class SickService:
    async def aclose(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"ready": False, "detail": "warming up"}


async def test_readyz_is_503_with_reasons_when_a_service_is_not_ready(tmp_path: Path) -> None:
    app = make_app(tmp_path, "http", max_concurrent_runs=2)

    async def factory() -> SickService:
        return SickService()

    await app.app.services.get("sick", factory)
    async with serving(tmp_path, app) as (_, endpoint, http):
        ready = await http.get(endpoint.base_url + "/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["reasons"] == ["service sick not ready"]
        assert body["services"]["sick"] == {"ready": False, "detail": "warming up"}
        assert (await http.get(endpoint.base_url + "/healthz")).status_code == 200


async def test_a_token_is_required_on_every_request(tmp_path: Path) -> None:
    async with serving(tmp_path, token=TOKEN) as (_, endpoint, http):
        missing = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
        assert missing.status_code == 401 and "missing bearer token" in missing.json()["error"]
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await http.post(
            endpoint.url, content=initialize_body(), headers={**MCP_HEADERS, "Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401 and TOKEN not in wrong.text
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as authed,
            client_for(endpoint.url, authed, mode="auto") as client,
        ):
            assert "not found" in error_text(await client.call_tool("get_run", {"run_id": "run_nope"}))
        async with (
            httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30) as authed,
            client_for(endpoint.url, authed, mode="legacy") as client,
        ):
            assert (await client.list_tools()).tools


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 200),
        ("http://localhost:5173", 200),
        ("https://ide.example.com", 200),
        ("https://evil.example.com", 403),
    ],
)
async def test_origin_allow_list(tmp_path: Path, origin: str | None, status: int) -> None:
    async with serving(tmp_path, allowed_origins=["https://ide.example.com"]) as (_, endpoint, http):
        headers = dict(MCP_HEADERS)
        if origin is not None:
            headers["Origin"] = origin
        response = await http.post(endpoint.url, content=initialize_body(), headers=headers)
        assert response.status_code == status, response.text
        if status == 200:
            assert payload(response)["result"]["serverInfo"]["name"] == "mcp-code-tools"


async def test_a_rebound_host_name_is_refused(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, endpoint, http):
        response = await http.post(
            endpoint.url, content=initialize_body(), headers={**MCP_HEADERS, "Host": "attacker.example"}
        )
        assert response.status_code == 421


async def test_an_oversized_body_is_413_and_the_server_goes_on(tmp_path: Path) -> None:
    async with serving(tmp_path, max_message_bytes=4096) as (_, endpoint, http):
        big = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"x": "y" * 5000}})
        response = await http.post(endpoint.url, content=big, headers=MCP_HEADERS)
        assert response.status_code == 413
        ok = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
        assert ok.status_code == 200


async def test_malformed_json_is_a_parse_error_and_the_session_goes_on(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, endpoint, http):
        opened = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
        session = {**MCP_HEADERS, "Mcp-Session-Id": opened.headers["mcp-session-id"]}
        bad = await http.post(endpoint.url, content="{not json", headers=session)
        assert bad.status_code == 400 and payload(bad)["error"]["code"] == -32700
        notified = await http.post(
            endpoint.url, content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=session
        )
        assert notified.status_code == 202
        ping = await http.post(
            endpoint.url, content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping"}), headers=session
        )
        assert ping.status_code == 200 and payload(ping)["result"] == {}


async def test_sessions_per_client_are_capped(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections_per_client=1) as (app, endpoint, http):
        closed = ClosedConnections(app)
        async with client_for(endpoint.url, http) as client:
            assert (await client.list_tools()).tools
            refused = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
            assert refused.status_code == 429 and "max_connections_per_client" in refused.json()["error"]
        await closed.wait_for(1)  # the client's DELETE ended its session
        again = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
        assert again.status_code == 200


async def test_ending_an_http_session_purges_its_runs(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, endpoint, http):
        closed = ClosedConnections(app)
        async with client_for(endpoint.url, http) as other:
            async with client_for(endpoint.url, http) as owner:
                run_id = structured(await owner.call_tool("big", {"n": 400}))["run_id"]
                assert "not found" in error_text(await other.call_tool("get_run", {"run_id": run_id}))
                assert len(app.app.runs) == 1
            await closed.wait_for(1)
            assert str(closed.owners[0]).startswith("http-session:")
            assert len(app.app.runs) == 0
            assert "not found" in error_text(await other.call_tool("get_run", {"run_id": run_id}))


async def test_shutdown_ends_open_sessions(tmp_path: Path) -> None:
    app = make_app(tmp_path, "http")
    closed = ClosedConnections(app)
    async with serving(tmp_path, app) as (_, endpoint, http):
        opened = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
        assert opened.status_code == 200
    assert [str(owner) for owner in closed.owners] == [f"http-session:{opened.headers['mcp-session-id']}"]


async def test_an_idle_http_session_ends_and_its_runs_go(tmp_path: Path) -> None:
    """Idle: no request in progress and no run still running, for http_session_idle_s."""
    async with serving(tmp_path, http_session_idle_s=0.5) as (app, endpoint, http):
        closed = ClosedConnections(app)
        opened = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
        session_id = opened.headers["mcp-session-id"]
        session = {**MCP_HEADERS, "Mcp-Session-Id": session_id}
        await http.post(
            endpoint.url, content=json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}), headers=session
        )
        call = {"name": "big", "arguments": {"n": 300}}
        made = await http.post(
            endpoint.url,
            content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}),
            headers=session,
        )
        assert payload(made)["result"]["structuredContent"]["run_id"]
        assert len(app.app.runs) == 1
        await closed.wait_for(1)  # no request for http_session_idle_s
        assert closed.owners == [f"http-session:{session_id}"]
        assert len(app.app.runs) == 0
        gone = await http.post(
            endpoint.url, content=json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"}), headers=session
        )
        assert gone.status_code == 404


# --- issue 11: slow clients, session lockout, health behind the door ---------------------------


async def test_a_slowloris_connection_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    """Issue 11 item 4: a connection that never finishes its request head is closed; others are served."""
    async with serving(tmp_path, http_idle_timeout_s=0.5) as (_, endpoint, http):
        slow = [await anyio.connect_tcp("127.0.0.1", endpoint.port) for _ in range(20)]
        for stream in slow:
            await stream.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")  # and never the rest
        assert (await http.get(endpoint.base_url + "/healthz")).status_code == 200
        with anyio.fail_after(20):  # far below the 30 s the old server kept them
            for stream in slow:
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    while True:
                        await stream.receive()
        for stream in slow:
            await stream.aclose()


async def test_a_slow_request_body_gets_408(tmp_path: Path) -> None:
    """Issue 11 item 4: the request head arrived, the body never does: 408, the connection closes."""
    async with serving(tmp_path, http_body_timeout_s=0.5) as (_, endpoint, _):
        stream = await anyio.connect_tcp("127.0.0.1", endpoint.port)
        head = (
            "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            "Accept: application/json, text/event-stream\r\nContent-Length: 1000\r\n\r\n"
        )
        await stream.send(head.encode() + b'{"jsonrpc": ')
        reply = b""
        with anyio.fail_after(20):
            try:
                while True:
                    reply += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        await stream.aclose()
        assert reply.startswith(b"HTTP/1.1 408"), reply[:200]
        assert b"http_body_timeout_s" in reply


async def test_requests_in_progress_per_client_are_capped(tmp_path: Path) -> None:
    async with serving(tmp_path, max_requests_per_client=2, http_body_timeout_s=60) as (_, endpoint, http):
        held = []
        for _ in range(2):  # two requests in progress: their bodies never finish
            stream = await anyio.connect_tcp("127.0.0.1", endpoint.port)
            await stream.send(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\n\r\n{")
            held.append(stream)
        with anyio.fail_after(20):
            while True:  # the two reach the app in their own time; the third is refused once they have
                third = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
                if third.status_code == 429:
                    break
                assert third.status_code == 200
                await http.delete(endpoint.url, headers={"Mcp-Session-Id": third.headers["mcp-session-id"]})
                await anyio.wait_all_tasks_blocked()
        assert "max_requests_per_client" in third.json()["error"]
        for stream in held:
            await stream.aclose()


async def test_a_client_at_its_session_cap_loses_its_least_recently_used_idle_session(tmp_path: Path) -> None:
    """Issue 11 item 3: never-DELETEd sessions no longer lock the client out; the oldest idle one ends
    (its runs purged) to make room."""
    async with serving(tmp_path, max_connections_per_client=3) as (app, endpoint, http):
        closed = ClosedConnections(app)
        sessions = []
        for _ in range(3):
            opened = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
            assert opened.status_code == 200
            sessions.append(opened.headers["mcp-session-id"])
        first = {**MCP_HEADERS, "Mcp-Session-Id": sessions[0]}
        second = {**MCP_HEADERS, "Mcp-Session-Id": sessions[1]}
        notified = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"})
        await http.post(endpoint.url, content=notified, headers=first)
        call = {"name": "big", "arguments": {"n": 300}}
        made = await http.post(
            endpoint.url,
            content=json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}),
            headers=second,
        )
        run_id = payload(made)["result"]["structuredContent"]["run_id"]
        # The first session was used last before the second: the third is the least recently used.
        await http.post(endpoint.url, content=notified, headers=first)
        for _ in range(5):  # more than the cap: each new one ends the oldest idle one, never a 429
            opened = await http.post(endpoint.url, content=initialize_body(), headers=MCP_HEADERS)
            assert opened.status_code == 200, opened.text
            sessions.append(opened.headers["mcp-session-id"])
        assert [str(owner) for owner in closed.owners[:1]] == [f"http-session:{sessions[2]}"]
        assert len(closed.owners) == 5
        assert f"http-session:{sessions[1]}" in [str(owner) for owner in closed.owners]
        assert run_id not in {run.run_id for run in app.app.runs.list(f"http-session:{sessions[1]}")}
        gone = await http.post(
            endpoint.url, content=json.dumps({"jsonrpc": "2.0", "id": 3, "method": "ping"}), headers=second
        )
        assert gone.status_code == 404


async def test_readyz_without_the_token_shows_status_only(tmp_path: Path) -> None:
    """Issue 11 item 5: roots, paths, PIDs and counters are for whoever holds the token."""
    async with serving(tmp_path, token=TOKEN) as (_, endpoint, http):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            ready = await http.get(endpoint.base_url + "/readyz", headers=headers)
            assert ready.status_code == 200 and ready.json() == {"status": "ready"}
        full = await http.get(endpoint.base_url + "/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
        assert full.json()["status"] == "ready" and "executor" in full.json() and "ruff" in full.json()
        assert (await http.get(endpoint.base_url + "/healthz")).json() == {"status": "ok"}


async def test_health_endpoints_follow_the_host_rule(tmp_path: Path) -> None:
    """Issue 11 item 5: a rebound name gets 421 on /healthz and /readyz too."""
    async with serving(tmp_path) as (_, endpoint, http):
        for path in ("/healthz", "/readyz"):
            rebound = await http.get(endpoint.base_url + path, headers={"Host": "attacker.example"})
            assert rebound.status_code == 421, path
            local = await http.get(endpoint.base_url + path, headers={"Host": f"localhost:{endpoint.port}"})
            assert local.status_code == 200, path


async def test_a_websocket_upgrade_on_the_http_port_is_refused_not_a_500(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, endpoint, _):
        stream = await anyio.connect_tcp("127.0.0.1", endpoint.port)
        await stream.send(
            b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        with anyio.fail_after(20):
            reply = await stream.receive()
        await stream.aclose()
        assert reply.startswith(b"HTTP/1.1 403"), reply[:100]
