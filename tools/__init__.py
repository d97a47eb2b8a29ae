"""The tools. `load_tools()` is called by the server on the first `tools/list` or call, never at start-up."""

from __future__ import annotations

from typing import Any

from mcp_server.api import ToolSpec


def load_tools() -> list[ToolSpec[Any]]:
    specs: list[ToolSpec[Any]] = []
    from tools.code_analysis import load_code_analysis_tools

    specs += load_code_analysis_tools()
    from tools.test_runner import load_test_runner_tools

    specs += load_test_runner_tools()
    from tools.workflow import load_workflow_tools

    specs += load_workflow_tools()
    from tools.test_runner.history import load_history_tools

    specs += load_history_tools()
    return specs
