"""`format_check` over every transport: what `ruff format` would change, as diffs, with nothing written."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.conftest import ClientFactory
from tests.tools.code_analysis.conftest import CLEAN, UNFORMATTED, call

pytestmark = pytest.mark.anyio

FORMATTED = """\
x = {"a": 1}


def g(y):
    return y
"""


def expected_diff(rel: str) -> str:
    import difflib

    return "".join(
        difflib.unified_diff(
            UNFORMATTED.splitlines(keepends=True), FORMATTED.splitlines(keepends=True), f"a/{rel}", f"b/{rel}"
        )
    )


async def test_format_check_reports_diffs_and_writes_nothing(mcp_client: ClientFactory, project: Path) -> None:
    ugly = project / "pkg" / "ugly.py"
    ugly.write_text(UNFORMATTED, encoding="utf-8")
    (project / "pkg" / "broken.py").write_text("def broken(:\n", encoding="utf-8")
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            one = await call(client, "format_check", {"paths": ["pkg/ugly.py"]})
            assert one["files"] == [{"path": "pkg/ugly.py", "changed": True, "diff": expected_diff("pkg/ugly.py")}]
            assert one["changed_count"] == 1 and one["truncated"] is False

            clean = await call(client, "format_check", {"paths": ["pkg/clean.py"]})
            assert clean["files"] == [{"path": "pkg/clean.py", "changed": False, "diff": ""}]

            text = await call(client, "format_check", {"source": UNFORMATTED, "filename": "pkg/draft.py"})
            assert text["files"][0]["diff"] == expected_diff("pkg/draft.py")

            bad = await call(client, "format_check", {"source": "def broken(:\n"})
            assert bad["files"][0]["changed"] is False and "syntax error" in bad["files"][0]["error"]

            tree = await call(client, "format_check", {"paths": ["pkg"]})
            paths = [f["path"] for f in tree["files"]]
            # Changed files first (mod.py is not formatted either), then errors, then the rest.
            assert paths == ["pkg/mod.py", "pkg/ugly.py", "pkg/broken.py", "pkg/__init__.py", "pkg/clean.py"]
            assert tree["files"][1]["diff"] == expected_diff("pkg/ugly.py")
            assert "error" in tree["files"][2] and tree["files"][2]["changed"] is False
            assert tree["changed_count"] == 2 and tree["error_count"] == 1
            again = await call(client, "format_check", {"paths": ["pkg"]})
            assert again["files"] == tree["files"]
    assert ugly.read_text(encoding="utf-8") == UNFORMATTED
    assert (project / "pkg" / "clean.py").read_text(encoding="utf-8") == CLEAN


@pytest.mark.parametrize("transport", ["memory"])
async def test_a_tree_is_checked_in_bounded_batches_with_bounded_diffs(
    mcp_client: ClientFactory, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No call holds more than a bounded amount of output: ruff runs over batches of files, and
    diffs stop at a byte cap (the rest are listed as changed with `diff_omitted`, and not cached)."""
    from tools.code_analysis import format_check as module

    for i in range(6):
        (project / "pkg" / f"ugly{i}.py").write_text(UNFORMATTED, encoding="utf-8")
    monkeypatch.setattr(module, "BATCH_BYTES", 100)  # about two files per ruff run
    monkeypatch.setattr(module, "MAX_DIFF_BYTES", 300)
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            result = await call(client, "format_check", {"paths": ["pkg"]})
            changed = {e["path"]: e for e in result["files"] if e["changed"]}
            assert {f"pkg/ugly{i}.py" for i in range(6)} <= set(changed)
            omitted = [e for e in changed.values() if e.get("diff_omitted")]
            assert omitted and result["diffs_omitted"] == len(omitted)
            assert sum(len(e["diff"]) for e in changed.values()) < 300 + 2 * len(UNFORMATTED) * 4
            monkeypatch.setattr(module, "MAX_DIFF_BYTES", 10_000_000)
            again = await call(client, "format_check", {"paths": ["pkg"]})  # omitted ones were not cached
            assert again["diffs_omitted"] == 0
            assert all(e["diff"] for e in again["files"] if e["changed"])
