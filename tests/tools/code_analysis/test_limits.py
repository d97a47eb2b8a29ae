"""One lint call's work is bounded: at most `max_diagnostics` are collected, the true total is said."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anyio
import pytest

from tests.conftest import ClientFactory
from tests.tools.code_analysis.conftest import call, write_project
from tools.code_analysis.cli_runner import ruff_binary
from tools.code_analysis.lint import INLINE_CONVERT, LSP_MAX_TEXT

pytestmark = pytest.mark.anyio


def ruff_count(root: Path, text: str, filename: str) -> int:
    """How many diagnostics ruff itself reports for `text` with every rule on."""
    argv = [ruff_binary().path, "check", "--no-cache", "--exit-zero", "--select", "ALL"]
    argv += ["--output-format", "json-lines", "--stdin-filename", filename, "-"]
    out = subprocess.run(argv, input=text, capture_output=True, text=True, cwd=root, check=True).stdout
    return sum(1 for line in out.splitlines() if line.strip())


@pytest.mark.parametrize("transport", ["memory", "websocket"])
async def test_a_heavy_source_is_capped_with_its_true_total(mcp_client: ClientFactory, tmp_path: Path) -> None:
    """Issue 11 item 2: `a;` on every line with every rule gives several diagnostics per line; the
    call collects `max_diagnostics` of them, says `truncated`, and gives ruff's true total. Both
    engines: a text over LSP_MAX_TEXT goes to the streamed CLI, a smaller one to the warm language
    server (over INLINE_CONVERT diagnostics: converted in a thread), a small one inline."""
    root = tmp_path / "root"
    root.mkdir()
    heavy = "a;\n" * 3_000
    streamed = heavy + "# " + "x" * LSP_MAX_TEXT + "\n"  # over LSP_MAX_TEXT: the streamed CLI path
    assert len(streamed) > LSP_MAX_TEXT > len(heavy)
    with anyio.fail_after(120):
        async with mcp_client(root, max_diagnostics=500) as client:
            for text, name, least in ((streamed, "untitled.py", INLINE_CONVERT), (heavy, "heavy.py", INLINE_CONVERT)):
                expected = ruff_count(root, text, str(root / name))
                assert expected > least
                args = {"source": text, "select": ["ALL"]} | ({"filename": name} if name != "untitled.py" else {})
                result = await call(client, "lint", args)
                assert result["truncated"] is True, name
                assert result["total"] == expected and result["diagnostics_cap"] == 500, name
                assert len(result["diagnostics"]) <= 500
            # A small text on the warm server path is capped the same way.
            small = "a;\n" * 400
            expected_small = ruff_count(root, small, str(root / "small.py"))
            capped = await call(client, "lint", {"source": small, "filename": "small.py", "select": ["ALL"]})
            assert capped["truncated"] is True and capped["total"] == expected_small


@pytest.mark.parametrize("transport", ["memory"])
async def test_a_tree_lint_is_capped_with_its_true_total(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = write_project(tmp_path / "project")
    for i in range(5):
        (root / "pkg" / f"bad{i}.py").write_text("import os\n" * 50, encoding="utf-8")
    with anyio.fail_after(120):
        async with mcp_client(root) as client:
            whole = await call(client, "lint", {"paths": ["pkg"]})
        assert "diagnostics_cap" not in whole and whole["total"] > 100
        async with mcp_client(root, max_diagnostics=20) as client:
            capped = await call(client, "lint", {"paths": ["pkg"]})
            assert capped["truncated"] is True and capped["total"] == whole["total"]
            assert capped["diagnostics_cap"] == 20
            shown = capped["diagnostics"]
            assert len(shown) <= 20
            assert json.dumps(shown)  # plain JSON all the way
            again = await call(client, "lint", {"paths": ["pkg"]})  # nothing partial was cached
            assert again["total"] == whole["total"]


def test_streamed_outputs_keep_a_bounded_head_and_count_the_rest() -> None:
    from tools.code_analysis.cli_runner import JsonLines, LineCap

    text = "".join(f"/root/f{i}.py\n" for i in range(1000))
    for size in (1, 7, 64, 5000):
        cap = LineCap(10)
        for start in range(0, len(text), size):
            cap.feed(text[start : start + size])
        cap.finish()
        assert cap.lines == [f"/root/f{i}.py" for i in range(10)] and cap.total == 1000
        records = JsonLines(3, convert=lambda r: r["n"])
        lines = "".join(json.dumps({"n": i}) + "\n" for i in range(50))
        for start in range(0, len(lines), size):
            records.feed(lines[start : start + size])
        records.finish()
        assert records.records == [0, 1, 2] and records.total == 50 and records.truncated and not records.bad
