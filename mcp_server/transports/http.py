"""Streamable HTTP: the SDK's transport at `http://HOST:PORT/mcp`, `/healthz` and `/readyz` beside it.

The SDK's session manager serves the MCP endpoint (sessions, both protocol eras, SSE, the request
body limit `max_message_bytes` as 413, the DNS-rebinding check). In front of it, one ASGI app of ours
(`HttpFront`), on public seams only:

- the door (`network.Door`): token 401, Origin 403, Host 421, the health endpoints;
- requests in progress per client, at most `max_requests_per_client` (429): each holds a connection;
- a request body must arrive within `http_body_timeout_s` (a slow body gets 408);
- the ledger of HTTP sessions (`HttpSessions`): a client at `max_connections_per_client` sessions
  has its least recently used idle session ended to make room (429 only when all are busy); a
  session idle for `http_session_idle_s` ends; an ended session's runs are purged and their work
  cancelled. We end a session the way a client does: a DELETE with its id, through the manager;
- in the handshake era, a session's `tools/call` is served as one exchange through the SDK's public
  single-exchange driver (`http_exchange.py`: JSON unless progress or a log entry comes first), and
  any other POST's SSE reply that holds only its answer goes out as JSON (`http_replies.py`).

Each request's `ConnectionInfo` (session owner, token-aware client, rate-limit bucket) is attached
to its ASGI scope state, where `connection_for_request` finds it, as stream transports set
`current_connection`.

Served by hypercorn inside the caller's event loop, on a socket bound before anything starts, with
its public `serve(..., shutdown_trigger=...)`. A connection that sends no complete request head (a
slowloris) or sits idle between requests is closed after `http_idle_timeout_s`. The listening
socket hypercorn gets (`http_sockets.CappedListener`) holds open TCP connections to
`max_http_connections` (past it: 503 and closed), and each reply is corked so it leaves in one
packet when it is written at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, check_accept_headers
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from mcp_server.connections import CONNECTION_STATE_KEY, http_connection, http_session_owner
from mcp_server.netpolicy import LOOPBACK_NAMES, ConnectionCounter, NetPolicy, Refusal
from mcp_server.server import CodeToolsServer
from mcp_server.transports.http_exchange import Envelope, Exchanges
from mcp_server.transports.http_replies import PlainReply
from mcp_server.transports.http_sessions import HttpSessions
from mcp_server.transports.http_sockets import CappedListener, ConnectionLedger, CorkedReply
from mcp_server.transports.network import (
    MCP_PATH,
    Door,
    HealthAnswer,
    NetworkEndpoint,
    listening,
    serve_until_stopped,
)

logger = logging.getLogger("mcp_server.http")

SHUTDOWN_TIMEOUT_S = 10.0
ENVELOPE_MAX_BYTES = 64 * 1024
"""The most of an opening request's body kept to read the client's `initialize` envelope."""
HttpEndpoint = NetworkEndpoint


class BodyTimeout(Exception):
    """The client did not send its request body in time."""


async def _answer(answer: HealthAnswer, send: Send, *, close: bool = False) -> None:
    body = (json.dumps(answer.body) + "\n").encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _security_settings(policy: NetPolicy) -> TransportSecuritySettings:
    if not policy.loopback_bind:
        # Off loopback a token is mandatory and the server's public names are unknown here:
        # NetPolicy still checks Origin; the Host check is the token's job.
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{name}:*" for name in LOOPBACK_NAMES] + list(LOOPBACK_NAMES),
        allowed_origins=list(policy.origins),
    )


def _handshake_era(headers: Headers) -> bool:
    version = headers.get("mcp-protocol-version")
    return version is None or version in HANDSHAKE_PROTOCOL_VERSIONS


class _CorkedSend:
    def __init__(self, send: Send, reply: CorkedReply) -> None:
        self.send = send
        self.reply = reply

    async def __call__(self, message: Message) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self.reply.started()
        await self.send(message)
        if kind == "http.response.body" and not message.get("more_body", False):
            self.reply.finished()


class HttpFront:
    """The ASGI app hypercorn serves: the door, the caps, the session ledger, then the SDK."""

    def __init__(self, app: CodeToolsServer, door: Door, connections: ConnectionLedger | None = None) -> None:
        settings = app.settings
        self.app = app
        self.door = door
        self.connections = connections
        """The port's open TCP connections (None when embedded without our listening socket)."""
        self.manager = StreamableHTTPSessionManager(
            app.server,
            security_settings=_security_settings(door.policy),
            max_request_body_size=settings.max_message_bytes,
            session_idle_timeout=None,  # ours: `HttpSessions` knows runs keep a session busy
        )
        self.sessions = HttpSessions(
            cap_per_client=settings.max_connections_per_client,
            idle_s=settings.http_session_idle_s,
            busy=self._has_running_runs,
        )
        self.requests = ConnectionCounter(settings.max_requests_per_client)
        self.body_timeout_s = settings.http_body_timeout_s
        self.max_body_bytes = settings.max_message_bytes
        self.exchanges = Exchanges(app.server, app)
        """Handshake-era `tools/call`s served as one exchange each (http_exchange.py)."""

    def _has_running_runs(self, session_id: str) -> bool:
        return any(run.running for run in self.app.app.runs.list(http_session_owner(session_id)))

    # --- ASGI -----------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":  # WebSocket is its own transport (--transport websocket)
            await receive()
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        if scope["type"] != "http":
            return
        headers = Headers(scope=scope)
        path = scope["path"].rstrip("/") or "/"
        health = self.door.health(path, headers)
        if health is not None:
            await _answer(health, send)
            return
        if path != MCP_PATH:
            await _answer(self.door.not_found(), send)
            return
        refusal = self.door.admit(headers)
        if refusal is not None:
            await _answer(self.door.refused(refusal), send)
            return
        peer = scope.get("client")
        client = self.door.client(headers, peer[0] if peer else None)
        if not self.requests.try_acquire(client):
            await _answer(self.door.refused(self._too_many_requests(client)), send, close=True)
            return
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        scope.setdefault("state", {})[CONNECTION_STATE_KEY] = http_connection(session_id, client)
        corked = self._corked(scope, send)
        try:
            await self._mcp(scope, self._timed(receive), corked or send, headers, client)
        except BodyTimeout:
            why = f"request body not received within {self.body_timeout_s:g} s (setting http_body_timeout_s)"
            with contextlib.suppress(Exception):
                await _answer(HealthAnswer(408, {"error": why}), send, close=True)
        finally:
            self.requests.release(client)
            if corked is not None:
                corked.reply.finished()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _corked(self, scope: Scope, send: Send) -> _CorkedSend | None:
        """`send`, with the reply's connection corked from its head to its last chunk (one packet)."""
        connection = self.connections.for_peer(scope.get("client")) if self.connections is not None else None
        return _CorkedSend(send, CorkedReply(connection)) if connection is not None else None

    def _timed(self, receive: Receive) -> Receive:
        """`receive`, with the whole request body due within `http_body_timeout_s`."""
        deadline = anyio.current_time() + self.body_timeout_s
        body_done = False

        async def timed_receive() -> Message:
            nonlocal body_done
            if body_done:
                return await receive()
            with anyio.move_on_after(deadline - anyio.current_time()):
                message = await receive()
                if message["type"] != "http.request" or not message.get("more_body", False):
                    body_done = True
                return message
            raise BodyTimeout

        return timed_receive

    def _too_many_requests(self, client: str) -> Refusal:
        return Refusal(
            429,
            f"too many requests in progress: this client already has {self.requests.count(client)} "
            "(setting max_requests_per_client)",
        )

    async def _mcp(self, scope: Scope, receive: Receive, send: Send, headers: Headers, client: str) -> None:
        session_id = headers.get(MCP_SESSION_ID_HEADER)
        handshake_post = scope["method"] == "POST" and _handshake_era(headers)
        if session_id:
            await self._in_session(session_id, scope, receive, send, handshake_post)
        elif handshake_post:  # a POST that may open a session (the modern era has none)
            await self._opening(client, scope, receive, send)
        else:
            await self.manager.handle_request(scope, receive, send)

    async def _handle(self, scope: Scope, receive: Receive, send: Send, handshake_post: bool) -> None:
        """The manager answers; a handshake-era POST whose reply is only its response gets it as JSON."""
        if not handshake_post:
            await self.manager.handle_request(scope, receive, send)
            return
        reply = PlainReply(send)
        await self.manager.handle_request(scope, receive, reply)
        await reply.close()

    async def _opening(self, client: str, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.sessions.has_room(client):
            victim = self.sessions.least_recently_used_idle(client)
            if victim is None:
                refusal = Refusal(
                    429,
                    f"too many sessions: this client has {self.sessions.count(client)} open, all busy "
                    "(setting max_connections_per_client)",
                )
                await _answer(self.door.refused(refusal), send)
                return
            logger.info("client %s at its session cap: ending its least recently used session", client)
            await self.end_session(victim)
        opened: str | None = None
        body = bytearray()

        async def keep(message: Message) -> Message:
            if message["type"] == "http.request" and len(body) <= ENVELOPE_MAX_BYTES:
                body.extend(message.get("body", b""))
            return message

        async def capture() -> Message:
            return await keep(await receive())

        async def watch(message: Message) -> None:
            nonlocal opened
            if message["type"] == "http.response.start" and message["status"] < 400:
                opened = Headers(raw=message.get("headers", [])).get(MCP_SESSION_ID_HEADER)
                if opened:
                    self.sessions.opened(client, opened, Envelope.of_initialize(bytes(body)))
            await send(message)

        self.sessions.begin_opening(client)
        try:
            await self._handle(scope, capture, watch, True)
        finally:
            self.sessions.end_opening(client, opened or None)

    async def _in_session(
        self, session_id: str, scope: Scope, receive: Receive, send: Send, handshake_post: bool
    ) -> None:
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        self.sessions.started(session_id)
        try:
            envelope = self.sessions.envelope(session_id) if handshake_post else None
            if envelope is not None and self._exchangeable(scope):
                await self._exchange(session_id, envelope, scope, receive, watch)
            else:
                await self._handle(scope, receive, watch, handshake_post)
        finally:
            self.sessions.finished(session_id)
            deleted = scope["method"] == "DELETE" and 200 <= status < 300
            if deleted or status == 404:  # ended by its client, or already gone in the SDK
                self._ended(session_id)

    def _exchangeable(self, scope: Scope) -> bool:
        """Whether a session's POST may be read here first: a JSON body of a known length under the
        limit, from a client that names its protocol version and accepts both reply types (anything
        else goes to the SDK as is)."""
        request = Request(scope)
        headers = request.headers
        if headers.get("mcp-protocol-version") not in HANDSHAKE_PROTOCOL_VERSIONS:
            return False  # the version the client negotiated is the exchange's (absent: the SDK knows it)
        length = headers.get("content-length", "")
        if not length.isdigit() or int(length) > self.max_body_bytes:
            return False
        if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            return False
        return all(check_accept_headers(request))

    async def _exchange(self, session_id: str, envelope: Envelope, scope: Scope, receive: Receive, send: Send) -> None:
        """A `tools/call` is served as one exchange; anything else goes on to the SDK (a
        `notifications/cancelled` first cancels the exchange it names)."""
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before its request was whole
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        request = Exchanges.request_of(body)
        if request is not None:
            await self.exchanges.serve(session_id, request, envelope, scope, send)
            return
        self.exchanges.cancelled(session_id, body)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self._handle(scope, replay, send, True)

    # --- ending sessions --------------------------------------------------------------------------

    def _ended(self, session_id: str) -> None:
        self.exchanges.end_session(session_id)
        if self.sessions.ended(session_id) is None:
            return
        try:
            self.app.connection_closed(http_session_owner(session_id))
        except Exception:
            logger.exception("ending HTTP session %s failed", session_id[:16])

    async def end_session(self, session_id: str) -> None:
        """End a session as its client would (a DELETE through the manager), then purge its runs."""
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "DELETE",
            "scheme": "http",
            "path": MCP_PATH,
            "raw_path": MCP_PATH.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"127.0.0.1"), (MCP_SESSION_ID_HEADER.encode(), session_id.encode())],
            "client": ("127.0.0.1", 0),
            "server": ("127.0.0.1", 0),
        }

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Message) -> None:
            return None

        try:
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_TIMEOUT_S):
                await self.manager.handle_request(scope, receive, send)
        finally:
            self._ended(session_id)

    async def end_all_sessions(self) -> None:
        for session_id in self.sessions.ids():
            await self.end_session(session_id)

    async def sweep_idle_sessions(self) -> None:
        """End sessions idle for `http_session_idle_s`; sleeps until the next one is due."""
        while True:
            due = self.sessions.next_expiry()
            await anyio.sleep(max(0.0, due - time.monotonic()) if due is not None else self.sessions.idle_s)
            for session_id in self.sessions.expired():
                logger.info("HTTP session %s idle: ending it", session_id[:16])
                await self.end_session(session_id)


def _hypercorn_config(listener: CappedListener, settings: Any) -> Any:
    from hypercorn.config import Config, Sockets  # HTTP transport only

    class _Config(Config):
        def create_sockets(self) -> Sockets:
            """Our listening socket (its `accept()` holds the connection cap), not one from `bind`."""
            return Sockets(secure_sockets=[], insecure_sockets=[listener], quic_sockets=[])

    config = _Config()
    config.keep_alive_timeout = settings.http_idle_timeout_s
    config.graceful_timeout = SHUTDOWN_TIMEOUT_S
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logger
    config.h11_max_incomplete_size = 64 * 1024
    return config


@contextlib.asynccontextmanager
async def http_server(
    app: CodeToolsServer, host: str | None = None, port: int | None = None
) -> AsyncIterator[NetworkEndpoint]:
    """Serve Streamable HTTP while the block runs; `port=0` binds a free port (`BindError` if taken).

    On exit every HTTP session is ended (runs purged), hypercorn stops (bounded), then the runtime
    closes, which ends every child process.
    """
    from hypercorn.asyncio import serve  # HTTP transport only

    async with listening(app, host, port) as listener:
        connections = ConnectionLedger(app.settings.max_http_connections)
        front = HttpFront(app, listener.door, connections)
        config = _hypercorn_config(CappedListener(os.dup(listener.sock.fileno()), connections), app.settings)
        stop = anyio.Event()
        served = anyio.Event()

        async def run_hypercorn() -> None:
            try:
                await serve(front, config, shutdown_trigger=stop.wait, mode="asgi")  # type: ignore[arg-type]
            finally:
                served.set()

        async with front.manager.run(), anyio.create_task_group() as tg:
            tg.start_soon(run_hypercorn)
            tg.start_soon(front.sweep_idle_sessions)
            tg.start_soon(front.exchanges.keep_alive)
            try:
                yield listener.endpoint("http")
            finally:
                with anyio.CancelScope(shield=True):
                    await front.end_all_sessions()
                    stop.set()
                    with anyio.move_on_after(SHUTDOWN_TIMEOUT_S + 5):
                        await served.wait()
                tg.cancel_scope.cancel()


async def serve_http(app: CodeToolsServer) -> None:
    """`--transport http`: serve until SIGTERM or SIGINT, then shut down cleanly."""
    await serve_until_stopped(http_server, app, logger)
