"""Streaming redaction of secrets in process output.

`StreamRedactor.feed()` takes chunks as they arrive and returns the text that is safe to pass on,
holding back a short tail in which a secret could still be starting: a secret split across two
chunks is redacted all the same. `flush()` releases the rest at the end of the stream. Feeding
any chunking of a text gives exactly what `Redactor.redact()` gives for the whole text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

REDACTED = "[REDACTED]"

_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|PASS|API_?KEY|PRIVATE|CREDENTIAL|AUTH|SESSION)", re.I)
_MIN_SECRET_LEN = 6

# Shapes of common tokens. Every part has a bounded width, so what a secret may still become
# is decided within a bounded window; a private key block is redacted up to the end of the text
# when its END line never comes (a key cut off mid-print is still a key).
_TOKEN_PATTERNS = [
    r"ghp_[A-Za-z0-9]{36}",
    r"gh[ousr]_[A-Za-z0-9]{36}",
    r"github_pat_[A-Za-z0-9_]{22,255}",
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",
    r"xox[baprs]-[A-Za-z0-9-]{10,200}",
    r"sk-[A-Za-z0-9_-]{20,200}",
    r"(?i:bearer)[ \t]{1,16}[A-Za-z0-9._~+/=-]{8,4096}",
    r"(?i:password|passwd|pwd|secret|token|api_key|apikey)[ \t]{0,16}[=:][ \t]{0,16}[^\s'\"&,;]{1,512}",
    r"-----BEGIN [A-Z ]{0,64}PRIVATE KEY-----[\s\S]{0,65536}?(?:-----END [A-Z ]{0,64}PRIVATE KEY-----|\Z)",
]
# Held back at the end of a stream: longer than any prefix of a token shape that does not match
# yet. (A match that runs into the end of the window is held back from its start, see `feed`.)
_HOLD = 4096 + 64
# When the cut can move back to a line end within this distance, it does: readable live output.
_LINE_SLACK = 1024


def secret_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of secret-looking variables in `environ` (default: this process's environment)."""
    environ = os.environ if environ is None else environ
    values = {v for k, v in environ.items() if _SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def build_pattern(values: Iterable[str]) -> re.Pattern[str]:
    literal = [re.escape(v) for v in sorted(set(values), key=len, reverse=True) if len(v) >= _MIN_SECRET_LEN]
    return re.compile("|".join(literal + _TOKEN_PATTERNS))


def _keep_group(match: re.Match[str]) -> str:
    text = match.group(0)
    # Keep the key name of `password=...` and the scheme of `Bearer ...` so logs stay readable.
    for sep in ("=", ":"):
        head, found, _ = text.partition(sep)
        if found and re.fullmatch(r"[ \t]*(?i:password|passwd|pwd|secret|token|api_key|apikey)[ \t]*", head):
            return f"{head}{sep}{REDACTED}"
    if text[:6].lower() == "bearer":
        return f"{text.split()[0]} {REDACTED}"
    return REDACTED


class Redactor:
    """Whole-text redaction with a fixed set of secret values plus the common token shapes."""

    def __init__(self, values: Iterable[str] | None = None) -> None:
        self.values = list(values) if values is not None else secret_values()
        self.pattern = build_pattern(self.values)
        self.max_literal = max((len(v) for v in self.values), default=0)

    def redact(self, text: str) -> str:
        return self.pattern.sub(_keep_group, text)

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


class StreamRedactor:
    """Incremental redaction over a stream of text chunks.

    The pending text is scanned again only once another `hold` characters have arrived, so the
    work stays linear in the output even when a long match (a key block) keeps text held back.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._parts: list[str] = []
        self._size = 0
        self._hold = max(_HOLD, redactor.max_literal + 64)
        self._next_scan = 2 * self._hold

    @property
    def pending(self) -> int:
        """Characters held back, not yet released."""
        return self._size

    def feed(self, chunk: str) -> str:
        """The redacted text that is final now; the rest waits for more input or `flush()`."""
        self._parts.append(chunk)
        self._size += len(chunk)
        if self._size < self._next_scan:
            return ""
        text = "".join(self._parts)
        cut = len(text) - self._hold
        newline = text.rfind("\n", max(0, cut - _LINE_SLACK), cut)
        if newline >= 0:
            cut = newline + 1
        # Matches wholly before the cut are final: text after the cut cannot change them (every
        # shape is bounded, or ends at a fixed marker). A match reaching past the cut may still
        # grow, so the cut moves back to its start.
        out: list[str] = []
        pos = 0
        for match in self._redactor.pattern.finditer(text):
            if match.end() > cut:
                cut = min(cut, match.start())
                break
            out.append(text[pos : match.start()])
            out.append(_keep_group(match))
            pos = match.end()
        out.append(text[pos:cut])
        rest = text[cut:]
        self._parts = [rest]
        self._size = len(rest)
        self._next_scan = self._size + self._hold
        return "".join(out)

    def flush(self) -> str:
        out = self._redactor.redact("".join(self._parts))
        self._parts = []
        self._size = 0
        self._next_scan = 2 * self._hold
        return out
