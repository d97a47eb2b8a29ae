"""A WebSocket client transport for the SDK 2.x `Client` (the SDK dropped its own in 2.0).

    async with Client(websocket_client("ws://127.0.0.1:8765/mcp"), mode="auto") as client:
        ...

It yields `(read_stream, write_stream)` like the SDK's transports: one JSON-RPC message per text
frame, subprotocol `mcp`. A frame that is not a valid message reaches the session as an exception
(as the SDK's stdio client does); the stream ends when the server closes the socket.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import SessionMessage
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from mcp_server.transports.framing import encode_message

DEFAULT_MAX_SIZE = 64 * 1024 * 1024

Streams = tuple[MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]]
"""What a client transport yields: (read stream, write stream)."""


@contextlib.asynccontextmanager
async def websocket_client(
    url: str,
    headers: Mapping[str, str] | None = None,
    subprotocols: Sequence[str] = ("mcp",),
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    open_timeout_s: float = 10.0,
) -> AsyncIterator[Streams]:
    """Connect to `url`; `headers` go with the upgrade request (e.g. `Authorization: Bearer ...`)."""
    async with connect(
        url,
        additional_headers=dict(headers or {}),
        subprotocols=[Subprotocol(p) for p in subprotocols] or None,
        compression=None,
        max_size=max_size,
        open_timeout=open_timeout_s,
    ) as ws:
        to_session, session_reads = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        session_writes, to_server = anyio.create_memory_object_stream[SessionMessage](0)

        async def read_frames() -> None:
            async with to_session:
                with contextlib.suppress(ConnectionClosed, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    async for frame in ws:
                        try:
                            text = frame.decode("utf-8") if isinstance(frame, bytes) else frame
                            item: SessionMessage | Exception = SessionMessage(
                                types.jsonrpc_message_adapter.validate_json(text, by_name=False)
                            )
                        except Exception as exc:
                            item = exc
                        await to_session.send(item)

        async def write_frames() -> None:
            # When the socket is gone, closing `to_server` makes the session's sends fail fast.
            async with to_server:
                with contextlib.suppress(ConnectionClosed):
                    async for message in to_server:
                        await ws.send(encode_message(message))

        async with anyio.create_task_group() as tg, session_reads, session_writes:
            tg.start_soon(read_frames)
            tg.start_soon(write_frames)
            try:
                yield session_reads, session_writes
            finally:
                tg.cancel_scope.cancel()
