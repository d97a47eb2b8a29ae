"""The WebSocket transport on a real socket: admission, framing, bad input, keepalive, run purging."""

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
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from mcp_server.server import CodeToolsServer
from mcp_server.transports.websocket import WebSocketEndpoint, websocket_server
from mcp_server.transports.ws_client import websocket_client
from tests.conftest import make_settings, network_settings
from tests.mcp_server.transports.conftest import (
    INITIALIZE,
    TOKEN,
    ClosedConnections,
    error_text,
    make_app,
    structured,
)

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def serving(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[CodeToolsServer, WebSocketEndpoint]]:
    app = make_app(tmp_path, "websocket", **settings)
    with anyio.fail_after(60):
        async with websocket_server(app) as endpoint:
            yield app, endpoint


async def answer(ws: ClientConnection, request_id: int | str | None) -> dict[str, Any]:
    """The next message that answers `request_id` (notifications in between are skipped)."""
    while True:
        message = json.loads(await ws.recv())
        if "method" not in message and message.get("id") == request_id:
            return dict(message)


async def rpc(ws: ClientConnection, request_id: int, method: str, params: dict[str, Any] | None = None) -> Any:
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}}))
    return await answer(ws, request_id)


async def handshake(ws: ClientConnection) -> None:
    reply = await rpc(ws, 1, "initialize", INITIALIZE)
    assert reply["result"]["serverInfo"]["name"] == "mcp-code-tools"
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))


def refused_status(exc: pytest.ExceptionInfo[InvalidStatus]) -> tuple[int, dict[str, Any]]:
    response: Response = exc.value.response
    return response.status_code, json.loads(bytes(response.body))


# --- protocol eras and the subprotocol --------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_both_protocol_eras_through_the_client_adapter(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path) as (_, endpoint), Client(websocket_client(endpoint.url), mode=mode) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        assert {"get_run", "big"} <= set(names)
        data = structured(await client.call_tool("big", {"n": 300}))
        assert data["truncated"] is True and data["run_id"]
        assert "not found" in error_text(await client.call_tool("get_run", {"run_id": "run_nope"}))


async def test_subprotocol_mcp_is_negotiated_and_clients_offering_none_are_served(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, endpoint):
        async with connect(endpoint.url, subprotocols=["mcp"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "mcp"
            await handshake(ws)
        async with connect(endpoint.url) as ws:
            assert ws.subprotocol is None
            await handshake(ws)
            assert "tools" in (await rpc(ws, 2, "tools/list"))["result"]


# --- health on the same port --------------------------------------------------------------------


async def test_healthz_and_readyz_answer_json_on_the_websocket_port(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, endpoint), httpx2.AsyncClient() as http:
        base = f"http://127.0.0.1:{endpoint.port}"
        live = await http.get(base + "/healthz")
        assert live.status_code == 200 and live.json() == {"status": "ok"}
        ready = await http.get(base + "/readyz")
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "ready" and body["ruff"]["found"] is True
        assert body["executor"]["running"] == 0 and body["executor"]["waiting"] == 0
        assert (await http.get(base + "/elsewhere")).status_code == 404


async def test_readyz_without_the_token_shows_status_only_and_health_follows_the_host_rule(tmp_path: Path) -> None:
    """Issue 11 item 5, on the WebSocket port."""
    async with serving(tmp_path, token=TOKEN) as (_, endpoint), httpx2.AsyncClient() as http:
        base = f"http://127.0.0.1:{endpoint.port}"
        bare = await http.get(base + "/readyz")
        assert bare.status_code == 200 and bare.json() == {"status": "ready"}
        full = await http.get(base + "/readyz", headers={"Authorization": f"Bearer {TOKEN}"})
        assert "executor" in full.json()
        for path in ("/healthz", "/readyz"):
            rebound = await http.get(base + path, headers={"Host": "attacker.example"})
            assert rebound.status_code == 421, path


# --- admission: token, Origin, Host, connections per client -----------------------------------


async def test_a_token_is_required_before_the_upgrade(tmp_path: Path) -> None:
    async with serving(tmp_path, token=TOKEN) as (_, endpoint):
        with pytest.raises(InvalidStatus) as missing:
            async with connect(endpoint.url):
                pass
        status, body = refused_status(missing)
        assert status == 401 and "missing bearer token" in body["error"]
        assert missing.value.response.headers["WWW-Authenticate"].startswith("Bearer")
        with pytest.raises(InvalidStatus) as wrong:
            async with connect(endpoint.url, additional_headers={"Authorization": "Bearer not-it"}):
                pass
        status, body = refused_status(wrong)
        assert status == 401 and "wrong bearer token" in body["error"] and TOKEN not in body["error"]
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with Client(websocket_client(endpoint.url, headers=headers), mode="auto") as client:
            assert "not found" in error_text(await client.call_tool("get_run", {"run_id": "run_nope"}))


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # a non-browser client
        ("http://localhost:3000", True),  # a page served from this machine
        ("http://127.0.0.1:8080", True),
        ("https://ide.example.com", True),  # in the allowed_origins setting
        ("https://evil.example.com", False),
        ("http://localhost.evil.example.com:80", False),
        ("null", False),
    ],
)
async def test_origin_allow_list(tmp_path: Path, origin: str | None, allowed: bool) -> None:
    async with serving(tmp_path, allowed_origins=["https://ide.example.com"]) as (_, endpoint):
        if allowed:
            async with connect(endpoint.url, origin=origin) as ws:  # type: ignore[arg-type]
                await handshake(ws)
        else:
            with pytest.raises(InvalidStatus) as refused:
                async with connect(endpoint.url, origin=origin):  # type: ignore[arg-type]
                    pass
            status, body = refused_status(refused)
            assert status == 403 and "allowed_origins" in body["error"]


async def test_a_rebound_host_name_is_refused_on_a_loopback_bind(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, endpoint):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(f"ws://attacker.example:{endpoint.port}/mcp", host="127.0.0.1"):
                pass
        assert refused_status(refused)[0] == 421
        async with connect(f"ws://localhost:{endpoint.port}/mcp", host="127.0.0.1") as ws:
            await handshake(ws)


async def test_connections_per_client_are_capped(tmp_path: Path) -> None:
    async with serving(tmp_path, max_connections_per_client=2) as (app, endpoint):
        closed = ClosedConnections(app)
        async with connect(endpoint.url) as first, connect(endpoint.url) as second:
            await handshake(first)
            await handshake(second)
            with pytest.raises(InvalidStatus) as refused:
                async with connect(endpoint.url):
                    pass
            status, body = refused_status(refused)
            assert status == 429 and "max_connections_per_client" in body["error"]
        await closed.wait_for(2)  # both server sides have ended
        async with connect(endpoint.url) as again:
            await handshake(again)


async def test_a_slow_upgrade_request_is_closed_after_the_idle_timeout(tmp_path: Path) -> None:
    """Issue 11 item 4 on the WebSocket port: a handshake that never completes is dropped."""
    async with serving(tmp_path, http_idle_timeout_s=0.5) as (_, endpoint):
        stream = await anyio.connect_tcp("127.0.0.1", endpoint.port)
        await stream.send(b"GET /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nX-Slow: a")
        with anyio.fail_after(8), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            while True:  # the default handshake timeout (10 s) is longer than this wait
                await stream.receive()
        await stream.aclose()


# --- bad input: each gets an error or a clean close, and nothing else is disturbed -------------


async def test_malformed_and_non_object_frames_get_errors_and_the_connection_goes_on(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, endpoint), connect(endpoint.url, subprotocols=["mcp"]) as ws:  # type: ignore[list-item]
        await handshake(ws)
        cases = [
            ("{not json", -32700, None),
            ("[1, 2, 3]", -32600, None),
            ("42", -32600, None),
            ('"just a string"', -32600, None),
            ('{"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": [1]}', -32600, 7),
            ('{"jsonrpc": "1.0", "id": 8, "method": "ping"}', -32600, 8),
            ('{"hello": "world"}', -32600, None),
            ("[" * 100_000, -32700, None),
            ('{"jsonrpc": "2.0", "id": "\\udc80", "method": "ping"}', -32600, None),  # a lone surrogate
        ]
        for frame, code, request_id in cases:
            await ws.send(frame)
            reply = json.loads(await ws.recv())
            assert reply["id"] == request_id and reply["error"]["code"] == code, frame[:60]
        unknown = await rpc(ws, 9, "no/such/method")
        assert unknown["error"]["code"] == -32601
        listed = await rpc(ws, 10, "tools/list")
        assert "get_run" in {t["name"] for t in listed["result"]["tools"]}


async def test_a_binary_frame_gets_an_error_and_the_connection_goes_on(tmp_path: Path) -> None:
    async with serving(tmp_path) as (_, endpoint), connect(endpoint.url) as ws:
        await handshake(ws)
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 5, "method": "ping"}).encode())
        reply = json.loads(await ws.recv())
        assert reply["error"]["code"] == -32600 and "binary" in reply["error"]["message"]
        assert (await rpc(ws, 6, "ping"))["result"] == {}


async def test_an_oversized_frame_closes_with_1009_and_other_connections_are_unaffected(tmp_path: Path) -> None:
    async with serving(tmp_path, max_message_bytes=4096) as (_, endpoint), connect(endpoint.url) as bystander:
        await handshake(bystander)
        async with connect(endpoint.url) as ws:
            await handshake(ws)
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"x": "y" * 5000}}))
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert (await rpc(bystander, 3, "ping"))["result"] == {}
        just_under = await rpc(bystander, 4, "ping", {"x": "y" * 3900})
        assert just_under["result"] == {}


async def test_the_server_pings_and_drops_a_peer_that_never_answers(tmp_path: Path) -> None:
    """Keepalive: a peer that stops answering pings is closed (1011) after the ping timeout."""
    async with serving(tmp_path, ws_ping_interval_s=0.2) as (_, endpoint):
        protocol = ClientProtocol(parse_uri(endpoint.url))
        protocol.send_request(protocol.connect())
        saw_ping = False
        close_code: int | None = None
        async with await anyio.connect_tcp("127.0.0.1", endpoint.port) as stream:
            for data in protocol.data_to_send():
                await stream.send(data)
            with anyio.fail_after(20):
                while close_code is None:
                    try:
                        data = await stream.receive()
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        break
                    protocol.receive_data(data)
                    for event in protocol.events_received():
                        if isinstance(event, Frame) and event.opcode is Opcode.PING:
                            saw_ping = True  # and we never send the pong the protocol queued
                        elif isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                            close_code = Close.parse(event.data).code
        assert saw_ping
        assert close_code == 1011


# --- runs belong to the connection, and die with it -------------------------------------------


async def test_closing_a_websocket_purges_its_runs(tmp_path: Path) -> None:
    async with serving(tmp_path) as (app, endpoint):
        closed = ClosedConnections(app)
        async with Client(websocket_client(endpoint.url)) as other:
            async with Client(websocket_client(endpoint.url)) as owner:
                run_id = structured(await owner.call_tool("big", {"n": 400}))["run_id"]
                page = structured(await owner.call_tool("get_run", {"run_id": run_id, "section": "items", "limit": 5}))
                assert [item["i"] for item in page["items"]] == [0, 1, 2, 3, 4]
                foreign = error_text(await other.call_tool("get_run", {"run_id": run_id}))
                assert "not found" in foreign
                assert len(app.app.runs) == 1
            await closed.wait_for(1)
            assert len(closed.owners) == 1 and str(closed.owners[0]).startswith("ws-")
            assert len(app.app.runs) == 0
            assert "not found" in error_text(await other.call_tool("get_run", {"run_id": run_id}))
        async with Client(websocket_client(endpoint.url)) as reconnected:
            assert "not found" in error_text(await reconnected.call_tool("get_run", {"run_id": run_id}))


async def test_one_clients_huge_result_never_evicts_another_clients_running_run(tmp_path: Path) -> None:
    """Issue 11 item 1: B's background run_tests survives A's lint result larger than the store."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_wait.py").write_text(
        "import pathlib, time\n\n"
        "def test_waits_for_go():\n"
        "    deadline = time.monotonic() + 60\n"
        "    while not pathlib.Path('go').exists() and time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
    )
    settings = network_settings("websocket", {"max_run_bytes": 64 * 1024, "output_budget": 2000})
    app = CodeToolsServer(make_settings(root, tmp_path, **settings))
    with anyio.fail_after(120):
        async with (
            websocket_server(app) as endpoint,
            Client(websocket_client(endpoint.url)) as a,
            Client(websocket_client(endpoint.url)) as b,
        ):
            started = structured(await b.call_tool("run_tests", {"wait": False}))
            assert started["status"] in ("running", "queued")
            lint = await a.call_tool("lint", {"source": "a;\n" * 2000, "select": ["ALL"]})
            if lint.is_error:  # too big to keep: A hears so, and nobody else pays for it
                assert "too large to keep" in error_text(lint)
            progress = structured(await b.call_tool("get_run", {"run_id": started["run_id"]}))
            assert progress["status"] in ("running", "queued")
            (root / "go").write_text("")
            done = structured(await b.call_tool("cancel_run", {"run_id": started["run_id"]}))
            assert done["run_id"] == started["run_id"]
