"""Who is calling: the connection a request arrived on, and the owner of the runs it makes.

Stream transports (stdio, WebSocket, in-memory) set `current_connection` before they serve, so
every handler of that connection sees it. Over HTTP the transport cannot do that (the SDK's
session manager runs the loop); the owner comes from the request's session id or token instead.
"""

from __future__ import annotations

import hashlib
import ipaddress
import itertools
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

_counter = itertools.count(1)


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    id: str
    owner: str | None
    transport: str
    client: str = "local"
    """Connection-cap identity: a token hash, or the peer address."""
    bucket: str | None = None
    """The rate-limit bucket when it is not the client's own (see `rate_limit_bucket`)."""

    @property
    def rate_limit_key(self) -> str:
        return self.bucket or self.client


def is_loopback_client(client: str) -> bool:
    """A client known only by a loopback peer address (no token names it)."""
    if not client.startswith("ip:"):
        return False
    try:
        address = ipaddress.ip_address(client[3:])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def rate_limit_bucket(client: str, connection_key: str) -> str | None:
    """Every local process reaches us from the same loopback address: without a token they would
    share one bucket, and one busy local client would starve the others. A loopback client's bucket
    is its connection (WebSocket) or session (HTTP) instead; how many of those one client holds is
    capped (`max_connections_per_client`), so its total budget stays bounded."""
    return connection_key if is_loopback_client(client) else None


current_connection: ContextVar[ConnectionInfo | None] = ContextVar("mcp_code_tools_connection", default=None)


def new_connection(transport: str, client: str = "local") -> ConnectionInfo:
    n = next(_counter)
    cid = f"{transport}-{n}"
    return ConnectionInfo(
        id=cid, owner=cid, transport=transport, client=client, bucket=rate_limit_bucket(client, f"conn:{cid}")
    )


def token_identity(token: str) -> str:
    return "token:" + hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def http_session_owner(session_id: str) -> str:
    return f"http-session:{session_id}"


CONNECTION_STATE_KEY = "mcp_code_tools.connection"
"""Where the HTTP transport attaches a request's `ConnectionInfo` (the ASGI scope's `state`)."""


def http_connection(session_id: str | None, client: str) -> ConnectionInfo:
    """The connection of an HTTP request: its session, or (sessionless, the 2026 era) its token,
    or nobody (a run then belongs to whoever holds its run_id)."""
    if session_id:
        owner = http_session_owner(session_id)
        bucket = rate_limit_bucket(client, owner)
        return ConnectionInfo(id=f"http-{session_id[:12]}", owner=owner, transport="http", client=client, bucket=bucket)
    sessionless_owner = client if client.startswith("token:") else None
    return ConnectionInfo(id="http-sessionless", owner=sessionless_owner, transport="http", client=client)


def connection_for_request(request: Any | None, *, trust_bearer: bool = False) -> ConnectionInfo:
    """The connection of an inbound request, as its transport attached it.

    Every transport attaches one: stream transports (stdio, WebSocket, in-memory) set
    `current_connection` for the whole connection; the HTTP transport puts one in each request's
    scope state (`CONNECTION_STATE_KEY`). Without either (the SDK's HTTP app embedded without our
    front door) it is derived from the headers, where `trust_bearer` says whether the server checks
    a token: only then does a bearer token name the client.
    """
    info = current_connection.get()
    if info is not None:
        return info
    scope = getattr(request, "scope", None)
    state = scope.get("state") if isinstance(scope, dict) else None
    attached = state.get(CONNECTION_STATE_KEY) if isinstance(state, dict) else None
    if isinstance(attached, ConnectionInfo):
        return attached
    headers = getattr(request, "headers", None)
    if headers is None:
        return ConnectionInfo(id="inproc", owner="inproc", transport="inproc")
    client_host = getattr(getattr(request, "client", None), "host", None) or "unknown"
    auth = headers.get("authorization", "")
    bearer = auth[:7].lower() == "bearer " and auth[7:].strip()
    client = token_identity(auth[7:].strip()) if trust_bearer and bearer else f"ip:{client_host}"
    return http_connection(headers.get("mcp-session-id"), client)
