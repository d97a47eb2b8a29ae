"""Redaction of secrets in everything that leaves the server.

`Redactor.redact()` rewrites a text; `redact_value()` rewrites every string of a JSON-like value
(keys included) without changing its shape or types. `StreamRedactor.feed()` takes chunks as they
arrive and returns the text that is safe to pass on, holding back a short tail in which a secret
could still be starting: feeding any chunking of a text gives exactly what `redact()` gives for
the whole text. `RedactingFilter` does the same for log records.

What is a secret: the values of secret-looking variables of the server's environment, the shapes
of common tokens (GitHub, AWS, Slack, OpenAI-style keys, JWTs, bearer tokens), private key
blocks (to their END line, or to the end of the text when it never comes), and values assigned to
a secret-looking name (password, token, secret, api key, private key, credential) in any of the
forms: quoted after `=` or `:` (Python, JSON, repr, TOML, YAML), or bare after `NAME=` in upper
case (environment style). Values have no length limit. A bare value after a lower-case name is
taken when it holds a digit or a symbol and is not code (a call, a dotted name, a short number, a
template); a bare word (`password=correcthorse`, `passwd: hunter`) only after `=` with no space
and before a space, `&`, `;`, a quote or the line's end, or after `:` as the rest of the line, and
never a word that looks secret itself, a type name or a constant: keyword arguments passing a
variable (`f(token=token)`), annotations (`password: str`) and prose are left alone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_NAME = re.compile(r"(SECRET|TOKEN|PASSWORD|PASSWD|PASS|API_?KEY|PRIVATE|CREDENTIAL|AUTH|SESSION)", re.I)
_MIN_SECRET_LEN = 6

# A secret-looking name: matched from its keyword on (what precedes the keyword is left as it is,
# so `AWS_SECRET_ACCESS_KEY` and `SECRET_ACCESS_KEY` give the same output).
_NAME = r"(?i:secret|token|passw(?:or)?d|pwd|api[_-]?key|apikey|private[_-]?key|credential)[A-Za-z0-9_-]{0,64}"
_UPPER_NAME = r"(?:SECRET|TOKEN|PASSWORD|PASSWD|API_?KEY|PRIVATE_?KEY|CREDENTIAL)[A-Z0-9_]{0,64}"
_SEP = r"\\?[\"']?[ \t]{0,16}(?::=|=>|[=:])[ \t]{0,16}"
_BARE = r"[^\s'\"\\`&,;()\[\]{}<>]"
_SYMBOLIC = r"[^A-Za-z_.\s'\"\\`&,;()\[\]{}<>]"
# Bare values that are code or placeholders, not secrets: a call, a dotted name, a short number,
# a template (`%s`, `$VAR`), a comment.
_NOT_SECRET = (
    r"(?![A-Za-z_][\w.]{0,128}\()"
    r"(?![A-Za-z_]\w{0,64}(?:\.[A-Za-z_]\w{0,64}){1,8}(?![\w.\-/+=:@~]))"
    r"(?!-?[0-9_]{1,6}(?![\w.\-/+=:@~]))"
    r"(?![%$#=*:])"
)
# A bare alphabetic value (`password=correcthorse`, `passwd: hunter`) is taken only where code
# rarely puts one: right after `=` (no space) and before a space, `&`, `;`, a quote or the end of
# the line (a keyword argument goes on with `,` or `)`), or after `:` as the whole rest of the line
# (an annotation or prose goes on); never a word that itself looks secret (`token=token`,
# `password=password`), a type name or a constant, a permission (`id-token: write`, `secrets: inherit`).
_WORD_NAME = r"(?i:secret|token|passw(?:or)?d|pwd|api[_-]?key|apikey|private[_-]?key|credential)s?"
_NOT_WORD = (
    r"(?![A-Za-z]*(?i:secret|token|passw|pwd|key|cred|auth))"
    r"(?!(?i:str|bytes|int|float|bool|dict|list|tuple|set|none|null|nil|true|false|optional|required|string"
    r"|number|boolean|integer|object|any|self|cls|undefined|read|write|inherit)(?![A-Za-z]))"
)
_NOT_TYPE = r"(?![A-Z][a-z]+[A-Z])"  # after `:`, a CamelCase word is a type (`tokens: ParseResults`)
_WORD = r"[A-Za-z]{4,256}"
_END_KEY = re.compile(r"-----END [A-Z ]{0,64}PRIVATE KEY-----")
_BEGIN_KEY = re.compile(r"-----BEGIN [A-Z ]{0,64}PRIVATE KEY-----")
_HUNK = re.compile(r"(?m)^(?=@@ |--- [^\n]*\n\+\+\+ )")  # a hunk, or the next file's header
WITHHELD = "[hunk withheld: it holds a private key]"


def _is_diff(text: str) -> bool:
    return text.startswith(("--- ", "diff ")) and "\n+++ " in text and "\n@@ " in text


# Each alternative carries one named group: `k_*` groups are kept (a name and its separator, or
# the `Bearer ` scheme) and the rest of the match is replaced; `z_*` groups only say which kind
# matched. Kinds in `_OPEN` have no length limit: a match of theirs that is still growing at the
# end of a stream's buffer is replaced at once and the rest of it swallowed as it arrives.
_PATTERNS = [
    r"(?P<z_key>)-----BEGIN [A-Z ]{0,64}PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]{0,64}PRIVATE KEY-----|\Z)",
    r"ghp_[A-Za-z0-9]{36}",
    r"gh[ousr]_[A-Za-z0-9]{36}",
    r"(?P<z_word>)github_pat_[A-Za-z0-9_]{22,}",
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",
    r"(?P<z_dash>)xox[baprs]-[A-Za-z0-9-]{10,}",
    r"(?P<z_dash2>)sk-(?=[A-Za-z0-9_-]{0,64}?[0-9])[A-Za-z0-9_-]{20,}",
    r"(?P<z_jwt>)eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
    r"(?P<k_bearer>(?i:bearer)[ \t]{1,16})(?=[A-Za-z0-9._~+/=-]{0,256}?[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,}",
    rf"(?P<k_dq>{_NAME}{_SEP}\\?\")(?![\s,;)\]}}])(?:[^\"\\\n]|\\.)+",
    rf"(?P<k_sq>{_NAME}{_SEP}\\?')(?![\s,;)\]}}])(?:[^'\\\n]|\\.)+",
    rf"(?P<k_env>{_UPPER_NAME}=)[^\s'\"&;]+",
    rf"(?P<k_bare>{_NAME}{_SEP}){_NOT_SECRET}(?={_BARE}{{0,256}}?{_SYMBOLIC}){_BARE}+",
    rf"(?P<k_weq>{_WORD_NAME}=){_NOT_WORD}{_WORD}(?=[ \t&;'\"]|\r?\n|\Z)",
    rf"(?P<k_wcol>{_WORD_NAME}[ \t]{{0,16}}:[ \t]{{0,16}}){_NOT_WORD}{_NOT_TYPE}{_WORD}(?=[ \t]{{0,16}}(?:\r?\n|\Z))",
]
# What continues a match of an open kind (matched at the start of the next text).
_OPEN = {
    "z_word": re.compile(r"[A-Za-z0-9_]*"),
    "z_dash": re.compile(r"[A-Za-z0-9-]*"),
    "z_dash2": re.compile(r"[A-Za-z0-9_-]*"),
    "z_jwt": re.compile(r"[A-Za-z0-9_-]*"),
    "k_bearer": re.compile(r"[A-Za-z0-9._~+/=-]*"),
    "k_dq": re.compile(r"(?:[^\"\\\n]|\\.)*"),
    "k_sq": re.compile(r"(?:[^'\\\n]|\\.)*"),
    "k_env": re.compile(r"[^\s'\"&;]*"),
    "k_bare": re.compile(rf"{_BARE}*"),
}
_ESCAPING = ("k_dq", "k_sq")
_KEY_TAIL = 96  # longer than any END line: what is kept to find one split across chunks

# Held back at the end of a stream: longer than any prefix of a shape that does not match yet.
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
    return re.compile("|".join(literal + _PATTERNS))


def _replacement(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind is not None and kind.startswith("k_"):
        return match.group(kind) + REDACTED
    return REDACTED


def _is_open(match: re.Match[str]) -> bool:
    """A match that more text could extend: an unbounded kind, or a key block with no END yet."""
    kind = match.lastgroup
    if kind == "z_key":
        return _END_KEY.search(match.group(0)) is None
    return kind in _OPEN


# Every match starts with one of these (case-insensitively), or with a secret value: matches
# are only tried where one is found (the fast path: a few `str.find` passes and one anchored
# match per hit, instead of the whole alternation at every character).
_TRIGGERS: tuple[str, ...] = ("secret", "token", "passw", "pwd", "api", "private", "credential", "bearer")
_TRIGGERS += ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "akia", "asia", "xox", "sk-", "eyj")
_TRIGGERS += ("-----begin",)


CLEAN_MEMO_CHARS = 128
CLEAN_MEMO_ENTRIES = 16_384


class Redactor:
    """Redaction with a fixed set of secret values plus the shapes above."""

    def __init__(self, values: Iterable[str] | None = None) -> None:
        self.values = list(values) if values is not None else secret_values()
        self.pattern = build_pattern(self.values)
        self.max_literal = max((len(v) for v in self.values), default=0)
        self._literals = sorted({v.lower() for v in self.values if len(v) >= _MIN_SECRET_LEN})
        self._clean: set[str] = set()
        """Short texts found to hold no secret: a result's keys and short values recur (every
        diagnostic has the same keys; codes, messages and paths repeat), and the pattern is fixed,
        so a text clean once is clean for good. Bounded: cleared when full."""
        self.redactions = 0
        """Secrets hidden so far (text already redacted is not counted again)."""

    def finditer(self, text: str) -> Iterator[re.Match[str]]:
        """The matches of `pattern` in `text`, in order: exactly `pattern.finditer(text)`, faster.

        Every alternative of the pattern begins with a trigger (or is a secret value), so a match
        can only start where one is found: the pattern is tried there, anchored, left to right.
        """
        low = text.lower()
        if len(low) != len(text):  # a character whose lower case is longer: positions differ
            yield from self.pattern.finditer(text)
            return
        starts: list[int] = []
        for trigger in (*_TRIGGERS, *self._literals):
            i = low.find(trigger)
            while i >= 0:
                starts.append(i)
                i = low.find(trigger, i + 1)
        if not starts:
            return
        starts.sort()
        pos = 0
        match = self.pattern.match
        for i in starts:
            if i < pos:
                continue
            found = match(text, i)
            if found is not None:
                yield found
                pos = found.end()

    def replace(self, match: re.Match[str]) -> str:
        """The replacement of one match; a secret newly hidden is counted in `redactions`."""
        replacement = _replacement(match)
        if replacement != match.group(0):
            self.redactions += 1
        return replacement

    def redact(self, text: str) -> str:
        short = len(text) <= CLEAN_MEMO_CHARS
        if short and text in self._clean:
            return text
        out: list[str] = []
        pos = 0
        for match in self.finditer(text):
            out.append(text[pos : match.start()])
            out.append(self.replace(match))
            pos = match.end()
        if not pos:
            if short:
                if len(self._clean) >= CLEAN_MEMO_ENTRIES:
                    self._clean.clear()
                self._clean.add(text)
            return text
        out.append(text[pos:])
        return "".join(out)

    def redact_string(self, text: str) -> str:
        """`redact()`, but a unified diff holding a private key has the hunks from its BEGIN to its
        END line withheld (with a note) rather than cut across lines: both sides stay alike."""
        if "-----BEGIN" not in text or not _is_diff(text):
            return self.redact(text)
        parts = _HUNK.split(text)
        out = [self.redact(parts[0])]
        inside = False
        for hunk in parts[1:]:
            if not hunk.startswith("@@"):  # the next file of a multi-file diff
                inside = False
                out.append(self.redact(hunk))
                continue
            begins = [m.end() for m in _BEGIN_KEY.finditer(hunk)]
            ends = [m.end() for m in _END_KEY.finditer(hunk)]
            if inside or begins:
                header = hunk.split("\n", 1)[0]
                out.append(f"{self.redact(header)}\n {WITHHELD}\n")
                inside = not ends or (bool(begins) and max(begins) > max(ends))
            else:
                out.append(self.redact(hunk))
        return "".join(out)

    def redact_value(self, value: Any) -> Any:
        """Every string in `value` (dict keys too) redacted; lists, dicts and scalars keep their types."""
        if isinstance(value, str):
            return self.redact_string(value)
        if isinstance(value, dict):
            return {(self.redact(k) if isinstance(k, str) else k): self.redact_value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact_value(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self.redact_value(v) for v in value)
        return value

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


_process_redactor: Redactor | None = None


def process_redactor() -> Redactor:
    """The redactor of this server process (the last one installed, else one from the environment)."""
    global _process_redactor
    if _process_redactor is None:
        _process_redactor = Redactor()
    return _process_redactor


def install(redactor: Redactor) -> None:
    """Make `redactor` the process's: run logs and `RedactingFilter` use it."""
    global _process_redactor
    _process_redactor = redactor


class RedactingFilter(logging.Filter):
    """Redacts a log record's message (arguments merged) and its exception text before any handler."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self._redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        redactor = self._redactor or process_redactor()
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to the handler's own error path
            return True
        record.msg = redactor.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redactor.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redactor.redact(record.stack_info)
        return True


def install_log_filter(handlers: Iterable[logging.Handler] | None = None) -> None:
    """Add a `RedactingFilter` to `handlers` (default: the root logger's handlers)."""
    for handler in handlers if handlers is not None else logging.getLogger().handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


class StreamRedactor:
    """Incremental redaction over a stream of text chunks.

    The pending text is scanned again only once another `hold` characters have arrived, so the
    work stays linear in the output. A match of unbounded length (a key block without its END
    line, a very long value) that reaches the end of the pending text after the hold-back window
    is replaced at once; what follows of it is swallowed as it arrives, keeping memory bounded.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._parts: list[str] = []
        self._size = 0
        self._hold = max(_HOLD, redactor.max_literal + 64)
        self._next_scan = 2 * self._hold
        self._open: str | None = None  # the kind of the match being swallowed
        self._carry = ""  # an escape's backslash, or the tail where an END line may start

    @property
    def pending(self) -> int:
        """Characters held back, not yet released."""
        return self._size + len(self._carry)

    def _swallow(self, chunk: str) -> str | None:
        """Consume the continuation of the open match; the text after it, or None if it goes on."""
        kind = self._open
        assert kind is not None
        text = self._carry + chunk
        self._carry = ""
        if kind == "z_key":
            end = _END_KEY.search(text)
            if end is None:
                self._carry = text[-_KEY_TAIL:]
                return None
            self._open = None
            return text[end.end() :]
        cont = _OPEN[kind].match(text)
        stop = cont.end() if cont else 0
        if stop == len(text):
            return None
        if kind in _ESCAPING and stop == len(text) - 1 and text[-1] == "\\":
            self._carry = "\\"
            return None
        self._open = None
        return text[stop:]

    def feed(self, chunk: str) -> str:
        """The redacted text that is final now; the rest waits for more input or `flush()`."""
        if self._open is not None:
            rest = self._swallow(chunk)
            if rest is None:
                return ""
            chunk = rest
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
        # bounded shape fits in the hold-back window). A match reaching past the cut may still
        # grow, so the cut moves back to its start, unless it is an unbounded one that already
        # started before the cut and runs to the end: that one is replaced now and swallowed on.
        out: list[str] = []
        pos = 0
        rest = ""
        for match in self._redactor.finditer(text):
            if match.end() > cut:
                if match.end() == len(text) and match.start() < cut and _is_open(match):
                    out.append(text[pos : match.start()])
                    out.append(self._redactor.replace(match))
                    pos = cut = len(text)
                    self._open = match.lastgroup
                    if self._open == "z_key":
                        self._carry = text[-_KEY_TAIL:]
                    break
                cut = min(cut, match.start())
                break
            out.append(text[pos : match.start()])
            out.append(self._redactor.replace(match))
            pos = match.end()
        out.append(text[pos:cut])
        rest = text[cut:]
        self._parts = [rest] if rest else []
        self._size = len(rest)
        self._next_scan = self._size + self._hold
        return "".join(out)

    def _end_of_open(self) -> str:
        """At the end of the text, what is left of an open match: a lone backslash after a quoted
        value is not part of it (as in the whole text); a key block's tail is."""
        return self._carry if self._open in _ESCAPING else ""

    def flush(self) -> str:
        out = self._end_of_open() if self._open is not None else self._redactor.redact("".join(self._parts))
        self._parts = []
        self._size = 0
        self._next_scan = 2 * self._hold
        self._open = None
        self._carry = ""
        return out

    @property
    def swallowing(self) -> bool:
        """Inside an unbounded match that is replaced already: what comes next is still part of it."""
        return self._open is not None

    def take_pending(self) -> str:
        """End the stream without redacting what it holds back: that raw text, for a caller that
        redacts it later together with what follows (not while `swallowing`)."""
        assert self._open is None
        out = "".join(self._parts)
        self._parts = []
        self._size = 0
        self._next_scan = 2 * self._hold
        return out

    def peek(self) -> str:
        """What `flush()` would release now, without ending the stream."""
        return self._end_of_open() if self._open is not None else self._redactor.redact("".join(self._parts))
