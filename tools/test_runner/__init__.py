"""Test runner tools (`list_tests`, `run_tests`) on a warm pool of forked pytest workers."""

from __future__ import annotations

from tools.test_runner.tool import load_test_runner_tools

__all__ = ["load_test_runner_tools"]
