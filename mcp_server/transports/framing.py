"""One JSON-RPC message per frame: decoding a text frame, and the error answer to a bad one.

Pure functions, no I/O. The SDK's transports drop what they cannot parse, which leaves a client
waiting on the id of a malformed request forever; ours (a WebSocket frame, a stdio line) answer it,
as JSON-RPC 2.0 asks: a parse error (-32700)
for text that is not JSON, an invalid request (-32600) for JSON that is not a message (an array,
a number, an object without the envelope). The answer carries the request's id when one can be
read and sent back (a string id with a lone surrogate cannot be: UTF-8 has no encoding for it), else
`null`. Details of our validators never reach the wire.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as types
from mcp.shared.message import SessionMessage


def encode_message(message: SessionMessage) -> str:
    return message.message.model_dump_json(by_alias=True, exclude_unset=True)


def error_frame(code: int, message: str, request_id: str | int | None = None) -> str:
    error = types.JSONRPCError(jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message))
    return error.model_dump_json(by_alias=True, exclude_unset=True)


def _usable_id(value: Any) -> str | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        # JSON may escape a lone surrogate ("\\udc80"): Python's parser reads it, but no answer can
        # carry it (UTF-8 cannot encode it; the SDK's parser refused the message for that reason).
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
        return value
    if isinstance(value, int):
        return value
    return None


def decode_frame(text: str) -> SessionMessage | str:
    """A message for the session, or the serialized error to send back instead."""
    try:
        return SessionMessage(types.jsonrpc_message_adapter.validate_json(text, by_name=False))
    except Exception:  # pydantic's ValidationError, or anything its JSON parser raises
        pass
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return error_frame(types.PARSE_ERROR, "Parse error: the frame is not valid JSON")
    if not isinstance(data, dict):
        return error_frame(
            types.INVALID_REQUEST, "Invalid Request: a message must be one JSON object (batches are not supported)"
        )
    # A request's id, even a malformed request's; never the id of what looks like a response.
    request_id = _usable_id(data.get("id")) if "method" in data else None
    return error_frame(types.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message", request_id)


BINARY_FRAME_ERROR = error_frame(
    types.INVALID_REQUEST, "Invalid Request: binary frames are not supported; send each message as one text frame"
)
