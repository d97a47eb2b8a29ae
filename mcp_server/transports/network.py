"""What the network transports (WebSocket, Streamable HTTP) share: the door, the health endpoints,
the listening socket, the endpoint and the stop signal.

Each transport turns the door's answers (`Door`: pure rules, no I/O) into its own wire answers (a
`websockets` response before the upgrade, an ASGI response on HTTP), and starts from `listening()`
(bind, runtime, readiness probe, door) and `serve_until_stopped()` (the CLI's serve-until-signal).

- **Admission** (`NetPolicy`): token 401, Origin 403, Host 421, connections per client 429.
- **Health**: `GET /healthz` (liveness, constant) and `GET /readyz` (the cached readiness probe).
  Both follow the Host rule of the MCP endpoint (a rebound name gets 421). On a server that checks a
  token, `/readyz` without a valid token answers its status only: the details (roots, interpreter
  paths, PIDs, counters) are for the operator.
- **Listening**: the socket is bound before anything else starts, so a port in use is one line on
  stderr naming host and port, and exit status 2 (`BindError`).
- **Stop**: SIGTERM or SIGINT ends the server; the transport's context manager closes connections,
  ends sessions (runs purged) and then the runtime (every child process reaped).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio

from mcp_server.health import LIVENESS, ReadinessMonitor
from mcp_server.netpolicy import HeaderLookup, NetPolicy, Refusal
from mcp_server.server import CodeToolsServer

MCP_PATH = "/mcp"
HEALTH_PATHS = ("/healthz", "/readyz")
NO_STORE = (("Cache-Control", "no-store"),)


@dataclass(frozen=True)
class NetworkEndpoint:
    """Where a network server listens."""

    scheme: str
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def url(self) -> str:
        return self.base_url + MCP_PATH


class BindError(SystemExit):
    """The listening socket could not be bound; the message is one line naming host and port.

    A `SystemExit` (status 2, like a bad setting): nothing has started yet, so there is nothing to
    clean up, and no task group turns it into a traceback on the way out.
    """

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(2)
        self.message = f"mcp-code-tools: cannot listen on {host}:{port}: {reason}"


def bind(host: str, port: int) -> socket.socket:
    """A listening, non-blocking TCP socket on `host:port` (`port=0`: a free one)."""
    name = host.strip("[]")
    family = socket.AF_INET6 if ":" in name else socket.AF_INET
    try:
        sock = socket.create_server((name, port), family=family, backlog=128)
    except OSError as exc:
        raise BindError(host, port, os.strerror(exc.errno) if exc.errno else str(exc)) from None
    # Accepted connections inherit TCP_NODELAY from the listener. asyncio sets it only on sockets
    # whose proto is IPPROTO_TCP, and socket.create_server's is 0: without this, a response written
    # in two pieces (a WebSocket frame, an SSE event) waits for the peer's delayed ACK, 40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock


@dataclass(frozen=True)
class HealthAnswer:
    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = NO_STORE


class Door:
    """The admission and health rules of one network server, free of I/O."""

    def __init__(self, policy: NetPolicy, readiness: ReadinessMonitor) -> None:
        self.policy = policy
        self.readiness = readiness

    def health(self, path: str, headers: HeaderLookup) -> HealthAnswer | None:
        """The answer to a health request, or None when `path` is not a health endpoint."""
        if path not in HEALTH_PATHS:
            return None
        refusal = self.policy.check_host(headers)
        if refusal is not None:
            return self.refused(refusal)
        if path == "/healthz":
            return HealthAnswer(200, dict(LIVENESS))
        current = self.readiness.current
        if self.policy.token_required and not self.policy.token_valid(headers):
            return HealthAnswer(current.status_code, {"status": current.body.get("status", "not ready")})
        return HealthAnswer(current.status_code, current.body)

    def admit(self, headers: HeaderLookup) -> Refusal | None:
        """Token, Origin, Host for the MCP endpoint; None when the request may go on."""
        return self.policy.check(headers)

    def client(self, headers: HeaderLookup, peer: str | None) -> str:
        return self.policy.client_identity(headers, peer)

    @staticmethod
    def refused(refusal: Refusal) -> HealthAnswer:
        return HealthAnswer(refusal.status, {"error": refusal.message}, NO_STORE + refusal.headers)

    @staticmethod
    def not_found() -> HealthAnswer:
        return HealthAnswer(404, {"error": f"not found: the MCP endpoint is {MCP_PATH}"})


@dataclass(frozen=True)
class Listening:
    """A bound socket, with the runtime open and the door built: what a network server starts from."""

    sock: socket.socket
    host: str
    door: Door

    def endpoint(self, scheme: str) -> NetworkEndpoint:
        return NetworkEndpoint(scheme, self.host, int(self.sock.getsockname()[1]))


@asynccontextmanager
async def listening(app: CodeToolsServer, host: str | None, port: int | None) -> AsyncIterator[Listening]:
    """Bind first (`BindError` before anything starts), then the runtime and the readiness probe.
    On exit the runtime closes (every child process ends), then the socket."""
    settings = app.settings
    host = host if host is not None else settings.host
    port = port if port is not None else settings.effective_port
    sock = bind(host, port)
    try:
        async with app.running():
            assert app.app.task_group is not None
            readiness = ReadinessMonitor(app.app, settings.readiness_interval_s)
            await readiness.start(app.app.task_group)
            yield Listening(sock, host, Door(NetPolicy(settings), readiness))
    finally:
        sock.close()


ServerFactory = Callable[[CodeToolsServer], AbstractAsyncContextManager[NetworkEndpoint]]


async def serve_until_stopped(server: ServerFactory, app: CodeToolsServer, logger: logging.Logger) -> None:
    """`--transport websocket|http`: serve until SIGTERM or SIGINT, then shut down cleanly. A port
    in use is one line on stderr and exit status 2."""
    try:
        async with server(app) as endpoint:
            print(f"mcp-code-tools: listening on {endpoint.url}", file=sys.stderr, flush=True)
            signum = await wait_for_stop_signal()
            logger.info("signal %d: shutting down", signum)
    except BindError as exc:
        print(exc.message, file=sys.stderr, flush=True)
        raise


async def wait_for_stop_signal() -> int:
    """Return the number of the first SIGTERM or SIGINT received. Safe to cancel."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            return int(signum)
    raise RuntimeError("signal receiver ended")  # pragma: no cover - the iterator never ends
