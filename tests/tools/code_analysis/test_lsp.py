"""LSP base-protocol framing, without I/O; and the connection over a real pipe pair in memory."""

from __future__ import annotations

import json

import anyio
import pytest

from tools.code_analysis.lsp import (
    LinterGone,
    LspConnection,
    LspError,
    LspProtocolError,
    LspTooLarge,
    MessageDecoder,
    Oversized,
    RawBody,
    encode_message,
)


def test_decoder_reassembles_messages_split_anywhere() -> None:
    data = encode_message({"id": 1, "result": "é"}) + encode_message({"method": "x", "params": [1]})
    for cut in range(len(data) + 1):
        decoder = MessageDecoder()
        assert decoder.feed(data[:cut]) + decoder.feed(data[cut:]) == [
            {"id": 1, "result": "é"},
            {"method": "x", "params": [1]},
        ]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"Content-Type: x\r\n\r\n{}", "without Content-Length"),
        (b"Content-Length: abc\r\n\r\n", "bad Content-Length"),
        (b"garbage\r\n\r\n", "malformed LSP header"),
        (b"Content-Length: 2\r\n\r\n[]", "not a JSON object"),
        (b"Content-Length: 3\r\n\r\n{x}", "not JSON"),
        (b"Content-Length: 999999999\r\n\r\n", "over the"),
        (b"x" * 9000, "header too long"),
    ],
)
def test_decoder_refuses_broken_frames(data: bytes, problem: str) -> None:
    with pytest.raises(LspProtocolError, match=problem):
        MessageDecoder(max_bytes=1024 * 1024).feed(data)


class _Wire:
    """The server side of an in-memory byte pipe pair."""

    def __init__(self) -> None:
        self.to_client_send, self.to_client_recv = anyio.create_memory_object_stream[bytes](16)
        self.to_server_send, self.to_server_recv = anyio.create_memory_object_stream[bytes](16)


@pytest.mark.anyio
async def test_connection_matches_replies_answers_server_requests_and_fails_pending_on_close() -> None:
    wire = _Wire()
    conn = LspConnection(_Sender(wire.to_server_send), _Receiver(wire.to_client_recv))
    decoder = MessageDecoder()
    results: list[object] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)

            async def ask(method: str) -> None:
                try:
                    results.append(await conn.request(method, {}, timeout_s=5))
                except (LspError, LinterGone) as exc:
                    results.append(type(exc).__name__)

            tg.start_soon(ask, "one")
            tg.start_soon(ask, "two")
            sent = []
            while len(sent) < 2:
                sent += decoder.feed(await wire.to_server_recv.receive())
            by_method = {m["method"]: m["id"] for m in sent}
            await wire.to_client_send.send(
                encode_message({"id": by_method["two"], "error": {"code": -1, "message": "no"}})
            )
            await wire.to_client_send.send(encode_message({"id": 99, "method": "window/workDoneProgress/create"}))
            reply = []
            while not reply:
                reply += decoder.feed(await wire.to_server_recv.receive())
            assert reply[0]["id"] == 99 and reply[0]["error"]["code"] == -32601
            await wire.to_client_send.send(encode_message({"id": by_method["one"], "result": {"ok": True}}))
            tg.start_soon(ask, "three")
            await wire.to_server_recv.receive()
            await wire.to_client_send.aclose()  # the server goes away with "three" pending
    assert sorted(map(json.dumps, results)) == sorted(map(json.dumps, [{"ok": True}, "LspError", "LinterGone"]))
    assert conn.closed.is_set()
    with pytest.raises(LinterGone):
        await conn.notify("x", {})


class _Sender(anyio.abc.ByteSendStream):
    def __init__(self, stream: anyio.abc.ObjectSendStream[bytes]) -> None:
        self._stream = stream

    async def send(self, item: bytes) -> None:
        await self._stream.send(item)

    async def send_eof(self) -> None:
        await self._stream.aclose()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _Receiver(anyio.abc.ByteReceiveStream):
    def __init__(self, stream: anyio.abc.ObjectReceiveStream[bytes]) -> None:
        self._stream = stream

    async def receive(self, max_bytes: int = 65536) -> bytes:
        return await self._stream.receive()

    async def aclose(self) -> None:
        await self._stream.aclose()


def test_decoder_skips_oversized_messages_without_buffering_them() -> None:
    big = encode_message({"id": 1, "result": "x" * 5000})
    small = encode_message({"id": 2, "result": "ok"})
    for cut in (10, 100, len(big) - 1, len(big), len(big) + 5):
        decoder = MessageDecoder(max_bytes=1000, skip_oversized=True, inline_max=10)
        data = big + small
        out = decoder.feed(data[:cut]) + decoder.feed(data[cut:])
        assert isinstance(out[0], Oversized) and out[0].length > 5000
        assert len(decoder._buffer) < 1000  # never held whole
        assert out[1:] == [RawBody(small[small.index(b"{") :])]  # over inline_max: parsed by the caller


@pytest.mark.anyio
async def test_an_oversized_answer_fails_its_request_and_the_connection_lives_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 11 item 2: a huge diagnostics answer was a protocol error that killed the server (or was
    parsed whole on the event loop); now it fails the request (the caller uses the CLI) and the
    next request is answered, a big body parsed in a worker thread."""
    from tools.code_analysis import lsp

    monkeypatch.setattr(lsp, "INLINE_PARSE_BYTES", 100)  # the second answer is "big": parsed in a thread
    wire = _Wire()
    conn = LspConnection(_Sender(wire.to_server_send), _Receiver(wire.to_client_recv), max_bytes=2000)
    decoder = MessageDecoder()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(conn.run)

            async def serve() -> None:
                first = decoder.feed(await wire.to_server_recv.receive())[0]
                await wire.to_client_send.send(encode_message({"id": first["id"], "result": "x" * 10_000}))
                second = decoder.feed(await wire.to_server_recv.receive())[0]
                await wire.to_client_send.send(encode_message({"id": second["id"], "result": ["y" * 100] * 15}))

            tg.start_soon(serve)
            with pytest.raises(LspTooLarge):
                await conn.request("textDocument/diagnostic", {}, timeout_s=5)
            assert not conn.closed.is_set()
            assert await conn.request("textDocument/diagnostic", {}, timeout_s=5) == ["y" * 100] * 15
            tg.cancel_scope.cancel()
