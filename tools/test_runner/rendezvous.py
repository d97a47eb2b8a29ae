"""Where forked test children call back: a Unix socket that routes connections to runs by token.

Each child opens two connections (`ev` for its JSON events, `out` for its stdout/stderr) and
introduces itself with one line, `<token> <kind>`. The socket lives in a private directory (0700)
and a token is 128 random bits, so nothing else on the machine can inject into a run. A
connection with an unknown token, or that does not introduce itself in time, is closed.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

HELLO_TIMEOUT_S = 5.0
MAX_HELLO = 256
KINDS = ("ev", "out")


@dataclass
class Arrival:
    kind: str
    stream: anyio.abc.ByteStream
    leftover: bytes
    """Bytes that came with the introduction line (the first events)."""


class Rendezvous:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="mcp-tests-"))
        self.path = str(self.directory / "r.sock")
        self._waiting: dict[str, MemoryObjectSendStream[Arrival]] = {}
        self.rejected = 0

    async def serve(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Accept connections until cancelled."""
        listener = await anyio.create_unix_listener(self.path)
        async with listener:
            task_status.started()
            await listener.serve(self._introduce)

    @contextlib.asynccontextmanager
    async def expect(self) -> AsyncIterator[tuple[str, MemoryObjectReceiveStream[Arrival]]]:
        """A fresh token and the stream its connections arrive on; on exit the token is forgotten
        and connections that arrived but were never taken are closed."""
        token = secrets.token_hex(16)
        send, receive = anyio.create_memory_object_stream[Arrival](len(KINDS))
        self._waiting[token] = send
        try:
            yield token, receive
        finally:
            self._waiting.pop(token, None)
            send.close()
            with anyio.CancelScope(shield=True):
                while True:
                    try:
                        arrival = receive.receive_nowait()
                    except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                        break
                    await arrival.stream.aclose()
            receive.close()

    async def _introduce(self, stream: anyio.abc.ByteStream) -> None:
        data = b""
        with anyio.move_on_after(HELLO_TIMEOUT_S):
            with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
                while b"\n" not in data and len(data) < MAX_HELLO:
                    data += await stream.receive()
        line, _, leftover = data.partition(b"\n")
        token, _, kind = line.decode("ascii", "replace").partition(" ")
        send = self._waiting.get(token)
        if send is None or kind not in KINDS:
            self.rejected += 1
            await stream.aclose()
            return
        try:
            send.send_nowait(Arrival(kind, stream, leftover))
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.rejected += 1
            await stream.aclose()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        shutil.rmtree(self.directory, ignore_errors=True)
