"""Argument models of the code-analysis tools: they are the tools' input schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mcp_server.api import ToolArgs

MAX_PATHS = 1000
RuleSelector = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9]{0,15}$", description="e.g. `E`, `F401`, `ALL`")]


class TargetArgs(ToolArgs):
    paths: list[str] | None = Field(
        default=None,
        max_length=MAX_PATHS,
        description="Files or folders, relative to the root or absolute inside an allowed root. "
        "None (or empty) means the whole root.",
    )
    source: str | None = Field(
        default=None,
        description="Unsaved editor text to check instead of files on disk, as if it were `filename`.",
    )
    filename: str | None = Field(
        default=None,
        description="With `source`: the path the text belongs to (need not exist); the project's "
        "config and per-file rules for that path apply. Default `untitled.py` in the root.",
    )
    root: str | None = Field(
        default=None, description="The workspace root to work in (default: the first allowed root)."
    )


class LintArgs(TargetArgs):
    select: list[RuleSelector] | None = Field(
        default=None,
        max_length=200,
        description="Rule codes or prefixes to check instead of the project's selection (like `ruff --select`).",
    )
    ignore: list[RuleSelector] | None = Field(
        default=None,
        max_length=200,
        description="Rule codes or prefixes to ignore on top of the project's config (like `ruff --ignore`).",
    )
    fix: bool = Field(
        default=False,
        description="Also return ruff's safe fixes as a unified diff in `fix_diff`. Nothing is written.",
    )
    unsafe_fixes: bool = Field(
        default=False,
        description="Count ruff's unsafe fixes as fixable too, and with `fix` include them in `fix_diff` "
        "(like `ruff check --unsafe-fixes`). Unsafe fixes may change what the code does: review them.",
    )


class FormatCheckArgs(TargetArgs):
    pass


class AnalyzeArgs(TargetArgs):
    pass
