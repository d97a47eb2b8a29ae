"""Pure text helpers: LSP positions in every encoding, edits, diffs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tools.code_analysis.text_edits import apply_cli_edits, apply_lsp_edits, line_starts, unified_diff, units_to_chars

TEXT = 'a = "é😀"; b = 1\r\nc = 2\rd = 3\n'


def edit(l0: int, c0: int, l1: int, c1: int, new: str) -> dict[str, object]:
    return {"range": {"start": {"line": l0, "character": c0}, "end": {"line": l1, "character": c1}}, "newText": new}


def test_line_starts_know_only_lsp_line_breaks() -> None:
    assert line_starts("a\r\nb\rc\nd\x0ce") == [0, 3, 5, 7]


@pytest.mark.parametrize(("encoding", "units"), [("utf-32", 9), ("utf-16", 10), ("utf-8", 13)])
def test_code_units_become_characters(encoding: str, units: int) -> None:
    line = 'a = "é😀"; b'
    assert units_to_chars(line, units, encoding) == 9  # type: ignore[arg-type]  # just past the semicolon


@pytest.mark.parametrize(("encoding", "column"), [("utf-32", 8), ("utf-16", 9), ("utf-8", 12)])
def test_lsp_edits_apply_in_every_encoding(encoding: str, column: int) -> None:
    edits = [edit(0, column, 0, column + 1, ""), edit(2, 0, 2, 1, "D"), edit(1, 4, 1, 5, "22")]
    assert apply_lsp_edits(TEXT, edits, encoding) == 'a = "é😀" b = 1\r\nc = 22\rD = 3\n'  # type: ignore[arg-type]


def test_cli_edits_use_one_based_character_columns() -> None:
    edits = [{"content": "", "location": {"row": 1, "column": 9}, "end_location": {"row": 1, "column": 10}}]
    assert apply_cli_edits(TEXT, edits).startswith('a = "é😀" b = 1')
    at_end = {"row": 2, "column": 1}
    assert apply_cli_edits("x\n", [{"content": "y\n", "location": at_end, "end_location": at_end}]) == "x\ny\n"


def test_unified_diff_applies_with_git(tmp_path: Path) -> None:
    old, new = "a\nb\nc", "a\nB\nc\nd\n"
    diff = unified_diff(old, new, "pkg/f.py")
    assert diff.startswith("--- a/pkg/f.py\n+++ b/pkg/f.py\n")
    assert "\\ No newline at end of file\n" in diff
    assert unified_diff(old, old, "pkg/f.py") == ""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "f.py").write_text(old)
    (tmp_path / "fix.diff").write_text(diff)
    subprocess.run(["git", "apply", "fix.diff"], cwd=tmp_path, check=True, timeout=30, capture_output=True)
    assert (tmp_path / "pkg" / "f.py").read_text() == new
