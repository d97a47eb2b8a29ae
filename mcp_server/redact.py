"""Streaming redaction of secrets in process output.

`StreamRedactor.feed()` takes chunks as they arrive and returns the text that is safe to pass on,
holding back a short tail in which a secret could still be starting: a secret split across two
chunks is redacted all the same. `flush()` releases the rest at the end of the stream.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

REDACTED = "[REDACTED]"

_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|PASS|API_?KEY|PRIVATE|CREDENTIAL|AUTH|SESSION)", re.I)
_MIN_SECRET_LEN = 6

# Shapes of common tokens. Each must end at a bounded width so the hold-back window is bounded.
_TOKEN_PATTERNS = [
    r"ghp_[A-Za-z0-9]{36}",
    r"gh[ousr]_[A-Za-z0-9]{36}",
    r"github_pat_[A-Za-z0-9_]{22,255}",
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",
    r"xox[baprs]-[A-Za-z0-9-]{10,200}",
    r"sk-[A-Za-z0-9_-]{20,200}",
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,4096}",
    r"(?i:password|passwd|pwd|secret|token|api_key|apikey)\s*[=:]\s*[^\s'\"&,;]{1,512}",
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
]
# A private key block can be long; everything else is short. A block still open at the window's
# edge is held back until it closes (or the stream ends).
_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
_HOLD = 4096 + 64


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
        if found and re.fullmatch(r"\s*(?i:password|passwd|pwd|secret|token|api_key|apikey)\s*", head):
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
    """Incremental redaction over a stream of text chunks."""

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._pending = ""
        self._hold = max(_HOLD, redactor.max_literal + 64)

    def feed(self, chunk: str) -> str:
        text = self._pending + chunk
        if len(text) <= self._hold:
            self._pending = text
            return ""
        redacted = self._redactor.redact(text)
        # Hold back the tail where a secret may be incomplete; cut at a safe boundary (the last
        # newline before the window if there is one), never in the middle of a replacement.
        cut = len(redacted) - self._hold
        open_key = None
        for match in _KEY_BEGIN.finditer(redacted):
            open_key = match
        if open_key is not None and "-----END" not in redacted[open_key.end() :]:
            cut = min(cut, open_key.start())
        newline = redacted.rfind("\n", 0, cut)
        if newline >= 0:
            cut = newline + 1
        idx = redacted.rfind(REDACTED, 0, cut + len(REDACTED))
        if idx >= 0 and idx < cut < idx + len(REDACTED):
            cut = idx
        out, self._pending = redacted[:cut], redacted[cut:]
        return out

    def flush(self) -> str:
        out = self._redactor.redact(self._pending)
        self._pending = ""
        return out
