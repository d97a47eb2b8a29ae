"""Who may connect to a network transport: token, Origin, Host, and connections per client.

Shared by the WebSocket and HTTP transports, and free of I/O: each transport hands in the request's
headers and peer address and turns a `Refusal` into its own wire answer (an HTTP response before the
WebSocket upgrade; a plain HTTP response on Streamable HTTP).

- **Token**: when `MCP_CODE_TOOLS_TOKEN` is set, every connection must send `Authorization: Bearer
  <token>`, loopback included; it is compared in constant time (`hmac.compare_digest`). Missing or
  wrong is 401. (A non-loopback bind without a token never starts: see `cli.py`.)
- **Origin**: absent is accepted (a non-browser client). Present, it must match the allow-list:
  loopback origins when the server binds loopback, plus the `allowed_origins` setting. Otherwise 403:
  a browser page on another site (or a DNS-rebound name) may not drive the server.
- **Host**: on a loopback bind, the Host header must name a loopback address (DNS-rebinding defence:
  a rebound name reaches 127.0.0.1 with the attacker's host name). Otherwise 421.
- **Connections per client**: a client (its token, or its address) holds at most
  `max_connections_per_client` connections at once; more is 429.
"""

from __future__ import annotations

import hmac
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from mcp_server.config import Settings, env_name
from mcp_server.connections import token_identity

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class HeaderLookup(Protocol):
    """Case-insensitive header access: `websockets` and Starlette headers both fit."""

    def get(self, key: str, /) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a connection is refused, as an HTTP status and a one-line message."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


def loopback_origins() -> tuple[str, ...]:
    """Origins of pages served from this machine: any port, http or https."""
    return tuple(
        f"{scheme}://{name}{port}" for scheme in ("http", "https") for name in LOOPBACK_NAMES for port in ("", ":*")
    )


def origin_allowed(origin: str, patterns: tuple[str, ...]) -> bool:
    """Exact match, or `scheme://host:*` for any port of that host (the SDK's pattern syntax)."""
    for pattern in patterns:
        if origin == pattern:
            return True
        if pattern.endswith(":*"):
            base = pattern[:-2]
            if origin.startswith(base + ":") and origin[len(base) + 1 :].isdigit():
                return True
    return False


def host_is_loopback(host: str) -> bool:
    """A Host header naming a loopback address, with or without a port."""
    if host.startswith("["):
        name = host[: host.find("]") + 1]
    else:
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    return name.lower() in LOOPBACK_NAMES


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class ConnectionCounter:
    """Open connections per client, against a cap. Not thread-safe: one event loop owns it."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: Counter[str] = Counter()

    def count(self, client: str) -> int:
        return self._open[client]

    def has_room(self, client: str) -> bool:
        return self._open[client] < self.cap

    def try_acquire(self, client: str) -> bool:
        if self._open[client] >= self.cap:
            return False
        self._open[client] += 1
        return True

    def release(self, client: str) -> None:
        self._open[client] -= 1
        if self._open[client] <= 0:
            del self._open[client]


class NetPolicy:
    """The admission policy of one server, built from its settings."""

    def __init__(self, settings: Settings) -> None:
        self._token = settings.token.get_secret_value().encode("utf-8") if settings.token is not None else None
        self.loopback_bind = settings.is_loopback
        self.origins: tuple[str, ...] = (loopback_origins() if self.loopback_bind else ()) + tuple(
            settings.allowed_origins
        )
        self.connections = ConnectionCounter(settings.max_connections_per_client)
        self.token_required = self._token is not None

    def client_identity(self, headers: HeaderLookup, peer: str | None) -> str:
        """The rate-limit and connection-cap identity: the token's hash, else the peer address."""
        token = bearer_token(headers.get("authorization"))
        if token is not None and self._token is not None:
            return token_identity(token)
        return f"ip:{peer or 'unknown'}"

    def token_valid(self, headers: HeaderLookup) -> bool:
        """Whether the request carries the server's token (constant-time); False when none is set."""
        presented = bearer_token(headers.get("authorization"))
        if self._token is None or presented is None:
            return False
        return hmac.compare_digest(presented.encode("utf-8"), self._token)

    def check(self, headers: HeaderLookup, *, check_host: bool = True) -> Refusal | None:
        """Token, then Origin, then Host; None when the request may go on."""
        if self._token is not None and not self.token_valid(headers):
            why = "missing" if bearer_token(headers.get("authorization")) is None else "wrong"
            return Refusal(
                401,
                f"unauthorized: {why} bearer token (send Authorization: Bearer <{env_name('token')}>)",
                (("WWW-Authenticate", 'Bearer realm="mcp-code-tools"'),),
            )
        origin = headers.get("origin")
        if origin and not origin_allowed(origin, self.origins):
            return Refusal(403, f"forbidden: Origin {origin[:200]!r} is not allowed (setting allowed_origins)")
        return self.check_host(headers) if check_host else None

    def check_host(self, headers: HeaderLookup) -> Refusal | None:
        """On a loopback bind, the Host header must name a loopback address (DNS-rebinding defence)."""
        if self.loopback_bind:
            host = headers.get("host") or ""
            if not host_is_loopback(host):
                return Refusal(421, f"misdirected: Host {host[:200]!r} is not a loopback name")
        return None

    def too_many(self, client: str) -> Refusal:
        return Refusal(
            429,
            f"too many connections: this client already has {self.connections.count(client)} open "
            f"(setting max_connections_per_client)",
        )
