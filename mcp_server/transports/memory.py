"""In-memory transport: a client-side stream pair served by `serve_streams`, like any connection.

Used by tests and by embedders who want the server in-process with per-connection run ownership
(the SDK's `Client(server)` shortcut bypasses our connection bookkeeping).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from mcp.shared.message import SessionMessage

from mcp_server.connections import ConnectionInfo, new_connection
from mcp_server.server import CodeToolsServer

Streams = tuple[
    anyio.streams.memory.MemoryObjectReceiveStream[SessionMessage | Exception],
    anyio.streams.memory.MemoryObjectSendStream[SessionMessage],
]


@asynccontextmanager
async def memory_transport(app: CodeToolsServer, connection: ConnectionInfo | None = None) -> AsyncIterator[Streams]:
    """Yield the client's (read, write) streams; the server side runs until the client leaves."""
    info = connection or new_connection("memory")
    to_server_send, to_server_recv = anyio.create_memory_object_stream[SessionMessage | Exception](32)
    to_client_send, to_client_recv = anyio.create_memory_object_stream[SessionMessage](32)
    async with app.running(), anyio.create_task_group() as tg:
        tg.start_soon(app.serve_streams, to_server_recv, to_client_send, info)
        try:
            async with to_client_recv, to_server_send:
                yield to_client_recv, to_server_send  # type: ignore[misc]
        finally:
            with anyio.move_on_after(10, shield=True):
                await to_server_send.aclose()
            tg.cancel_scope.cancel()
