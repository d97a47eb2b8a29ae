"""stdio: one connection for the life of the process; stdout carries protocol only.

The transport is ours, not the SDK's `stdio_server`, for three reasons: each line is parsed once
(into the `SessionMessage` the session gets, or into the error that answers it); a line is read in
bounded chunks and one longer than `max_message_bytes` is answered with a JSON-RPC error and
discarded up to its newline, never buffered whole; and the reader and writer are daemon threads, so
a read blocked on a pipe whose writer is still attached (or a write blocked on a full one) never
holds up exit.

End of input ends the session once the requests already read are answered, for at most
`stdio_eof_grace_s`; what is still running then is cancelled (each request still gets an answer, an
error) and the runtime closes, which ends every child process. A request the client cancelled is
never answered (the protocol forbids it): the SDK tells us through `on_request_unanswered`, so it
does not hold up the end. SIGTERM/SIGINT end the session at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.shared.message import ServerMessageMetadata, SessionMessage

from mcp_server.connections import new_connection
from mcp_server.server import CodeToolsServer
from mcp_server.transports.framing import decode_frame, encode_message, error_frame

LINE_BUFFER = 16
CHUNK_BYTES = 64 * 1024
DRAIN_TIMEOUT_S = 0.25
JSON_WHITESPACE = b" \t\r\n"


def too_large_frame(limit: int) -> str:
    return error_frame(
        types.INVALID_REQUEST,
        f"Invalid Request: message larger than {limit} bytes (setting max_message_bytes); it was discarded",
    )


class LineSplitter:
    """Bytes in, lines out, with a cap: no I/O. A line over `limit` bytes is reported once (as
    `TOO_LARGE`) when the cap is crossed, and the rest of it, up to its newline, is dropped."""

    TOO_LARGE = object()

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, chunk: bytes) -> Iterator[bytes | object]:
        start = 0
        while start <= len(chunk):
            newline = chunk.find(b"\n", start)
            end = len(chunk) if newline < 0 else newline
            piece = chunk[start:end]
            if not self._discarding:
                if len(self._buffer) + len(piece) > self.limit:
                    self._buffer.clear()
                    self._discarding = True
                    yield self.TOO_LARGE
                else:
                    self._buffer += piece
            if newline < 0:
                return
            if not self._discarding:
                yield bytes(self._buffer)
            self._buffer.clear()
            self._discarding = False
            start = newline + 1

    def end(self) -> Iterator[bytes]:
        """End of input: a last line without its newline still counts."""
        if self._buffer and not self._discarding:
            yield bytes(self._buffer)
        self._buffer.clear()


class Unanswered:
    """Requests read and not yet settled (answered, or settled unanswered after a client cancel)."""

    def __init__(self) -> None:
        self._ids: set[types.RequestId] = set()
        self._none_left = anyio.Event()
        self._none_left.set()

    def read(self, message: SessionMessage) -> None:
        if isinstance(message.message, types.JSONRPCRequest):
            request_id = message.message.id
            self._ids.add(request_id)
            self._none_left = anyio.Event()

            async def settled_unanswered() -> None:
                self.settled(request_id)

            message.metadata = ServerMessageMetadata(on_request_unanswered=settled_unanswered)

    def written(self, message: SessionMessage) -> None:
        if isinstance(message.message, (types.JSONRPCResponse, types.JSONRPCError)):
            request_id = message.message.id
            if request_id is not None:
                self.settled(request_id)

    def settled(self, request_id: types.RequestId) -> None:
        self._ids.discard(request_id)
        if not self._ids:
            self._none_left.set()

    async def wait_settled(self, timeout_s: float) -> None:
        with anyio.move_on_after(timeout_s):
            await self._none_left.wait()


Item = SessionMessage | str | None
"""What the reader thread hands over: a message, an error frame to answer with, or end of input."""


class StdinReader:
    """Reads the wire from `fd` in a daemon thread: bounded chunks, each line parsed once."""

    def __init__(self, fd: int, limit: int) -> None:
        self._fd = fd
        self._limit = limit
        self._send, self.items = anyio.create_memory_object_stream[Item](LINE_BUFFER)
        self._loop = asyncio.get_running_loop()
        # Backpressure without a round trip per line: the thread takes a slot before it hands an
        # item over (never blocking on the loop); the consumer gives it back once it has the item.
        self._slots = threading.Semaphore(LINE_BUFFER)
        threading.Thread(target=self._pump, name="mcp-code-tools stdin", daemon=True).start()

    def release(self) -> None:
        self._slots.release()

    def _hand_over(self, item: Item) -> None:
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.WouldBlock):
            self._send.send_nowait(item)
            if item is None:
                self._send.close()

    def _put(self, item: Item) -> None:
        self._slots.acquire()
        self._loop.call_soon_threadsafe(self._hand_over, item)

    def _line(self, raw: bytes) -> Item:
        """The line's message, or the error frame that answers it; None for a blank line."""
        if not raw.strip(JSON_WHITESPACE):
            return None
        return decode_frame(raw.decode("utf-8", errors="replace"))

    def _pump(self) -> None:
        splitter = LineSplitter(self._limit)
        try:
            while True:
                chunk = os.read(self._fd, CHUNK_BYTES)
                if not chunk:
                    break
                for line in splitter.feed(chunk):
                    item: Item = self._line(line) if isinstance(line, bytes) else too_large_frame(self._limit)
                    if item is not None:
                        self._put(item)
            for last in splitter.end():
                final = self._line(last)
                if final is not None:
                    self._put(final)
        except (RuntimeError, OSError):  # RuntimeError: the loop is closed
            pass
        finally:
            with contextlib.suppress(RuntimeError):
                self._put(None)


class StdoutWriter:
    """Writes lines to `fd` from a daemon thread; `write` returns once the line is written."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._queue: queue.SimpleQueue[tuple[bytes, asyncio.Future[None]]] = queue.SimpleQueue()
        threading.Thread(target=self._drain, name="mcp-code-tools stdout", daemon=True).start()

    async def write(self, data: bytes) -> None:
        done: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((data, done))
        await done

    def _settle(self, done: asyncio.Future[None], error: OSError | None) -> None:
        if done.done():
            return
        if error is None:
            done.set_result(None)
        else:
            done.set_exception(error)

    def _drain(self) -> None:
        while True:
            data, done = self._queue.get()
            error: OSError | None = None
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(self._fd, view) :]
            except OSError as exc:
                error = exc
            try:
                self._loop.call_soon_threadsafe(self._settle, done, error)
            except RuntimeError:  # the loop is closed: nobody waits any more
                return


@dataclass
class _Wire:
    stdin_fd: int
    stdout_fd: int


def _divert(fd: int, target: Callable[[], int], missing: Callable[[], int]) -> int:
    """A private copy of `fd` for the wire; `fd` itself now points at `target()`. A process started
    without `fd` gets `missing()` instead (stdin at end of input, stdout to /dev/null)."""
    try:
        private = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    except OSError:
        return missing()
    replacement = target()
    try:
        os.dup2(replacement, fd)
    finally:
        os.close(replacement)
    return private


def _closed_pipe() -> int:
    read_end, write_end = os.pipe()
    os.close(write_end)
    return read_end


@contextlib.contextmanager
def claimed_wire() -> Iterator[_Wire]:
    """The wire on private descriptors. While we serve, fd 0 reads /dev/null and fd 1 writes to
    stderr, so nothing else in the process (or a child) can eat protocol bytes or corrupt stdout.
    The private descriptors are never closed: a daemon thread may still be blocked on one."""
    stdin_fd = _divert(0, lambda: os.open(os.devnull, os.O_RDONLY), _closed_pipe)
    stdout_fd = _divert(1, lambda: os.dup(2), lambda: os.open(os.devnull, os.O_WRONLY))
    try:
        yield _Wire(stdin_fd, stdout_fd)
    finally:
        with contextlib.suppress(OSError):
            os.dup2(stdout_fd, 1)
        with contextlib.suppress(OSError):
            os.dup2(stdin_fd, 0)


async def serve_stdio_fds(app: CodeToolsServer, stdin_fd: int, stdout_fd: int) -> None:
    """Serve one connection on the two descriptors until end of input (or cancellation)."""
    settings = app.settings
    connection = new_connection("stdio", client=f"pid:{os.getppid()}")
    reader = StdinReader(stdin_fd, settings.max_message_bytes)
    writer = StdoutWriter(stdout_fd)
    unanswered = Unanswered()
    to_server: MemoryObjectSendStream[SessionMessage | Exception]
    server_reads: MemoryObjectReceiveStream[SessionMessage | Exception]
    to_server, server_reads = anyio.create_memory_object_stream[SessionMessage | Exception](0)
    server_writes, to_client = anyio.create_memory_object_stream[SessionMessage](0)
    errors_out = server_writes.clone()

    async def read_lines() -> None:
        async with to_server, errors_out:
            async for item in reader.items:
                reader.release()
                if item is None:
                    break
                if isinstance(item, str):  # in order with the answers around it
                    error = types.jsonrpc_message_adapter.validate_json(item, by_name=False)
                    with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
                        await errors_out.send(SessionMessage(error))
                    continue
                unanswered.read(item)
                try:
                    await to_server.send(item)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    return
            await unanswered.wait_settled(settings.stdio_eof_grace_s)

    written_all = anyio.Event()

    async def write_lines() -> None:
        async with to_client:
            async for message in to_client:
                try:
                    await writer.write(encode_message(message).encode("utf-8") + b"\n")
                except OSError:
                    continue  # the client is gone: drain until the session ends
                unanswered.written(message)
        written_all.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read_lines)
        tg.start_soon(write_lines)
        await app.serve_streams(server_reads, server_writes, connection)
        with anyio.move_on_after(DRAIN_TIMEOUT_S):  # the session's last answers reach the wire
            await written_all.wait()
        tg.cancel_scope.cancel()


async def serve_stdio(app: CodeToolsServer) -> None:
    """Serve until EOF on stdin or SIGTERM/SIGINT; the runtime (and every child process) is closed after."""
    with claimed_wire() as wire:
        async with app.running(), anyio.create_task_group() as tg:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(on_signal)
            await serve_stdio_fds(app, wire.stdin_fd, wire.stdout_fd)
            tg.cancel_scope.cancel()
