"""stdio: one connection for the life of the process; stdout carries protocol only."""

from __future__ import annotations

import os
import signal

import anyio
from mcp.server.stdio import stdio_server

from mcp_server.connections import new_connection
from mcp_server.server import CodeToolsServer


async def serve_stdio(app: CodeToolsServer) -> None:
    """Serve until EOF on stdin or SIGTERM/SIGINT; the runtime (and every child process) is closed after."""
    connection = new_connection("stdio", client=f"pid:{os.getppid()}")
    async with app.running(), anyio.create_task_group() as tg:

        async def on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return

        tg.start_soon(on_signal)
        async with stdio_server() as (read_stream, write_stream):
            await app.serve_streams(read_stream, write_stream, connection)
        tg.cancel_scope.cancel()
