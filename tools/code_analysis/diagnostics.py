"""One diagnostic shape for both ruff paths: the language server's and `ruff check --output-format json`.

`{path, line, column, end_line, end_column, code, message, fixable, fix_applicability, url}`,
1-based code-point columns (as `ruff check` reports them), the end exclusive, paths relative to the
root with `/`. `fix_applicability` is ruff's (`safe`, `unsafe`, `display-only`, or null: no fix);
`fixable` means `fix: true` applies it: safe fixes, and unsafe ones too with `unsafe_fixes: true`.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tools.code_analysis.text_edits import PositionEncoding, column, line_starts

Diagnostic = dict[str, Any]
SYNTAX_ERROR = "invalid-syntax"
APPLICABILITIES = ("safe", "unsafe", "display-only")


def rel_path(filename: str, root: Path) -> str:
    """`filename` relative to `root` with `/` separators (absolute if outside it)."""
    prefix = str(root).rstrip(os.sep) + os.sep
    if os.sep == "/" and filename.startswith(prefix) and "/./" not in filename and "/../" not in filename:
        return filename[len(prefix) :]  # the common case, without building Path objects
    path = Path(filename)
    if not path.is_absolute():
        path = root / path
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        rel = os.path.relpath(path, root)
        return Path(rel).as_posix() if not rel.startswith("..") else path.as_posix()


def _message(raw: Any) -> str:
    # The language server appends the fix title ("\n\nhelp: ..."); the CLI keeps it apart.
    return str(raw or "").split("\n\n", 1)[0]


def from_lsp(items: Iterable[Mapping[str, Any]], rel: str, text: str, encoding: PositionEncoding) -> list[Diagnostic]:
    starts = line_starts(text) if encoding != "utf-32" else []
    out: list[Diagnostic] = []
    for item in items:
        rng = item.get("range") or {}
        start, end = rng.get("start") or {}, rng.get("end") or {}
        line0, char0 = int(start.get("line", 0)), int(start.get("character", 0))
        line1, char1 = int(end.get("line", line0)), int(end.get("character", char0))
        if encoding != "utf-32":
            char0 = column(text, starts, line0, char0, encoding)
            char1 = column(text, starts, line1, char1, encoding)
        data = item.get("data")
        href = (item.get("codeDescription") or {}).get("href")
        out.append(
            {
                "path": rel,
                "line": line0 + 1,
                "column": char0 + 1,
                "end_line": line1 + 1,
                "end_column": char1 + 1,
                "code": str(item.get("code") or SYNTAX_ERROR),
                "message": _message(item.get("message")),
                **_fix_fields(_lsp_applicability(data)),
                "url": href,
            }
        )
    return out


def from_cli(records: Iterable[Mapping[str, Any]], root: Path) -> list[Diagnostic]:
    return [from_cli_record(rec, root) for rec in records]


def from_cli_record(rec: Mapping[str, Any], root: Path, shared: dict[str, str] | None = None) -> Diagnostic:
    """One record of `ruff check --output-format json(-lines)` as a diagnostic.

    `shared` (one per call) makes equal strings (paths, codes, messages, URLs: thousands of
    diagnostics repeat a few) one object, which is most of a big result's memory.
    """
    memo: dict[str, str] = shared if shared is not None else {}
    loc = rec.get("location") or {"row": 1, "column": 1}
    end = rec.get("end_location") or loc
    fix = rec.get("fix")
    filename = str(rec.get("filename", ""))
    path = memo.get(filename)
    if path is None:
        path = memo[filename] = rel_path(filename, root)
    url = rec.get("url")
    diag: Diagnostic = {
        "path": path,
        "line": int(loc["row"]),
        "column": int(loc["column"]),
        "end_line": int(end["row"]),
        "end_column": int(end["column"]),
        "code": _one(memo, str(rec.get("code") or SYNTAX_ERROR)),
        "message": _one(memo, _message(rec.get("message"))),
        **_fix_fields(_cli_applicability(fix)),
        "url": _one(memo, url) if isinstance(url, str) else url,
    }
    if rec.get("cell") is not None:
        diag["cell"] = rec["cell"]
    return diag


def _lsp_applicability(data: Any) -> str | None:
    # ruff's server sends a fix's edits, and marks safe fixes (those fixAll applies) as preferred.
    if not (isinstance(data, dict) and data.get("edits")):
        return None
    return "safe" if data.get("is_preferred") else "unsafe"


def _cli_applicability(fix: Any) -> str | None:
    if not (isinstance(fix, dict) and fix.get("edits")):
        return None
    applicability = fix.get("applicability")
    return applicability if applicability in APPLICABILITIES else None


def _fix_fields(applicability: str | None) -> dict[str, Any]:
    return {"fixable": applicability == "safe", "fix_applicability": applicability}


def with_unsafe_fixes(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """`fixable` as `fix: true, unsafe_fixes: true` means it: unsafe fixes count (copies: cached lists are shared)."""
    return [{**d, "fixable": True} if d.get("fix_applicability") == "unsafe" else d for d in diagnostics]


def _one(memo: dict[str, str], text: str) -> str:
    return memo.setdefault(text, text)


def sort_key(diag: Diagnostic) -> tuple[Any, ...]:
    return (diag["path"], diag.get("cell") or 0, diag["line"], diag["column"], diag["code"])


def summarize(diagnostics: Sequence[Diagnostic]) -> dict[str, Any]:
    """The summary fields of a lint result, computed over the full list."""
    counts = Counter(d["code"] for d in diagnostics)
    return {
        "counts": dict(sorted(counts.items())),
        "total": len(diagnostics),
        "fixable_count": sum(1 for d in diagnostics if d["fixable"]),
        "files_with_diagnostics": len({d["path"] for d in diagnostics}),
    }


def group_by_path(diagnostics: Iterable[Diagnostic]) -> dict[str, list[Diagnostic]]:
    grouped: dict[str, list[Diagnostic]] = {}
    for diag in diagnostics:
        grouped.setdefault(diag["path"], []).append(diag)
    return grouped
