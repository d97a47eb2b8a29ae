"""Code analysis: `lint` and `format_check` (ruff, on warm `ruff server`s and a result cache), `analyze` (ast).

Importing this package is cheap: nothing starts until a tool is called.
"""

from __future__ import annotations

from typing import Any

from mcp_server.api import ToolSpec


def load_code_analysis_tools() -> list[ToolSpec[Any]]:
    from tools.code_analysis.args import AnalyzeArgs, FormatCheckArgs, LintArgs
    from tools.code_analysis.format_check import format_check
    from tools.code_analysis.lint import lint
    from tools.code_analysis.metrics import analyze

    return [
        ToolSpec(
            name="lint",
            title="Lint with ruff",
            description=(
                "Lint Python with ruff, honouring the project's own ruff config (pyproject.toml, ruff.toml). "
                "Give `paths` (files or folders; none = the whole root) or unsaved `source` text as `filename`. "
                "`select`/`ignore` override the project's rule selection like ruff's flags. `fix: true` adds "
                "ruff's safe fixes (and unsafe ones with `unsafe_fixes: true`) as a unified diff in `fix_diff` "
                "(nothing is written). Returns diagnostics {path, line, column, end_line, end_column, code, "
                "message, fixable (what `fix` applies), fix_applicability (safe/unsafe/display-only/null), url} "
                "(1-based, paths relative to the root), counts per code and the total, and `skipped` files "
                "(links out of the roots, special or oversized files) with reasons. At most max_diagnostics "
                "are collected (then `diagnostics_cap` is set and `total` is ruff's count); when `truncated`, "
                "page the rest with get_run(run_id, section='diagnostics')."
            ),
            args=LintArgs,
            handler=lint,
        ),
        ToolSpec(
            name="format_check",
            title="Check formatting with ruff",
            description=(
                "Show what `ruff format` would change, per file as a unified diff, without writing anything. "
                "Give `paths` (files or folders; none = the whole root) or unsaved `source` text as `filename`. "
                "Returns files [{path, changed, diff}] (changed files first) and changed_count."
            ),
            args=FormatCheckArgs,
            handler=format_check,
        ),
        ToolSpec(
            name="analyze",
            title="Complexity metrics",
            description=(
                "Per function and method: cyclomatic complexity (counted as ruff's C901 / mccabe count it), "
                "line span and size, sorted worst first; plus a summary (files, functions, classes, code "
                "lines, max and mean complexity). Give `paths` or unsaved `source` text."
            ),
            args=AnalyzeArgs,
            handler=analyze,
        ),
    ]
