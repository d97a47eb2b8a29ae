"""WebSocket: `ws://HOST:PORT/mcp`, one JSON-RPC message per text frame, on the `websockets` library.

The SDK has no WebSocket transport since 2.0; this one speaks the wire of the 1.x SDK's client
(subprotocol `mcp`, text frames) and of our adapter for the 2.x `Client` (`ws_client.py`).

Each connection is admitted before the upgrade by `NetPolicy` (token 401, Origin 403, Host 421,
connections per client 429), then bridged to the SDK's read/write streams and served by
`CodeToolsServer.serve_streams`, which purges the connection's runs (and cancels their work) when it
closes. Frames: `max_size` is `max_message_bytes` (bigger: close 1009, by the library); a binary
frame, invalid JSON or a non-message gets a JSON-RPC error frame and the connection goes on.
Keepalive pings every `ws_ping_interval_s`. `GET /healthz` and `GET /readyz` answer on the same port.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.shared.message import SessionMessage
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from mcp_server.connections import ConnectionInfo, new_connection
from mcp_server.server import CodeToolsServer
from mcp_server.transports import network
from mcp_server.transports.framing import BINARY_FRAME_ERROR, decode_frame, encode_message
from mcp_server.transports.network import Door, HealthAnswer

logger = logging.getLogger("mcp_server.websocket")

SUBPROTOCOL = Subprotocol("mcp")
CLOSE_TIMEOUT_S = 10.0
WebSocketEndpoint = network.NetworkEndpoint


def _json_response(connection: ServerConnection, answer: HealthAnswer) -> Response:
    response = connection.respond(answer.status, json.dumps(answer.body) + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    for name, value in answer.headers:
        response.headers[name] = value
    return response


def _select_subprotocol(connection: ServerConnection, offered: Any) -> Subprotocol | None:
    """`mcp` when offered; a client that offers none (or only others) is still served."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _peer(connection: ServerConnection) -> str | None:
    address = connection.remote_address
    return str(address[0]) if isinstance(address, tuple) and address else None


class _WebSocketTransport:
    """The per-server state the websockets callbacks close over."""

    def __init__(self, app: CodeToolsServer, door: Door) -> None:
        self.app = app
        self.door = door
        self.policy = door.policy

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Health endpoints, then admission; None lets the upgrade go on."""
        path = request.path.partition("?")[0]
        health = self.door.health(path, request.headers)
        if health is not None:
            return _json_response(connection, health)
        if path != network.MCP_PATH:
            return _json_response(connection, self.door.not_found())
        refusal = self.door.admit(request.headers)
        if refusal is None:
            client = self.door.client(request.headers, _peer(connection))
            if not self.policy.connections.has_room(client):
                refusal = self.policy.too_many(client)
        if refusal is not None:
            logger.info("refused %s: %s", _peer(connection), refusal.message)
            return _json_response(connection, self.door.refused(refusal))
        return None

    async def handler(self, connection: ServerConnection) -> None:
        """One connection: admitted (counted), bridged, served until either side closes."""
        assert connection.request is not None
        client = self.policy.client_identity(connection.request.headers, _peer(connection))
        if not self.policy.connections.try_acquire(client):  # lost a race with another handshake
            await connection.close(CloseCode.TRY_AGAIN_LATER, "too many connections for this client")
            return
        try:
            info = new_connection("ws", client=client)
            await self._bridge(connection, info)
        finally:
            self.policy.connections.release(client)

    async def _bridge(self, connection: ServerConnection, info: ConnectionInfo) -> None:
        to_server, server_reads = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        server_writes, to_client = anyio.create_memory_object_stream[SessionMessage](0)

        async def read_frames() -> None:
            async with to_server:
                try:
                    async for frame in connection:
                        if isinstance(frame, bytes):
                            await connection.send(BINARY_FRAME_ERROR)
                            continue
                        decoded = decode_frame(frame)
                        if isinstance(decoded, str):
                            await connection.send(decoded)
                        else:
                            await to_server.send(decoded)
                except (ConnectionClosed, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    pass  # the peer left, or the session ended first: either way this connection is over

        async def write_frames() -> None:
            async with to_client:
                async for message in to_client:
                    # On a closed socket keep draining: the session ends once the reader sees the close.
                    with contextlib.suppress(ConnectionClosed):
                        await connection.send(encode_message(message))

        async with anyio.create_task_group() as tg:
            tg.start_soon(read_frames)
            tg.start_soon(write_frames)
            await self.app.serve_streams(server_reads, server_writes, info)
            tg.cancel_scope.cancel()


@asynccontextmanager
async def websocket_server(
    app: CodeToolsServer, host: str | None = None, port: int | None = None
) -> AsyncIterator[WebSocketEndpoint]:
    """Serve WebSocket (and /healthz, /readyz) while the block runs; `port=0` binds a free port.

    On exit the listener closes, open connections are closed (1001) and their sessions end (runs
    purged), then the runtime closes, which ends every child process.
    """
    settings = app.settings
    async with network.listening(app, host, port) as listener:
        transport = _WebSocketTransport(app, listener.door)
        server = await serve(
            transport.handler,
            sock=listener.sock,
            subprotocols=[SUBPROTOCOL],
            select_subprotocol=_select_subprotocol,
            process_request=transport.process_request,
            compression=None,
            max_size=settings.max_message_bytes,
            ping_interval=settings.ws_ping_interval_s,
            ping_timeout=settings.ws_ping_interval_s,
            close_timeout=CLOSE_TIMEOUT_S,
            open_timeout=settings.http_idle_timeout_s,  # the upgrade request, like an HTTP request head
            server_header=None,
            logger=logger,
        )
        try:
            yield listener.endpoint("ws")
        finally:
            server.close()
            with anyio.move_on_after(CLOSE_TIMEOUT_S + 5, shield=True):
                await server.wait_closed()


async def serve_websocket(app: CodeToolsServer) -> None:
    """`--transport websocket`: serve until SIGTERM or SIGINT, then shut down cleanly."""
    await network.serve_until_stopped(websocket_server, app, logger)
