"""stdio: one connection for the life of the process; stdout carries protocol only.

EOF on stdin ends the session, but only once the requests already read are answered (bounded by
`EOF_GRACE_S`): a client that pipes its requests and closes stdin gets every answer. (The SDK's
loop cancels in-flight handlers at end of input.) SIGTERM/SIGINT end it at once. A line that is
not a message gets a JSON-RPC error in its place (`framing.decode_frame`), where the SDK's reader
would drop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import io
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, BinaryIO, cast

import anyio
import mcp_types as types
from mcp.server.stdio import stdio_server
from mcp.shared._stream_protocols import ReadStream, WriteStream
from mcp.shared.message import SessionMessage

from mcp_server.connections import new_connection
from mcp_server.server import CodeToolsServer
from mcp_server.transports.framing import decode_frame

LINE_BUFFER = 16
EOF_GRACE_S = 30.0
JSON_WHITESPACE = " \t\r\n"


class StdinLines:
    """The lines of stdin for `stdio_server(stdin=...)`, read by a daemon thread.

    Why not the SDK's reader: it reads in an anyio worker thread, and a read blocked on a pipe
    whose writer is still attached can be neither cancelled nor abandoned (anyio shields the wait,
    and the interpreter joins that thread at exit), so SIGTERM with the client still connected
    would never finish. A daemon thread blocked in `read()` is simply left behind at exit.
    """

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._send, self._receive = anyio.create_memory_object_stream[str | SessionMessage](LINE_BUFFER)
        self.answer: Callable[[SessionMessage], Awaitable[None]] | None = None
        """Where the error answers to rejected lines go (the session's write stream)."""
        self._loop = asyncio.get_running_loop()
        # Backpressure without a round trip per line: the thread takes a slot before it hands a
        # line over (never blocking on the loop), the reader gives it back once it has the line.
        self._slots = threading.Semaphore(LINE_BUFFER)
        threading.Thread(target=self._pump, name="mcp-code-tools stdin", daemon=True).start()

    def _hand_over(self, item: str | SessionMessage | None) -> None:
        """On the loop: deliver one item (None: end of input). The slot guarantees room."""
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            if item is None:
                self._send.close()
            else:
                self._send.send_nowait(item)

    def _pump(self) -> None:
        """Lines that are messages go to the SDK; any other line is answered with a JSON-RPC error
        (the SDK's reader would drop it, leaving a client waiting on its id forever)."""
        try:
            for raw in self._file:
                line = raw.decode("utf-8", errors="replace")
                if not line.strip(JSON_WHITESPACE):
                    continue  # a blank line is not a message
                decoded = decode_frame(line)
                if isinstance(decoded, SessionMessage):
                    item: str | SessionMessage = line
                else:
                    item = SessionMessage(types.jsonrpc_message_adapter.validate_json(decoded, by_name=False))
                self._slots.acquire()
                self._loop.call_soon_threadsafe(self._hand_over, item)
        except (RuntimeError, OSError, ValueError):  # RuntimeError: the loop is closed
            pass
        finally:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._hand_over, None)

    def __aiter__(self) -> StdinLines:
        return self

    async def __anext__(self) -> str:
        while True:
            try:
                item = await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                raise StopAsyncIteration from None
            self._slots.release()
            if isinstance(item, str):
                return item
            if self.answer is not None:  # in order with the lines around it, before end of input
                with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                    await self.answer(item)


class Unanswered:
    """Requests read but not yet answered; the read side holds back EOF until there are none."""

    def __init__(self) -> None:
        self._ids: set[types.RequestId] = set()
        self._none_left = anyio.Event()
        self._none_left.set()

    def read(self, item: SessionMessage | Exception) -> None:
        if isinstance(item, SessionMessage) and isinstance(item.message, types.JSONRPCRequest):
            self._ids.add(item.message.id)
            self._none_left = anyio.Event()

    def written(self, item: SessionMessage) -> None:
        if isinstance(item.message, (types.JSONRPCResponse, types.JSONRPCError)):
            self._ids.discard(item.message.id)  # type: ignore[arg-type]
            if not self._ids:
                self._none_left.set()

    async def wait_answered(self, timeout_s: float) -> None:
        with anyio.move_on_after(timeout_s):
            await self._none_left.wait()


class _TrackedReads:
    """The session's read stream: notes requests, and delays end of input until they are answered."""

    def __init__(self, inner: ReadStream[SessionMessage | Exception], unanswered: Unanswered) -> None:
        self._inner = inner
        self._unanswered = unanswered

    @property
    def last_context(self) -> Any:  # the sender's context, which the dispatcher looks for
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            item = await self._inner.receive()
        except anyio.EndOfStream:
            await self._unanswered.wait_answered(EOF_GRACE_S)
            raise
        self._unanswered.read(item)
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _TrackedReads:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _TrackedReads:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        return None


class _TrackedWrites:
    def __init__(self, inner: WriteStream[SessionMessage], unanswered: Unanswered) -> None:
        self._inner = inner
        self._unanswered = unanswered

    async def send(self, item: SessionMessage, /) -> None:
        await self._inner.send(item)
        self._unanswered.written(item)

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _TrackedWrites:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        await self.aclose()
        return None


@contextlib.contextmanager
def claimed_stdin() -> Iterator[BinaryIO]:
    """Read the wire from a private copy of fd 0; fd 0 itself reads /dev/null while we serve,
    so nothing else in the process (or a child) can eat protocol bytes."""
    try:
        private = fcntl.fcntl(0, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:  # no fd 0 at all: nothing will ever arrive
        yield io.BytesIO()
        return
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    # Never closed: the reader thread may still be blocked on it when we return.
    file = os.fdopen(private, "rb", closefd=False)
    try:
        yield file
    finally:
        os.dup2(private, 0)


async def serve_stdio(app: CodeToolsServer) -> None:
    """Serve until EOF on stdin or SIGTERM/SIGINT; the runtime (and every child process) is closed after."""
    connection = new_connection("stdio", client=f"pid:{os.getppid()}")
    with claimed_stdin() as stdin_file:
        async with app.running(), anyio.create_task_group() as tg:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(on_signal)
            stdin = StdinLines(stdin_file)
            unanswered = Unanswered()
            async with stdio_server(stdin=cast("anyio.AsyncFile[str]", stdin)) as (read_stream, write_stream):
                stdin.answer = write_stream.send
                await app.serve_streams(
                    _TrackedReads(read_stream, unanswered), _TrackedWrites(write_stream, unanswered), connection
                )
            tg.cancel_scope.cancel()
