"""Streamable HTTP: the SDK's transport at `http://HOST:PORT/mcp`, `/healthz` and `/readyz` beside it.

The app is the SDK's Streamable HTTP app, assembled here rather than by `Server.streamable_http_app()`
for one reason: the session manager must tell us when an HTTP session ends (client DELETE, idle
timeout, crash, shutdown) so that the session's runs are purged and their work cancelled, and the
SDK has no hook for that but `_discard_session`, which a small subclass extends. Everything else is
the SDK's: sessions, both protocol eras, SSE, the request body limit (`max_message_bytes`, 413), and
the DNS-rebinding check (`TransportSecuritySettings`: Host and Origin).

In front of it, `NetPolicy` admits each request to `/mcp` (token 401, Origin 403, Host 421) and caps
a client's open sessions plus its in-flight session-less requests at `max_connections_per_client`
(429). Served by uvicorn inside the caller's event loop; the runtime (`app.running()`) is the SDK
server's lifespan, and re-entrant, so the process-wide runtime is the one the caller holds.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import anyio
import uvicorn
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER, StreamableHTTPServerTransport
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp, StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_server.connections import http_session_owner
from mcp_server.health import LIVENESS, ReadinessMonitor
from mcp_server.netpolicy import LOOPBACK_NAMES, NetPolicy, Refusal
from mcp_server.server import CodeToolsServer
from mcp_server.transports.shutdown import wait_for_stop_signal

logger = logging.getLogger("mcp_server.http")

MCP_PATH = "/mcp"
SHUTDOWN_TIMEOUT_S = 10


class SessionEndingManager(StreamableHTTPSessionManager):
    """The SDK's session manager, reporting each session's end (once) to `on_session_end`."""

    def __init__(self, *args: Any, on_session_end: Callable[[str], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_session_end = on_session_end

    async def _discard_session(self, session_id: str, transport: StreamableHTTPServerTransport) -> None:
        known = session_id in self._server_instances
        await super()._discard_session(session_id, transport)
        if known:
            try:
                self._on_session_end(session_id)
            except Exception:
                logger.exception("ending HTTP session %s failed", session_id[:16])

    async def end_all_sessions(self) -> None:
        """Terminate every open session (shutdown): their SSE streams close, their runs go."""
        for session_id, transport in list(self._server_instances.items()):
            await self._discard_session(session_id, transport)


class PolicyMiddleware:
    """Admission of requests to the MCP endpoint; health endpoints and lifespan pass through."""

    def __init__(self, app: ASGIApp, policy: NetPolicy) -> None:
        self.app = app
        self.policy = policy
        self._session_clients: dict[str, str] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].rstrip("/") != MCP_PATH:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        refusal = self.policy.check(headers)
        if refusal is not None:
            await _refusal_response(refusal)(scope, receive, send)
            return
        if headers.get(MCP_SESSION_ID_HEADER):
            await self.app(scope, receive, send)  # a request of an admitted session
            return
        peer = scope.get("client")
        client = self.policy.client_identity(headers, peer[0] if peer else None)
        if not self.policy.connections.try_acquire(client):
            await _refusal_response(self.policy.too_many(client))(scope, receive, send)
            return
        held = True

        async def watch(message: Message) -> None:
            nonlocal held
            if message["type"] == "http.response.start" and message["status"] < 400:
                session_id = Headers(raw=message.get("headers", [])).get(MCP_SESSION_ID_HEADER)
                if session_id:  # the slot now belongs to the session, until it ends
                    self._session_clients[session_id] = client
                    held = False
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            if held:
                self.policy.connections.release(client)

    def session_ended(self, session_id: str) -> None:
        client = self._session_clients.pop(session_id, None)
        if client is not None:
            self.policy.connections.release(client)


class DateHeader:
    """The HTTP `Date` header on every response (uvicorn's own comes from the timer we do not run)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def dated(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"date", formatdate(usegmt=True).encode("ascii")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, dated)


def _refusal_response(refusal: Refusal) -> Response:
    return JSONResponse({"error": refusal.message}, status_code=refusal.status, headers=dict(refusal.headers))


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


@dataclass(frozen=True)
class HttpApp:
    asgi: ASGIApp
    sessions: SessionEndingManager


def build_http_app(app: CodeToolsServer, policy: NetPolicy, readiness: ReadinessMonitor) -> HttpApp:
    """The ASGI app: admission, then the SDK's Streamable HTTP endpoint, and the health routes."""

    def on_session_end(session_id: str) -> None:
        app.connection_closed(http_session_owner(session_id))
        middleware.session_ended(session_id)

    manager = SessionEndingManager(
        app.server,
        security_settings=_security_settings(policy),
        max_request_body_size=app.settings.max_message_bytes,
        session_idle_timeout=app.settings.http_session_idle_s,
        on_session_end=on_session_end,
    )

    async def healthz(request: Request) -> Response:
        return JSONResponse(LIVENESS, headers={"Cache-Control": "no-store"})

    async def readyz(request: Request) -> Response:
        current = readiness.current
        return JSONResponse(current.body, status_code=current.status_code, headers={"Cache-Control": "no-store"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        async with manager.run():
            try:
                yield
            finally:
                await manager.end_all_sessions()

    starlette = Starlette(
        routes=[
            Route(MCP_PATH, endpoint=StreamableHTTPASGIApp(manager)),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    middleware = PolicyMiddleware(starlette, policy)
    return HttpApp(DateHeader(middleware), manager)


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn inside our event loop: we own the signals, we learn when it listens, and it does not
    poll. (uvicorn's main loop wakes every 0.1 s to look at `should_exit` and refresh the Date header;
    in a shared event loop that keeps a task runnable ten times a second, which starves
    `wait_all_tasks_blocked` in tests. We wait on an event, and `DateHeader` stamps responses.)"""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.listening = anyio.Event()
        self._exit = anyio.Event()

    def request_exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        await self.on_tick(0)
        await self._exit.wait()

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        finally:
            self.listening.set()


@dataclass(frozen=True)
class HttpEndpoint:
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + MCP_PATH


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.create_server((host.strip("[]"), port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def http_server(
    app: CodeToolsServer, host: str | None = None, port: int | None = None
) -> AsyncIterator[HttpEndpoint]:
    """Serve Streamable HTTP while the block runs; `port=0` binds a free port.

    On exit every HTTP session is ended (runs purged), uvicorn stops (bounded), then the runtime
    closes, which ends every child process.
    """
    settings = app.settings
    host = host if host is not None else settings.host
    port = port if port is not None else settings.effective_port
    async with app.running():
        assert app.app.task_group is not None
        readiness = ReadinessMonitor(app.app, settings.readiness_interval_s)
        await readiness.start(app.app.task_group)
        http_app = build_http_app(app, NetPolicy(settings), readiness)
        sock = _bind(host, port)
        config = uvicorn.Config(
            http_app.asgi,
            lifespan="on",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=False,
            proxy_headers=False,
            ws="none",
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
            timeout_keep_alive=5,
        )
        server = _EmbeddedUvicorn(config)
        stopped = anyio.Event()

        async def run() -> None:
            try:
                await server.serve(sockets=[sock])
            finally:
                stopped.set()
                server.listening.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run)
            await server.listening.wait()
            if not server.started:
                raise RuntimeError("the HTTP server did not start (see the log above)")
            try:
                yield HttpEndpoint(host=host, port=int(sock.getsockname()[1]))
            finally:
                with anyio.CancelScope(shield=True):
                    await http_app.sessions.end_all_sessions()
                    server.request_exit()
                    with anyio.move_on_after(SHUTDOWN_TIMEOUT_S + 5):
                        await stopped.wait()
                tg.cancel_scope.cancel()


async def serve_http(app: CodeToolsServer) -> None:
    """`--transport http`: serve until SIGTERM or SIGINT, then shut down cleanly."""
    async with http_server(app) as endpoint:
        print(f"mcp-code-tools: listening on {endpoint.url}", file=sys.stderr, flush=True)
        signum = await wait_for_stop_signal()
        logger.info("signal %d: shutting down", signum)
