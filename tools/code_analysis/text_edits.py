"""Pure text helpers: LSP positions to string offsets, applying edits, unified diffs.

LSP lines end at `\\n`, `\\r\\n` or `\\r` (not at the other characters `str.splitlines` knows), and
a position's `character` counts code units of the negotiated encoding. Columns in our results are
1-based code points, as `ruff check` reports them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

PositionEncoding = Literal["utf-8", "utf-16", "utf-32"]

_NEWLINE = re.compile(r"\r\n|\r|\n")
NO_NEWLINE = "\\ No newline at end of file\n"


def line_starts(text: str) -> list[int]:
    """Offsets at which each line begins (LSP line breaks only)."""
    return [0, *(m.end() for m in _NEWLINE.finditer(text))]


def _line(text: str, starts: Sequence[int], line: int) -> str:
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    return text[starts[line] : end].rstrip("\r\n")


def units_to_chars(line_text: str, units: int, encoding: PositionEncoding) -> int:
    """How many code points of `line_text` make up its first `units` code units."""
    if encoding == "utf-32":
        return min(units, len(line_text))
    width = 1 if encoding == "utf-8" else 2
    count = 0
    for index, char in enumerate(line_text):
        if count >= units:
            return index
        code = ord(char)
        if width == 2:
            count += 2 if code > 0xFFFF else 1
        else:
            count += 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
    return len(line_text)


def column(text: str, starts: Sequence[int], line: int, character: int, encoding: PositionEncoding) -> int:
    """The 0-based code-point column of an LSP position."""
    if line >= len(starts) or encoding == "utf-32":
        return character
    return units_to_chars(_line(text, starts, line), character, encoding)


def offset(text: str, starts: Sequence[int], line: int, character: int, encoding: PositionEncoding) -> int:
    """The string offset of an LSP position, clamped to the text."""
    if line >= len(starts):
        return len(text)
    return min(starts[line] + column(text, starts, line, character, encoding), len(text))


def apply_lsp_edits(text: str, edits: Iterable[Mapping[str, Any]], encoding: PositionEncoding) -> str:
    """Apply LSP `TextEdit`s (ranges refer to the original text; they do not overlap)."""
    starts = line_starts(text)
    spans: list[tuple[int, int, str]] = []
    for edit in edits:
        rng = edit["range"]
        begin = offset(text, starts, rng["start"]["line"], rng["start"]["character"], encoding)
        end = offset(text, starts, rng["end"]["line"], rng["end"]["character"], encoding)
        spans.append((begin, end, str(edit.get("newText", ""))))
    return _splice(text, spans)


def apply_cli_edits(text: str, edits: Iterable[Mapping[str, Any]]) -> str:
    """Apply the edits of `ruff ... --output-format json` (1-based rows and code-point columns)."""
    starts = line_starts(text)

    def at(loc: Mapping[str, int]) -> int:
        return offset(text, starts, loc["row"] - 1, loc["column"] - 1, "utf-32")

    return _splice(text, [(at(e["location"]), at(e["end_location"]), str(e.get("content", ""))) for e in edits])


def _splice(text: str, spans: list[tuple[int, int, str]]) -> str:
    pieces: list[str] = []
    cursor = 0
    for begin, end, new in sorted(spans, key=lambda s: (s[0], s[1])):
        begin = max(begin, cursor)
        pieces.append(text[cursor:begin])
        pieces.append(new)
        cursor = max(cursor, end)
    pieces.append(text[cursor:])
    return "".join(pieces)


def _lines_keepends(text: str) -> list[str]:
    return [m.group(0) for m in re.finditer(r"[^\n]*\n|[^\n]+$", text)]


def unified_diff(old: str, new: str, rel: str) -> str:
    """A `git apply`-able unified diff of one file (`a/` and `b/` prefixes); empty when equal."""
    if old == new:
        return ""
    import difflib  # here, not at start-up: difflib is ~3 ms of the server's cold start

    out: list[str] = []
    for line in difflib.unified_diff(_lines_keepends(old), _lines_keepends(new), f"a/{rel}", f"b/{rel}"):
        if line.endswith("\n"):
            out.append(line)
        else:
            out.append(line + "\n" + NO_NEWLINE)
    return "".join(out)
