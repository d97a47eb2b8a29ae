"""The `check` tool's arguments (its JSON schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from mcp_server.api import ToolArgs

PHASES: tuple[str, ...] = ("lint", "format", "analyze", "tests")
"""Every phase, in the order their progress reaches the client and their results are listed."""

Phase = Literal["lint", "format", "analyze", "tests"]


class CheckArgs(ToolArgs):
    root: str | None = Field(default=None, description="Workspace root (default: the first allowed root).")
    paths: list[str] | None = Field(
        default=None,
        max_length=1000,
        description="Files or folders for lint, format and analyze (default: the whole root). "
        "The tests phase runs the root's tests (or the affected ones).",
    )
    phases: list[Phase] | None = Field(
        default=None, min_length=1, description="Phases to run (default: all of lint, format, analyze, tests)."
    )
    fail_fast: bool = Field(default=False, description="Cancel the remaining phases on the first failed gate.")
    affected: bool = Field(
        default=False, description="The tests phase runs only the tests affected by changes (where supported)."
    )

    @field_validator("phases")
    @classmethod
    def _unique(cls, phases: list[str] | None) -> list[str] | None:
        if phases is not None and len(set(phases)) != len(phases):
            raise ValueError("a phase is named twice")
        return phases

    def selected(self) -> list[str]:
        """The phases to run, in canonical order whatever order they were given in."""
        chosen = set(self.phases or PHASES)
        return [p for p in PHASES if p in chosen]
