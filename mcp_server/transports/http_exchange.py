"""A handshake-era `tools/call` served as one exchange: JSON unless something comes before the answer.

The SDK's session transport answers every POST of the 2025-11-25 era with an SSE stream built by
sse-starlette (five tasks and a task group per reply, memory streams between the request, the
session's dispatcher, a router and a writer). For a short call that machinery is most of the round
trip: ~0.6 ms of ~1.5 ms server CPU here, where the whole WebSocket call costs ~0.55 ms.

So the HTTP front serves a `tools/call` of a session it knows the way the SDK serves a 2026-07-28
request: through the SDK's public single-exchange driver (`mcp.server.runner.serve_one`) with a
`Connection` built from what the client sent in its `initialize` (protocol version, client info,
capabilities) and a dispatch context of ours (`ExchangeContext`), in the request's own task. The
same server handlers run, with the same connection identity (the scope state the front attaches).

The reply (`CallReply`) is the one the SDK would send, chosen at the last moment: the answer alone
goes out as `application/json`; the first notification tied to the call (progress for its
`progressToken`, a log entry the connection's level lets through) commits the reply to an SSE stream
(`event: message` frames, the answer last), and so does a call silent for `KEEPALIVE_S` (a
keep-alive comment then, as sse-starlette sends, and every `KEEPALIVE_S` after). As on the SDK's
path, the call has no back-channel for requests to the client (`NoBackChannelError`).

Cancellation keeps the era's rules: the client's `notifications/cancelled` for the call (which the
front still hands on to the SDK) cancels it, and the call is answered `-32800 Request cancelled`, as
the SDK's transport answers a cancelled request; a session that ends (DELETE, idle, eviction,
shutdown) cancels its calls, answered `-32000 Connection closed`. A client that goes away does not
cancel a call (neither does the SDK in this era).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
from mcp.server.connection import Connection
from mcp.server.runner import serve_one
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import NoBackChannelError
from mcp.shared.jsonrpc_dispatcher import handler_exception_to_error_data
from mcp.shared.message import MessageMetadata, ServerMessageMetadata
from mcp.shared.transport_context import TransportContext
from mcp_types import (
    CONNECTION_CLOSED,
    ErrorData,
    JSONRPCError,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    ProgressToken,
    RequestId,
)
from starlette.requests import Request
from starlette.types import Scope, Send

logger = logging.getLogger("mcp_server.http")

EXCHANGED_METHODS: Final = frozenset({"tools/call"})
KEEPALIVE_S: Final = 15.0
"""Seconds of silence before a keep-alive comment (sse-starlette's default ping interval)."""
REQUEST_CANCELLED: Final = -32800
"""What the SDK's handshake-era transport answers a cancelled request with."""


@dataclass(frozen=True)
class Envelope:
    """What a session's client said in its `initialize`: the identity each exchange is served with."""

    protocol_version: str
    client_info: Any
    capabilities: Any

    @staticmethod
    def of_initialize(body: bytes) -> Envelope | None:
        """From an `initialize` request body; None when it is not one."""
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return None
        params = message.get("params") if isinstance(message, dict) else None
        if message.get("method") != "initialize" or not isinstance(params, dict):
            return None
        version = params.get("protocolVersion")
        if not isinstance(version, str):
            return None
        return Envelope(version, params.get("clientInfo"), params.get("capabilities"))


def _frame(data: bytes) -> bytes:
    return b"event: message\r\ndata: " + data + b"\r\n\r\n"


class CallReply:
    """The HTTP reply of one exchange: JSON if the answer is the first thing sent, SSE otherwise."""

    def __init__(self, send: Send, session_id: str) -> None:
        self._send = send
        self._session = session_id.encode("latin-1")
        self._lock = anyio.Lock()
        self.streaming = False
        self.done = False
        self.last_write = anyio.current_time()

    async def _start_stream(self) -> None:
        if not self.streaming:
            self.streaming = True
            headers = [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache, no-transform"),
                (b"x-accel-buffering", b"no"),
                (MCP_SESSION_ID_HEADER.encode(), self._session),
            ]
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})

    async def _chunk(self, body: bytes) -> None:
        await self._start_stream()
        await self._send({"type": "http.response.body", "body": body, "more_body": True})
        self.last_write = anyio.current_time()

    async def event(self, data: bytes) -> None:
        """A notification tied to the call (before its answer)."""
        async with self._lock:
            if not self.done:
                await self._chunk(_frame(data))

    async def keep_alive(self) -> None:
        async with self._lock:
            if not self.done:
                await self._chunk(b": ping\r\n\r\n")

    async def answer(self, data: bytes) -> None:
        async with self._lock:
            if self.done:
                return
            self.done = True
            if self.streaming:
                await self._send({"type": "http.response.body", "body": _frame(data), "more_body": True})
                await self._send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (MCP_SESSION_ID_HEADER.encode(), self._session),
            ]
            await self._send({"type": "http.response.start", "status": 200, "headers": headers})
            await self._send({"type": "http.response.body", "body": data, "more_body": False})


@dataclass
class ExchangeContext:
    """The SDK's `DispatchContext` for one exchange: notifications go to the call's reply."""

    transport: TransportContext
    request_id: RequestId
    message_metadata: MessageMetadata
    reply: CallReply
    progress_token: ProgressToken | None = None
    cancel_requested: anyio.Event = field(default_factory=anyio.Event)
    can_send_request: bool = field(default=False, init=False)

    async def send_raw_request(
        self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None
    ) -> dict[str, Any]:
        raise NoBackChannelError(method)

    async def notify(self, method: str, params: Mapping[str, Any] | None, opts: CallOptions | None = None) -> None:
        note = JSONRPCNotification(jsonrpc="2.0", method=method, params=dict(params) if params is not None else None)
        await self.reply.event(note.model_dump_json(by_alias=True, exclude_none=True).encode())

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        if self.progress_token is None:
            return
        params: dict[str, Any] = {"progressToken": self.progress_token, "progress": progress}
        if total is not None:
            params["total"] = total
        if message is not None:
            params["message"] = message
        await self.notify("notifications/progress", params)


@dataclass
class _Call:
    session_id: str
    reply: CallReply
    scope: anyio.CancelScope
    why: ErrorData | None = None


def _progress_token(params: Mapping[str, Any] | None) -> ProgressToken | None:
    meta = params.get("_meta") if params is not None else None
    token = meta.get("progressToken") if isinstance(meta, Mapping) else None
    return token if isinstance(token, str | int) and not isinstance(token, bool) else None


def _error_data(exc: Exception, method: str) -> ErrorData:
    """A handler's exception on the wire, as the SDK's dispatcher answers it in this era."""
    error = handler_exception_to_error_data(exc)
    if error is None:
        logger.exception("handler for %r raised", method)
        error = ErrorData(code=0, message=str(exc))
    return error


def _key(request_id: object) -> str:
    return json.dumps(request_id)


class Exchanges:
    """The calls being served as exchanges, by session and request id."""

    def __init__(self, server: Any, lifespan_state: Any, keepalive_s: float | None = None) -> None:
        self.server = server
        self.lifespan_state = lifespan_state
        self.keepalive_s = KEEPALIVE_S if keepalive_s is None else keepalive_s
        self._calls: dict[tuple[str, str], _Call] = {}

    def __len__(self) -> int:
        return len(self._calls)

    @staticmethod
    def request_of(body: bytes) -> JSONRPCRequest | None:
        """The `tools/call` request in `body`, when that is all it is."""
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return None
        if not isinstance(message, dict) or message.get("method") not in EXCHANGED_METHODS or "id" not in message:
            return None
        try:
            return JSONRPCRequest.model_validate(message)
        except ValueError:
            return None

    async def serve(
        self, session_id: str, request: JSONRPCRequest, envelope: Envelope, scope: Scope, send: Send
    ) -> None:
        http = Request(scope)
        reply = CallReply(send, session_id)
        dctx = ExchangeContext(
            transport=TransportContext(kind="streamable-http", can_send_request=False, headers=http.headers),
            request_id=request.id,
            message_metadata=ServerMessageMetadata(request_context=http),
            reply=reply,
            progress_token=_progress_token(request.params),
        )
        version = http.headers.get("mcp-protocol-version") or envelope.protocol_version  # the negotiated one
        connection = Connection.from_envelope(version, envelope.client_info, envelope.capabilities)
        call = _Call(session_id, reply, anyio.CancelScope())
        key = (session_id, _key(request.id))
        self._calls[key] = call
        outcome: JSONRPCResponse | JSONRPCError | None = None
        try:
            with call.scope:
                try:
                    result = await serve_one(
                        self.server,
                        dctx,
                        request.method,
                        request.params,
                        connection=connection,
                        lifespan_state=self.lifespan_state,
                    )
                    outcome = JSONRPCResponse(jsonrpc="2.0", id=request.id, result=result)
                except Exception as exc:
                    outcome = JSONRPCError(jsonrpc="2.0", id=request.id, error=_error_data(exc, request.method))
        finally:
            if self._calls.get(key) is call:
                del self._calls[key]
        if outcome is None:  # cancelled by its client or its session's end
            why = call.why or ErrorData(code=REQUEST_CANCELLED, message="Request cancelled")
            outcome = JSONRPCError(jsonrpc="2.0", id=request.id, error=why)
        await reply.answer(outcome.model_dump_json(by_alias=True, exclude_unset=True).encode())

    def cancelled(self, session_id: str, body: bytes) -> None:
        """A `notifications/cancelled` in `body` cancels the session's call it names."""
        try:
            message = json.loads(body)
        except (ValueError, RecursionError):
            return
        if not isinstance(message, dict) or message.get("method") != "notifications/cancelled":
            return
        params = message.get("params")
        if isinstance(params, dict) and "requestId" in params:
            call = self._calls.get((session_id, _key(params["requestId"])))
            if call is not None:
                call.why = ErrorData(code=REQUEST_CANCELLED, message="Request cancelled")
                call.scope.cancel()

    def end_session(self, session_id: str) -> None:
        """The session ended: its calls are cancelled and answered 'Connection closed'."""
        for (owner, _), call in list(self._calls.items()):
            if owner == session_id:
                call.why = ErrorData(code=CONNECTION_CLOSED, message="Connection closed")
                call.scope.cancel()

    async def keep_alive(self) -> None:
        """Forever: a call silent for `keepalive_s` gets a keep-alive comment (its reply turns SSE)."""
        while True:
            now = anyio.current_time()
            due = [c.reply for c in self._calls.values() if now - c.reply.last_write >= self.keepalive_s]
            for reply in due:
                with anyio.move_on_after(self.keepalive_s):
                    await reply.keep_alive()
            oldest = min((c.reply.last_write for c in self._calls.values()), default=math.inf)
            wait = min(self.keepalive_s, max(0.0, oldest + self.keepalive_s - anyio.current_time()))
            await anyio.sleep(max(wait, 0.01))
