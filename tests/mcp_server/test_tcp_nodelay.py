"""The listening socket of the network transports gives every accepted connection TCP_NODELAY.

asyncio sets TCP_NODELAY only on sockets whose `proto` is IPPROTO_TCP, and `socket.create_server`
makes proto-0 sockets: without the option on the listener, a reply written in two pieces (a
WebSocket frame header and its payload, an SSE event) waited for the client's delayed ACK, 40 ms a
round trip on a kept-alive connection (the issue's 44 ms; a fresh connection is in quick-ack mode).
"""

from __future__ import annotations

import socket

from mcp_server.transports.network import bind


def test_accepted_connections_have_nodelay() -> None:
    listener = bind("127.0.0.1", 0)
    try:
        listener.setblocking(True)
        listener.settimeout(10)
        with socket.create_connection(listener.getsockname()[:2], timeout=10):
            accepted, _ = listener.accept()
            with accepted:
                assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        listener.close()
