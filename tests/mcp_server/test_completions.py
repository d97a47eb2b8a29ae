"""completion/complete: the caller's own run ids, paths under the roots, test node ids; -32602 otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import mcp_types as types
import pytest
from mcp.shared.exceptions import MCPError

from tests.conftest import ClientFactory

pytestmark = pytest.mark.anyio

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_project"
RUN = types.ResourceTemplateReference(uri="run://{run_id}")
RUN_LOG = types.ResourceTemplateReference(uri="run://{run_id}/log")


def sample(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root)
    return root


async def run_id_of(client: object) -> str:
    result = await client.call_tool("run_tests", {})  # type: ignore[attr-defined]
    assert result.structured_content is not None
    return str(result.structured_content["run_id"])


async def test_run_ids_are_the_callers_own(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = sample(tmp_path)
    with anyio.fail_after(120):
        async with mcp_client(root) as owner, mcp_client(root) as other:
            assert owner.server_capabilities.completions is not None
            run_id = await run_id_of(owner)
            mine = await owner.complete(RUN, {"name": "run_id", "value": "run_"})
            assert run_id in mine.completion.values
            narrowed = await owner.complete(RUN_LOG, {"name": "run_id", "value": run_id[:10]})
            assert run_id in narrowed.completion.values
            assert (await owner.complete(RUN, {"name": "run_id", "value": "zzz"})).completion.values == []
            theirs = await other.complete(RUN, {"name": "run_id", "value": ""})
            assert run_id not in theirs.completion.values


async def test_paths_under_the_roots(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = sample(tmp_path)
    with anyio.fail_after(60):
        async with mcp_client(root) as client:
            ref = types.PromptReference(name="fix-lint")
            top = await client.complete(ref, {"name": "path", "value": "s"})
            assert top.completion.values == ["src/"]
            deeper = await client.complete(ref, {"name": "path", "value": "src/sample/sh"})
            assert deeper.completion.values == ["src/sample/shapes.py"]
            several = await client.complete(
                types.PromptReference(name="review-change"), {"name": "paths", "value": "src/, tests/test_"}
            )
            assert several.completion.values == ["src/, tests/test_shapes.py"]
            outside = await client.complete(ref, {"name": "path", "value": "../"})
            assert outside.completion.values == []


async def test_test_node_ids(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = sample(tmp_path)
    with anyio.fail_after(120):
        async with mcp_client(root) as client:
            ref = types.PromptReference(name="triage-failures")
            files = await client.complete(ref, {"name": "test", "value": "tests/"})
            assert files.completion.values == ["tests/test_shapes.py"]
            await run_id_of(client)
            ids = await client.complete(ref, {"name": "test", "value": "tests/test_shapes.py::"})
            assert ids.completion.values == ["tests/test_shapes.py::test_deliberately_failing"]


async def test_unknown_references_are_invalid_params(mcp_client: ClientFactory, tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with mcp_client(tmp_path) as client:
            cases = [
                (types.PromptReference(name="nope"), "path", "unknown prompt"),
                (types.PromptReference(name="fix-lint"), "colour", "has no argument"),
                (types.ResourceTemplateReference(uri="file://{path}"), "path", "unknown resource template"),
                (RUN, "id", "has no argument"),
            ]
            for ref, name, message in cases:
                with pytest.raises(MCPError, match=message) as caught:
                    await client.complete(ref, {"name": name, "value": ""})
                assert caught.value.error.code == types.INVALID_PARAMS
