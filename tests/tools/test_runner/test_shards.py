"""Sharded runs (`run_tests(workers=N)`): the same counts, failures and progress as a serial run,
a child that dies replaced for the rest of its share, workers capped at the CPU count."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project
from tools.test_runner.reports import PartsSummary, RunState

pytestmark = pytest.mark.anyio

FILES = {
    "tests/test_a.py": """
        import pytest

        @pytest.mark.parametrize("i", range(8))
        def test_many(i):
            assert i >= 0

        def test_fails():
            assert 1 == 2

        @pytest.mark.skip(reason="no")
        def test_skipped():
            pass
    """,
    "tests/test_b.py": """
        import pytest

        @pytest.fixture(scope="session")
        def shared():
            return 41

        @pytest.mark.parametrize("i", range(6))
        def test_more(shared, i):
            assert shared + 1 == 42

        @pytest.mark.xfail
        def test_xfail():
            assert 0
    """,
    "tests/test_crash.py": """
        import os

        def test_before():
            pass

        def test_dies():
            os._exit(3)

        def test_after():
            pass
    """,
}


async def run(client: Any, args: dict[str, Any], progress: list[tuple[float, float | None]] | None = None) -> Any:
    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        if progress is not None:
            progress.append((done, total))

    result = await client.call_tool("run_tests", args, progress_callback=on_progress)
    assert not result.is_error, result.content
    return result.structured_content or {}


async def test_sharded_counts_match_serial_and_a_crash_is_one_failure(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", FILES)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            serial = await run(client, {"keyword": "not dies"})
            progress: list[tuple[float, float | None]] = []
            sharded = await run(client, {"keyword": "not dies", "workers": 2}, progress)
            assert sharded["workers"] == 2
            assert sharded["counts"] == serial["counts"]
            assert serial["counts"]["passed"] == 16 and serial["counts"]["deselected"] == 1
            assert sharded["status"] == serial["status"] == "failed"
            assert [f["nodeid"] for f in sharded["failures"]] == [f["nodeid"] for f in serial["failures"]]
            assert sharded["collected"] == serial["collected"] == 19
            ran = sum(v for k, v in serial["counts"].items() if k != "deselected")
            # One count over both shards (1..ran, each once, in order), never a shard's own count;
            # a client that falls behind may get fewer updates (progress.py keeps the newest), so
            # every one of them arriving is not a promise under load.
            done = [p[0] for p in progress]
            assert done and done == sorted(set(done)) and set(done) <= set(range(1, ran + 1))
            assert {p[1] for p in progress} <= {ran, None}

            crashing = await run(client, {"workers": 2})
            assert crashing["status"] == "crashed"
            counts = dict(serial["counts"], failed=serial["counts"]["failed"] + 1, deselected=0)
            assert crashing["counts"] == counts  # test_after still ran: its shard's child was replaced
            crash = [f for f in crashing["failures"] if f["outcome"] == "crashed"]
            assert [f["nodeid"] for f in crash] == ["tests/test_crash.py::test_dies"]
            assert "exit status 3" in crash[0]["message"]
            assert crashing["replaced_workers"] == 1


async def test_workers_are_capped_and_the_setting_applies(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"test_x.py": "def test_x():\n    pass\n"})
    with anyio.fail_after(60):
        async with memory_client(root, test_workers=2) as client:
            capped = await run(client, {"workers": 64})
            assert capped["workers"] == min(64, os.cpu_count() or 1) and capped["counts"]["passed"] == 1
            default = await run(client, {})
            assert default.get("workers", 1) == min(2, os.cpu_count() or 1)
            assert default["counts"]["passed"] == 1


async def test_a_sharded_run_records_for_affected_selection(memory_client: Any, tmp_path: Path) -> None:
    files = {
        "pkg/__init__.py": "",
        "pkg/m.py": "def one():\n    return 1\n\n\ndef two():\n    return 2\n",
        "tests/test_one.py": "from pkg.m import one\n\n\ndef test_one():\n    assert one() == 1\n",
        "tests/test_two.py": "from pkg.m import two\n\n\ndef test_two():\n    assert two() == 2\n",
    }
    root = write_project(tmp_path / "proj", files)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            first = await run(client, {"workers": 2, "affected": True})
            assert first["counts"]["passed"] == 2 and first["selection"]["mode"] == "all"
            (root / "pkg/m.py").write_text("def one():\n    return 1\n\n\ndef two():\n    return 1 + 1\n")
            second = await run(client, {"workers": 2, "affected": True})
            assert second["counts"]["passed"] == 1
            assert second["selection"]["selected"] == 1 and second["selection"]["skipped_unaffected"] == 1


def imports_of(root: Path) -> list[str]:
    log = root / "imports.log"
    return sorted(log.read_text().split()) if log.exists() else []


async def test_each_child_collects_only_its_share_of_the_files(memory_client: Any, tmp_path: Path) -> None:
    """Once a run recorded the test files, each child imports only the files of its share (a
    module is imported by one child, not by every one), a file the records do not know yet is
    collected by one child too, and the counts stay those of a serial run."""
    module = """
        import os

        with open("imports.log", "a") as log:  # one line per import of this module, whoever imports it
            log.write(__name__.rsplit(".", 1)[-1] + "\\n")

        import pytest

        @pytest.mark.parametrize("i", range({n}))
        def test_case(i):
            assert i >= 0
    """
    files = {f"tests/test_{name}.py": module.format(n=n) for name, n in (("a", 9), ("b", 7), ("c", 5), ("d", 3))}
    root = write_project(tmp_path / "proj", files)
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            serial = await run(client, {})  # records which files hold which tests
            assert serial["counts"]["passed"] == 24
            assert imports_of(root) == ["test_a", "test_b", "test_c", "test_d"]
            (root / "imports.log").unlink()

            sharded = await run(client, {"workers": 2})
            assert sharded["workers"] == 2 and sharded["counts"] == serial["counts"]
            assert imports_of(root) == ["test_a", "test_b", "test_c", "test_d"]  # not twice each
            (root / "imports.log").unlink()

            (root / "tests/test_e.py").write_text(textwrap.dedent(module.format(n=4)))  # unknown to the records
            keyword = await run(client, {"workers": 2, "keyword": "not test_case[0]"})
            assert imports_of(root) == ["test_a", "test_b", "test_c", "test_d", "test_e"]
            (root / "imports.log").unlink()
            serial_keyword = await run(client, {"keyword": "not test_case[0]"})
            assert keyword["counts"] == serial_keyword["counts"]
            assert keyword["counts"]["passed"] == 23 and keyword["counts"]["deselected"] == 5


@pytest.mark.parametrize("shared_collection", [True, False])
def test_the_running_summary_adds_up_as_the_merged_result(shared_collection: bool) -> None:
    """What get_run shows while a sharded run goes is built on every finished test without
    merging outcomes (PartsSummary); it must say what the merged state says."""

    def child(tests: list[tuple[str, str]], deselected: int, errors: list[str], current: str | None) -> RunState:
        state = RunState(Path("/root"))
        state.feed({"e": "collected", "total": len(tests) + 1, "deselected": deselected})
        for nodeid in errors:
            state.feed({"e": "collect_error", "nodeid": nodeid, "longrepr": "boom", "message": "boom"})
        for nodeid, category in tests:
            state.feed({"e": "start", "nodeid": nodeid})
            state.feed({"e": "test", "nodeid": nodeid, "categories": [category], "duration": 0.01})
        if current is not None:
            state.feed({"e": "start", "nodeid": current})
        return state

    a = child([("t.py::a", "passed"), ("t.py::b", "failed")], 2, ["conftest.py"], None)
    b = child([("u.py::c", "passed"), ("u.py::d", "skipped")], 1, ["conftest.py", "u.py"], "u.py::e")
    again = child([("u.py::f", "passed")], 1, ["conftest.py", "u.py"], None)  # a replacement of b
    parts = [(a, True), (b, True), (again, False)]
    merged = RunState.merged(parts, Path("/root"), lambda text: text, shared_collection=shared_collection)
    running = PartsSummary(parts, lambda text: text, shared_collection=shared_collection)
    assert running.running_summary("r") == merged.running_summary("r")
    assert merged.counts["errors"] == 2 and merged.counts["deselected"] == (2 if shared_collection else 3)
    assert merged.done == 5 and merged.total == 6 and merged.current == "u.py::e"
