"""Prompts: fix-lint, triage-failures, review-change; paginated list; -32602 for bad arguments."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from mcp_server.prompts import PROMPTS
from tests.conftest import ClientFactory

pytestmark = pytest.mark.anyio

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_project"


def sample(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root)
    (root / "src" / "sample" / "messy.py").write_text("import os\nimport sys\n\n\ndef f():\n    return sys.argv\n")
    return root


def text_of(result: types.GetPromptResult) -> str:
    content = result.messages[0].content
    assert isinstance(content, types.TextContent)
    return content.text


async def test_prompts_list_is_paginated(mcp_client: ClientFactory, tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with mcp_client(tmp_path, page_size=1) as client:
            assert client.server_capabilities.prompts is not None
            names: list[str] = []
            cursor: str | None = None
            while True:
                page = await client.list_prompts(cursor=cursor, cache_mode="bypass")
                assert len(page.prompts) <= 1
                names += [p.name for p in page.prompts]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert names == [p.name for p in PROMPTS] == ["fix-lint", "triage-failures", "review-change"]
            with pytest.raises(MCPError, match="invalid cursor"):
                await client.list_prompts(cursor="nope", cache_mode="bypass")


async def test_arguments_are_declared(mcp_client: ClientFactory, tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with mcp_client(tmp_path) as client:
            prompts = {p.name: p for p in (await client.list_prompts()).prompts}
            fix = prompts["fix-lint"]
            assert fix.description
            assert [(a.name, a.required) for a in fix.arguments or []] == [("path", True), ("root", False)]


async def test_missing_required_argument_is_named(mcp_client: ClientFactory, tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with mcp_client(tmp_path) as client:
            with pytest.raises(MCPError, match="missing required argument 'path'") as caught:
                await client.get_prompt("fix-lint", {})
            assert caught.value.error.code == types.INVALID_PARAMS
            with pytest.raises(MCPError, match="unknown prompt") as caught:
                await client.get_prompt("make-coffee", {})
            assert caught.value.error.code == types.INVALID_PARAMS
            with pytest.raises(MCPError, match="has no argument 'colour'"):
                await client.get_prompt("triage-failures", {"colour": "red"})


async def test_fix_lint_has_diagnostics_and_the_safe_fix_diff(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = sample(tmp_path)
    with anyio.fail_after(60):
        async with mcp_client(root) as client:
            result = await client.get_prompt("fix-lint", {"path": "src/sample/messy.py"})
            text = text_of(result)
            assert result.messages[0].role == "user"
            assert "F401" in text  # the unused import
            assert "-import os" in text  # ruff's safe fix, as a diff
            assert (root / "src" / "sample" / "messy.py").read_text().startswith("import os\n")  # nothing written


async def test_triage_failures_after_a_run(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = sample(tmp_path)
    with anyio.fail_after(120):
        async with mcp_client(root) as client:
            before = text_of(await client.get_prompt("triage-failures", {}))
            assert "no test run of yours yet" in before
            await client.call_tool("run_tests", {})
            text = text_of(await client.get_prompt("triage-failures", {}))
            assert "test_deliberately_failing" in text
            assert "assert" in text
            only = text_of(await client.get_prompt("triage-failures", {"test": "tests/test_shapes.py::test_classify"}))
            assert "test_deliberately_failing" not in only.split("Triage", 1)[1].split("\n", 2)[2]


async def test_review_change_runs_the_checks(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = sample(tmp_path)
    with anyio.fail_after(180):
        async with mcp_client(root) as client:
            text = text_of(await client.get_prompt("review-change", {"paths": "src/sample/messy.py"}))
            assert "Review the change to `src/sample/messy.py`" in text
            assert "F401" in text
