"""A handshake-era POST whose first event is its own response is answered `application/json`.

In the 2025-11-25 era the SDK's session transport answers every request POST with an SSE stream
(`text/event-stream`: the head, then one event per message, then the end of the chunked body), so
that notifications tied to the request (progress, logging) can travel before the response. Most
requests send none: the stream holds just the response. The SDK chooses JSON or SSE only for a whole
session manager, and its JSON mode drops every notification tied to a request.

`PlainReply` decides per request, on the wire, as the SDK's own 2026-07-28 entry does: the SSE head
is held until the stream's first event. If that event is the response to the request, the reply goes
out as `application/json` with a `content-length` (same headers otherwise, the session id included),
complete at once: the client does not wait for the SDK to wind the stream down, and the end of the
chunked body is not needed. Anything else first (a progress or log notification, a request to the
client, the SDK's keep-alive ping after 15 s, a priming event, the stream ending with no event)
commits the reply to SSE exactly as the SDK wrote it. What the SDK sends after a JSON reply (the
stream's end) is dropped. The spec lets a server answer a POST with either type; clients of this
era must accept both.

Recognising the response needs no parse of the (maybe large) result: the event is one `data:` line
that starts with the JSON-RPC envelope of a response or an error (`{"jsonrpc":"2.0","id":...,
"result"` or `"error"`), in the SDK's compact serialisation. An event in another shape is streamed
as SSE, as before (correct, only not faster).
"""

from __future__ import annotations

import re

from starlette.types import Message, Send

_SSE = b"text/event-stream"
_DROPPED_HEADERS = frozenset({b"content-type", b"content-length", b"transfer-encoding", b"x-accel-buffering"})
_FRAMES = (
    (b"event: message\r\ndata: ", b"\r\n\r\n"),
    (b"event: message\ndata: ", b"\n\n"),
    (b"data: ", b"\r\n\r\n"),
    (b"data: ", b"\n\n"),
)
_RESPONSE_HEAD = re.compile(rb'\{"jsonrpc":"2\.0","id":(?:-?\d+|"(?:[^"\\]|\\.)*"),"(?:result|error)":')


def response_of(chunk: bytes) -> bytes | None:
    """The JSON of `chunk` when it is exactly one SSE event that carries a JSON-RPC response."""
    for start, end in _FRAMES:
        if chunk.startswith(start) and chunk.endswith(end):
            data = chunk[len(start) : -len(end)]
            break
    else:
        return None
    if b"\n" in data or b"\r" in data or _RESPONSE_HEAD.match(data) is None:
        return None
    return data


def _json_head(head: Message, length: int) -> Message:
    headers = [(name, value) for name, value in head.get("headers", []) if name.lower() not in _DROPPED_HEADERS]
    headers += [(b"content-type", b"application/json"), (b"content-length", str(length).encode())]
    return {**head, "headers": headers}


def _is_sse(head: Message) -> bool:
    for name, value in head.get("headers", []):
        if name.lower() == b"content-type":
            return bytes(value).startswith(_SSE)
    return False


class PlainReply:
    """`send` for one POST: an SSE reply whose first event is its response goes out as JSON (module doc)."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self._held: Message | None = None
        self._decided = False
        self._done = False
        self.plain = False
        """Whether the reply went out as JSON."""

    async def __call__(self, message: Message) -> None:
        if self._done:
            return  # the SSE stream's end, after the JSON reply
        if self._decided:
            await self.send(message)
            return
        if self._held is None:
            if message["type"] == "http.response.start" and message.get("status") == 200 and _is_sse(message):
                self._held = message  # until the first event says which kind of reply this is
                return
            self._decided = True
            await self.send(message)
            return
        if message["type"] == "http.response.body" and message.get("more_body", False):
            data = response_of(bytes(message.get("body", b"")))
            if data is not None:
                self._decided = self._done = self.plain = True
                await self.send(_json_head(self._held, len(data)))
                await self.send({"type": "http.response.body", "body": data, "more_body": False})
                return
        await self._commit()
        await self.send(message)

    async def _commit(self) -> None:
        held, self._held = self._held, None
        self._decided = True
        if held is not None:
            await self.send(held)

    async def close(self) -> None:
        """The SDK is done with the request: a head still held (nothing followed it) goes out."""
        if not self._decided:
            await self._commit()
