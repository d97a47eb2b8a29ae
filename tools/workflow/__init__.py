"""Workflows over the other tools: `check` (lint, format, analyze and tests at once, judged by gates)."""

from __future__ import annotations

from typing import Any

from mcp_server.api import ToolSpec


def load_workflow_tools() -> list[ToolSpec[Any]]:
    from tools.workflow.tool import check_history_spec, check_spec

    return [check_spec(), check_history_spec()]
