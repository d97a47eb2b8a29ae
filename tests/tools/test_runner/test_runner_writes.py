"""After a run (`runner.RunBase._finish_selection`): the test history and the affected-test records
are written one after the other in one worker thread (one hop off the event loop, not two), the
history first; without a history write the records are still written."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project
from tools.test_runner import history, runner

pytestmark = pytest.mark.anyio


def spy(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, log: list[tuple[str, int]]) -> None:
    real = getattr(module, name)

    @functools.wraps(real)
    def called(*args: Any, **kwargs: Any) -> Any:
        log.append((name, threading.get_ident()))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, called)


WRITES = {"record_reports", "_record_then", "finish", "_write_records"}


def count_write_hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The hops to a worker thread that write the history or the records (by the function run)."""
    hops: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        name = getattr(getattr(func, "func", func), "__name__", "")
        if name in WRITES:
            hops.append(name)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    return hops


async def test_the_history_and_the_records_are_written_in_one_thread_history_first(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[tuple[str, int]] = []
    spy(monkeypatch, history, "record_reports", log)
    spy(monkeypatch, runner, "finish", log)
    hops = count_write_hops(monkeypatch)
    root = write_project(tmp_path / "proj", {"test_a.py": "def test_a():\n    pass\n", "test_b.py": FAILS_ONCE})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            for expected in ("failed", "passed"):
                result = (await client.call_tool("run_tests", {})).structured_content or {}
                assert result["status"] == expected
            # the records were written: an affected run of the unchanged tree runs nothing
            affected = (await client.call_tool("run_tests", {"affected": True})).structured_content or {}
            assert affected["counts"]["passed"] == 0 and affected["selection"]["skipped_unaffected"] == 2
            one = (await client.call_tool("test_history", {"nodeid": "test_b.py::test_b"})).structured_content or {}
            assert one["test"]["recent"] == "FP"
    assert len(hops) == 3  # one per run (the third, which ran nothing, writes records only); five before
    runs = [log[i : i + 2] for i in range(0, 4, 2)]
    for (first, first_thread), (second, second_thread) in runs:
        assert (first, second) == ("record_reports", "finish") and first_thread == second_thread


FAILS_ONCE = """
import pathlib

def test_b():
    marker = pathlib.Path(__file__).with_name("ran-once")
    if not marker.exists():
        marker.write_text("")
        raise AssertionError("first run fails")
"""


async def test_without_a_history_write_the_records_are_written_alone(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with no test reports makes no history write (nothing to record); its records are
    written all the same (the run's collected list: an affected run then knows the tree)."""
    log: list[tuple[str, int]] = []
    spy(monkeypatch, history, "record_reports", log)
    spy(monkeypatch, runner, "finish", log)
    root = write_project(tmp_path / "proj", {"test_a.py": "def test_a():\n    pass\n"})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = (await client.call_tool("run_tests", {"select": ["test_a.py::test_none"]})).structured_content
            assert result is not None
    assert [name for name, _ in log] == ["finish"]
