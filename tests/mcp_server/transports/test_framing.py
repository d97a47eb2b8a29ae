"""Decoding one frame into a message, or into the JSON-RPC error that answers it."""

from __future__ import annotations

import json

import mcp_types as types
import pytest
from mcp.shared.message import SessionMessage

from mcp_server.transports.framing import BINARY_FRAME_ERROR, decode_frame, encode_message


def test_a_valid_message_round_trips() -> None:
    text = '{"jsonrpc": "2.0", "id": 3, "method": "ping"}'
    decoded = decode_frame(text)
    assert isinstance(decoded, SessionMessage)
    assert isinstance(decoded.message, types.JSONRPCRequest) and decoded.message.id == 3
    assert json.loads(encode_message(decoded)) == {"jsonrpc": "2.0", "id": 3, "method": "ping"}


@pytest.mark.parametrize(
    ("frame", "code", "request_id"),
    [
        ("", -32700, None),
        ("{", -32700, None),
        ("nul\x00l", -32700, None),
        ("[" * 50_000 + "]" * 50_000, -32700, None),  # too deep for the parser
        ("[]", -32600, None),
        ('[{"jsonrpc": "2.0", "id": 1, "method": "ping"}]', -32600, None),  # batches are gone
        ("null", -32600, None),
        ("3.5", -32600, None),
        ('{"jsonrpc": "2.0", "id": "abc", "method": "x", "params": 5}', -32600, "abc"),
        ('{"jsonrpc": "2.0", "id": 4}', -32600, None),  # neither result nor error
        ('{"id": 5, "method": "ping"}', -32600, 5),
        ('{"jsonrpc": "2.0", "id": 6, "method": 5}', -32600, 6),  # a malformed request keeps its id
        ('{"jsonrpc": "1.0", "id": 7, "method": "ping"}', -32600, 7),
        ('{"jsonrpc": "2.0", "id": 8, "result": 1, "error": {}}', -32600, None),  # never a response's id
        # A lone surrogate: JSON can escape it, UTF-8 cannot carry it back (the error itself failed to
        # serialize: the stdio reader thread died, a WebSocket connection closed with 1011; found by the fuzz)
        ('{"jsonrpc": "2.0", "id": "\\udc80", "method": "ping"}', -32600, None),
        ('{"jsonrpc": "2.0", "id": 9, "method": "ping", "params": {"x": "\\udc80"}}', -32600, 9),
    ],
)
def test_bad_frames_become_errors(frame: str, code: int, request_id: str | int | None) -> None:
    decoded = decode_frame(frame)
    assert isinstance(decoded, str)
    error = json.loads(decoded)
    assert error["jsonrpc"] == "2.0" and error["id"] == request_id and error["error"]["code"] == code
    assert "pydantic" not in decoded.lower() and "validation error" not in decoded.lower()


def test_the_binary_frame_error() -> None:
    error = json.loads(BINARY_FRAME_ERROR)
    assert error["id"] is None and error["error"]["code"] == -32600 and "text frame" in error["error"]["message"]


@pytest.mark.parametrize("bad_id", ["true", "[1]", "1.5", "null"])
def test_a_request_with_an_unusable_id_is_a_notification_to_the_sdk(bad_id: str) -> None:
    """The SDK's envelope parser (our oracle, as on stdio) reads it as a notification: no answer."""
    decoded = decode_frame(f'{{"jsonrpc": "2.0", "id": {bad_id}, "method": "ping"}}')
    assert isinstance(decoded, SessionMessage) and isinstance(decoded.message, types.JSONRPCNotification)
