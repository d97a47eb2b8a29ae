"""A minimal LSP client: the base protocol's framing (pure) and JSON-RPC over a child's pipes.

`MessageDecoder` turns bytes into messages with no I/O. `LspConnection` sends requests and
notifications, matches responses by id, answers the server's own requests with "method not
found" (we advertise no capability that would make it ask), and fails every pending request with
`LinterGone` when the pipe closes, so a dead server never leaves a caller waiting.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

logger = logging.getLogger("mcp_server.lsp")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
INLINE_PARSE_BYTES = 256 * 1024
"""Bodies larger than this are parsed in a worker thread (a 16 MB JSON parse is ~100 ms of loop)."""
_HEADER_END = b"\r\n\r\n"
_MAX_HEADER_BYTES = 8192


class LspProtocolError(Exception):
    """The peer broke the base protocol (bad header, oversized or non-JSON body)."""


class LinterGone(Exception):
    """The language server is not there any more (exited, closed its pipe, broke the protocol)."""


class LspTooLarge(LinterGone):
    """An answer over the size cap: skipped unread, the request fails, the connection lives on."""


@dataclass(frozen=True, slots=True)
class RawBody:
    """A body too big to parse on the event loop: the caller parses it in a worker thread."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Oversized:
    """A message over the cap was skipped (only with `skip_oversized`)."""

    length: int


Decoded = dict[str, Any] | RawBody | Oversized


class LspError(Exception):
    """A JSON-RPC error response."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{message} (code {code})")
        self.code = code


def encode_message(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return b"Content-Length: %d\r\n\r\n" % len(body) + body


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LspProtocolError(f"LSP body is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise LspProtocolError("LSP message is not a JSON object")
    return message


class MessageDecoder:
    """Bytes in, messages out: `Content-Length` framing with a size cap.

    With `skip_oversized`, a message over `max_bytes` is discarded as it arrives (never buffered)
    and reported as `Oversized`; without, it is a protocol error. Bodies over `inline_max` come
    out as `RawBody` for the caller to parse off the event loop.
    """

    def __init__(
        self, max_bytes: int = MAX_MESSAGE_BYTES, *, skip_oversized: bool = False, inline_max: int | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.skip_oversized = skip_oversized
        self.inline_max = inline_max
        self._buffer = bytearray()
        self._length: int | None = None
        self._discard = 0

    def feed(self, data: bytes) -> list[Any]:
        """Messages complete so far: dicts (and, per the options above, `RawBody`/`Oversized`)."""
        if self._discard:
            dropped = min(self._discard, len(data))
            self._discard -= dropped
            data = data[dropped:]
        self._buffer += data
        messages: list[Decoded] = []
        while True:
            if self._length is None:
                end = self._buffer.find(_HEADER_END)
                if end < 0:
                    if len(self._buffer) > _MAX_HEADER_BYTES:
                        raise LspProtocolError("LSP header too long")
                    return messages
                length = self._parse_header(bytes(self._buffer[:end]))
                del self._buffer[: end + len(_HEADER_END)]
                if length > self.max_bytes:
                    if not self.skip_oversized:
                        raise LspProtocolError(f"LSP message of {length} bytes is over the {self.max_bytes}-byte limit")
                    dropped = min(length, len(self._buffer))
                    del self._buffer[:dropped]
                    self._discard = length - dropped
                    messages.append(Oversized(length))
                    if self._discard:
                        return messages
                    continue
                self._length = length
            if len(self._buffer) < self._length:
                return messages
            body = bytes(self._buffer[: self._length])
            del self._buffer[: self._length]
            self._length = None
            if self.inline_max is not None and len(body) > self.inline_max:
                messages.append(RawBody(body))
            else:
                messages.append(parse_body(body))

    def _parse_header(self, header: bytes) -> int:
        length: int | None = None
        for line in header.split(b"\r\n"):
            name, sep, value = line.partition(b":")
            if not sep:
                raise LspProtocolError(f"malformed LSP header line {line[:80]!r}")
            if name.strip().lower() == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise LspProtocolError(f"bad Content-Length {value[:40]!r}") from None
        if length is None or length < 0:
            raise LspProtocolError("LSP header without Content-Length")
        return length


class _Pending:
    __slots__ = ("error", "event", "result")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class LspConnection:
    """JSON-RPC over the LSP base protocol on a pair of byte streams."""

    def __init__(
        self,
        send: anyio.abc.ByteSendStream,
        receive: anyio.abc.ByteReceiveStream,
        on_notification: Callable[[str, Any], None] | None = None,
        max_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        self._send = send
        self._on_notification = on_notification
        self._receive = receive
        self._decoder = MessageDecoder(max_bytes, skip_oversized=True, inline_max=INLINE_PARSE_BYTES)
        self._pending: dict[int, _Pending] = {}
        self._next_id = 0
        self._write_lock = anyio.Lock()
        self.closed = anyio.Event()
        self.close_reason = ""

    async def run(self) -> None:
        """Read and dispatch until the stream ends; then fail whatever is pending. Safe to cancel."""
        reason = "the language server closed its output"
        try:
            async for chunk in self._receive:
                for item in self._decoder.feed(chunk):
                    if isinstance(item, Oversized):
                        self._fail_pending(LspTooLarge(f"an answer of {item.length} bytes is over the limit"))
                        continue
                    if isinstance(item, RawBody):  # a big answer: parsed off the event loop
                        item = await anyio.to_thread.run_sync(parse_body, item.data)
                    await self._dispatch(item)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            reason = "the language server's output broke"
        except LspProtocolError as exc:
            reason = f"protocol error from the language server: {exc}"
        except anyio.get_cancelled_exc_class():
            reason = "the connection was closed"
            raise
        finally:
            self._close(reason)

    def _fail_pending(self, error: BaseException) -> None:
        """An answer was skipped: its id is unknown, so every request waiting fails (ruff's servers
        take one request at a time, so that is the one it answered)."""
        for pending in self._pending.values():
            if not pending.event.is_set():
                pending.error = error
                pending.event.set()

    def _close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.close_reason = reason
        self.closed.set()
        for pending in self._pending.values():
            pending.error = LinterGone(reason)
            pending.event.set()

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if "method" not in message:
            pending = self._pending.get(message.get("id"))  # type: ignore[arg-type]
            if pending is None:
                return
            error = message.get("error")
            if isinstance(error, dict):
                pending.error = LspError(int(error.get("code", 0)), str(error.get("message", "")))
            else:
                pending.result = message.get("result")
            pending.event.set()
        elif "id" in message:  # a request from the server: we offer none of the capabilities it needs
            reply = {"jsonrpc": "2.0", "id": message["id"], "error": {"code": -32601, "message": "not supported"}}
            await self._write(reply)
        elif self._on_notification is not None:
            self._on_notification(str(message["method"]), message.get("params"))

    async def _write(self, message: dict[str, Any]) -> None:
        if self.closed.is_set():
            raise LinterGone(self.close_reason)
        data = encode_message(message)
        try:
            async with self._write_lock:
                await self._send.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError) as exc:
            self._close(f"cannot write to the language server: {exc or type(exc).__name__}")
            raise LinterGone(self.close_reason) from None

    async def notify(self, method: str, params: Any) -> None:
        await self._write({"jsonrpc": "2.0", "method": method, "params": params})

    async def request(self, method: str, params: Any, *, timeout_s: float) -> Any:
        """Send a request and wait (at most `timeout_s`, else `TimeoutError`) for its result."""
        self._next_id += 1
        request_id = self._next_id
        pending = _Pending()
        self._pending[request_id] = pending
        try:
            await self._write({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
            with anyio.fail_after(timeout_s):
                await pending.event.wait()
        finally:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error
        return pending.result
