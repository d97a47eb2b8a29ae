"""The HTTP port's TCP connections: a cap on how many are open, and replies sent in one piece.

hypercorn has no connection limit of its own. It serves the sockets `Config.create_sockets()` gives
it, and asyncio takes each new connection by calling that listening socket's `accept()`. So the
listening socket we hand it is a `CappedListener`: its `accept()` counts what is open in a
`ConnectionLedger` and, at `max_http_connections`, answers the newcomer `503` and closes it at
once (it never reaches hypercorn or the app). Each accepted connection is a `TrackedConnection`,
released from the ledger when it closes or its peer ends the stream, so room comes back as soon
as a client leaves; hypercorn closes idle and slowloris connections after `http_idle_timeout_s`.
(hypercorn keeps the socket of a client that has gone, in CLOSE_WAIT, until that same idle timer:
those are not counted, as they hold no client, only a descriptor for at most that long.)

The ledger also finds a request's connection by its peer address (the ASGI scope's `client`), so
the front can cork it (`TCP_CORK`) while a reply is written: hypercorn writes the head, each body
chunk and the end of a chunked body in separate `send` calls, and with `TCP_NODELAY` each would be
a packet of its own and a wake-up of the client. Corked, a reply that is written at once (a
trivial call's whole SSE stream: head, one event, end) leaves in one packet. A reply still
streaming (progress) is uncorked after `CORK_MAX_S`, and each later chunk leaves at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from typing import Any

logger = logging.getLogger("mcp_server.http")

CORK_MAX_S = 0.002
"""The longest a reply's first bytes wait for the rest of it (the kernel's own ceiling is 200 ms)."""

_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)
PeerKey = tuple[str, int]


def _peer_key(address: Any) -> PeerKey | None:
    if isinstance(address, list | tuple) and len(address) >= 2:
        return (str(address[0]), int(address[1]))
    return None


def refusal_bytes(cap: int) -> bytes:
    """The whole answer to a connection over the cap: 503, JSON, and the connection closes."""
    body = (
        json.dumps({"error": f"too many connections: the server holds {cap} (setting max_http_connections)"}) + "\n"
    ).encode("utf-8")
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncache-control: no-store\r\n"
        f"retry-after: 1\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    ).encode("ascii")
    return head + body


class ConnectionLedger:
    """The open connections of one HTTP port, by peer address: pure bookkeeping, no I/O."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._open: dict[PeerKey, TrackedConnection] = {}
        self._count = 0
        self.sockets = 0
        """Sockets not yet closed, those of clients that have gone included (not capped: hypercorn
        closes them at its idle timer, and a client that opens and drops connections in a loop makes
        them faster than that)."""
        self.refused = 0

    def __len__(self) -> int:
        return self._count

    def has_room(self) -> bool:
        return self._count < self.cap

    def opened(self, key: PeerKey | None, connection: TrackedConnection) -> None:
        self._count += 1
        self.sockets += 1
        if key is not None:
            self._open[key] = connection

    def closed(self, key: PeerKey | None, connection: TrackedConnection) -> None:
        self._count -= 1
        if key is not None and self._open.get(key) is connection:
            del self._open[key]

    def for_peer(self, address: Any) -> TrackedConnection | None:
        key = _peer_key(address)
        return self._open.get(key) if key is not None else None


class TrackedConnection(socket.socket):
    """An accepted connection that leaves the ledger (once) when it closes or its peer has closed
    (hypercorn closes such a socket only at its idle timeout: a gone client does not hold a place
    that long), and can be corked."""

    def __init__(self, conn: socket.socket, key: PeerKey | None, ledger: ConnectionLedger) -> None:
        super().__init__(conn.family, conn.type, conn.proto, fileno=conn.detach())
        self._key = key
        self._ledger: ConnectionLedger | None = ledger
        """Set while the connection counts as open (until it closes or its peer ends the stream)."""
        self._socket_ledger: ConnectionLedger | None = ledger
        """Set until the socket closes."""
        self._corked = False
        ledger.opened(key, self)

    def _release(self) -> None:
        ledger, self._ledger = self._ledger, None
        if ledger is not None:
            ledger.closed(self._key, self)

    def close(self) -> None:
        self._release()
        ledger, self._socket_ledger = self._socket_ledger, None
        if ledger is not None:
            ledger.sockets -= 1
        super().close()

    # asyncio's transport reads through these: an empty read is the peer's end of the stream.
    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data = super().recv(bufsize, flags)
        if not data and bufsize:
            self._release()
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        count = super().recv_into(buffer, nbytes, flags)
        if count == 0 and (nbytes or len(buffer)):
            self._release()
        return count

    def cork(self) -> None:
        """Hold what is written until `uncork` (or the kernel's ceiling); no-op off Linux."""
        if _TCP_CORK is not None and not self._corked and self._ledger is not None:
            try:
                self.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
                self._corked = True
            except OSError:
                pass

    def uncork(self) -> None:
        """Send what `cork` held, now; safe to call twice or after the connection closed."""
        if self._corked:
            self._corked = False
            if self.fileno() != -1:
                with contextlib.suppress(OSError):
                    self.setsockopt(socket.IPPROTO_TCP, _TCP_CORK or 0, 0)


class CappedListener(socket.socket):
    """The listening socket hypercorn serves: `accept()` admits at most `ledger.cap` open connections.

    A connection over the cap is answered 503 and closed inside `accept()`, which then takes the
    next pending one (or raises `BlockingIOError` when none is left, as a non-blocking accept does).
    """

    def __init__(self, fd: int, ledger: ConnectionLedger) -> None:
        super().__init__(fileno=fd)
        self.setblocking(False)
        self.ledger = ledger
        self._refusal = refusal_bytes(ledger.cap)

    def accept(self) -> tuple[socket.socket, Any]:
        while True:
            conn, address = super().accept()  # BlockingIOError when nothing is pending
            if self.ledger.has_room():
                return TrackedConnection(conn, _peer_key(address), self.ledger), address
            self._refuse(conn)

    def _refuse(self, conn: socket.socket) -> None:
        self.ledger.refused += 1
        if self.ledger.refused == 1 or self.ledger.refused % 1000 == 0:
            logger.warning(
                "HTTP connection refused: %d open, the cap (setting max_http_connections); %d refused so far",
                len(self.ledger),
                self.ledger.refused,
            )
        try:
            conn.setblocking(False)
            conn.send(self._refusal)  # a fresh socket's send buffer takes these few hundred bytes
            conn.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        finally:
            conn.close()


class CorkedReply:
    """Cork a connection for one reply: from its head until its last body chunk (or `CORK_MAX_S`)."""

    def __init__(self, connection: TrackedConnection) -> None:
        self.connection = connection
        self._timer: asyncio.TimerHandle | None = None

    def started(self) -> None:
        self.connection.cork()
        self._timer = asyncio.get_running_loop().call_later(CORK_MAX_S, self.connection.uncork)

    def finished(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.connection.uncork()
