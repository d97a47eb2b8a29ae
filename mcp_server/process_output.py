"""Output collection: one output stream of a child process, decoded and kept up to a limit.

Raw by default (a machine-readable channel is parsed as is: ruff's JSON, the LSP stream, the test
worker's events); with a `Redactor`, redacted as it arrives (a secret split across two reads is
still one secret). What leaves the server is redacted at egress either way.
"""

from __future__ import annotations

import codecs
import contextlib
from collections.abc import Callable

import anyio
import anyio.abc

from mcp_server.redact import Redactor


class OutputCollector:
    """One output stream of a child: decoded, redacted as it arrives (unless `redactor` is None:
    a machine-readable channel is parsed raw), kept up to `max_chars`."""

    def __init__(self, redactor: Redactor | None, max_chars: int, on_text: Callable[[str], None] | None = None) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._redact = redactor.stream() if redactor is not None else None
        self._max = max_chars
        self._on_text = on_text
        self._parts: list[str] = []
        self._kept = 0
        self.bytes = 0
        self.truncated = False
        self._finished = False

    def _emit(self, text: str) -> None:
        if not text:
            return
        room = self._max - self._kept
        if len(text) > room:
            self.truncated = True
        if room > 0:
            self._parts.append(text[:room])
            self._kept += min(room, len(text))
        if self._on_text is not None:
            self._on_text(text)

    def feed(self, chunk: bytes) -> None:
        self.bytes += len(chunk)
        text = self._decoder.decode(chunk)
        self._emit(self._redact.feed(text) if self._redact is not None else text)

    async def pump(self, stream: anyio.abc.ByteReceiveStream | None) -> None:
        """Feed everything `stream` yields until EOF. Safe to cancel: nothing fed is lost."""
        if stream is None:
            return
        with contextlib.suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            async for chunk in stream:
                self.feed(chunk)

    def finish(self) -> None:
        """End of stream: release what redaction held back."""
        if self._finished:
            return
        self._finished = True
        text = self._decoder.decode(b"", final=True)
        if self._redact is None:
            self._emit(text)
            return
        self._emit(self._redact.feed(text))
        self._emit(self._redact.flush())

    def text(self) -> str:
        return "".join(self._parts)
