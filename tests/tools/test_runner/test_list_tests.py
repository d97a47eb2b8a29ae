"""list_tests: collection only, with the project's configuration, selection and collection errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import ClientFactory
from tests.tools.test_runner.conftest import write_project

pytestmark = pytest.mark.anyio


async def test_list_tests(mcp_client: ClientFactory, project: Path) -> None:
    with anyio.fail_after(90):
        async with mcp_client(project) as client:
            result = await client.call_tool("list_tests", {})
            assert not result.is_error, result.content
            listed = result.structured_content or {}
            assert listed["total"] == 7 and listed["errors"] == []
            assert listed["tests"][:2] == ["tests/test_mixed.py::test_pass", "tests/test_mixed.py::test_fail"]
            picked = await client.call_tool("list_tests", {"keyword": "pass or fail", "markers": "not xfail"})
            assert (picked.structured_content or {})["tests"] == [
                "tests/test_mixed.py::test_pass",
                "tests/test_mixed.py::test_fail",
            ]
            assert (picked.structured_content or {})["deselected"] == 5
            one = await client.call_tool("list_tests", {"select": ["tests/test_mixed.py::test_skip"]})
            assert (one.structured_content or {})["tests"] == ["tests/test_mixed.py::test_skip"]


async def test_collection_errors_are_listed(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "broken",
        {"test_ok.py": "def test_ok():\n    pass\n", "test_broken.py": "def test_x(:\n    pass\n"},
    )
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = await client.call_tool("list_tests", {})
            assert not result.is_error, result.content
            listed = result.structured_content or {}
            assert [e["nodeid"] for e in listed["errors"]] == ["test_broken.py"]
            assert "SyntaxError" in listed["errors"][0]["message"] + listed["errors"][0]["traceback"]
            assert "error during collection" in listed["message"]


async def test_many_tests_are_paged_through_the_run(memory_client: Any, tmp_path: Path) -> None:
    tests = "import pytest\n\n@pytest.mark.parametrize('i', range(3000))\ndef test_many(i):\n    pass\n"
    root = write_project(tmp_path / "many", {"test_many.py": tests})
    with anyio.fail_after(60):
        async with memory_client(root, output_budget=5000) as client:
            result = await client.call_tool("list_tests", {})
            listed = result.structured_content or {}
            assert listed["total"] == 3000 and listed["truncated"] is True
            assert len(listed["tests"]) < 3000
            page = await client.call_tool(
                "get_run", {"run_id": listed["run_id"], "section": "tests", "offset": 2990, "limit": 20}
            )
            items = (page.structured_content or {})["items"]
            assert items[-1] == "test_many.py::test_many[2999]" and len(items) == 10
