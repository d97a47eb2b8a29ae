"""After a run (`runner.RunBase._finish_selection`, `record_writes.py`): the test history is written
before the answer, the affected-test records after it; the next run of the root waits for them;
the writes to the root's database never meet; an edit made right after the answer is not taken
for what ran; a write still pending when the server stops is finished."""

from __future__ import annotations

import functools
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project
from tests.tools.test_runner.test_affected import edit, plan
from tools.test_runner import history, record_writes, runner

pytestmark = pytest.mark.anyio

GATE_S = 20.0


def spy(
    monkeypatch: pytest.MonkeyPatch, module: Any, name: str, log: list[str], gate: threading.Event | None = None
) -> None:
    """Log `name:start` and `name:end` around each call (in whatever thread); with `gate`, a call
    waits for it first (bounded)."""
    real = getattr(module, name)

    @functools.wraps(real)
    def called(*args: Any, **kwargs: Any) -> Any:
        if gate is not None:
            gate.wait(GATE_S)
        log.append(f"{name}:start")
        try:
            return real(*args, **kwargs)
        finally:
            log.append(f"{name}:end")

    monkeypatch.setattr(module, name, called)


def open_gate_when_waited(monkeypatch: pytest.MonkeyPatch, gate: threading.Event, log: list[str]) -> None:
    """A later run that waits for the root's pending write opens the gate the write waits behind."""
    real = record_writes.RecordWrites.settled

    async def settled(self: record_writes.RecordWrites, folder: Path | None) -> None:
        if not gate.is_set() and folder is not None and folder in self._pending:
            log.append("waited")
            gate.set()
        await real(self, folder)

    monkeypatch.setattr(record_writes.RecordWrites, "settled", settled)


PASSES = "from pkg.mod import value\n\n\ndef test_a():\n    assert value() == 1\n"
MODULE = "def value():\n    return 1\n"


async def test_the_answer_comes_first_and_the_next_run_waits_for_the_records(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log: list[str] = []
    gate = threading.Event()
    spy(monkeypatch, history, "record_reports", log)
    spy(monkeypatch, runner, "finish", log, gate)
    open_gate_when_waited(monkeypatch, gate, log)
    root = write_project(
        tmp_path / "proj",
        {"pkg/__init__.py": "", "pkg/mod.py": MODULE, "tests/test_a.py": PASSES, "test_b.py": FAILS_ONCE},
    )
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            for expected in ("failed", "passed"):
                result = (await client.call_tool("run_tests", {})).structured_content or {}
                assert result["status"] == expected
                log.append("answered")
            # the records were written before this plan was made: nothing changed, nothing runs
            assert await plan(client) == set()
            one = (await client.call_tool("test_history", {"nodeid": "test_b.py::test_b"})).structured_content or {}
            assert one["test"]["recent"] == "FP"
    # run 1: history, answer; the write waits behind the gate until run 2 waits for it; then run 2
    assert log[:4] == ["record_reports:start", "record_reports:end", "answered", "waited"], log
    assert log[4:8] == ["finish:start", "finish:end", "record_reports:start", "record_reports:end"], log
    assert "answered" in log[8:] and log.count("finish:start") == 2, log  # run 2's write: before or after


async def test_an_edit_right_after_the_answer_is_not_taken_for_what_ran(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The records are written after the answer, by which time an agent may have edited a file
    the run executed: the record must not claim the test ran the edited text (it would then look
    unaffected by the edit)."""
    log: list[str] = []
    gate = threading.Event()
    spy(monkeypatch, runner, "finish", log, gate)
    open_gate_when_waited(monkeypatch, gate, log)
    root = write_project(tmp_path / "proj", {"pkg/__init__.py": "", "pkg/mod.py": MODULE, "tests/test_a.py": PASSES})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = (await client.call_tool("run_tests", {"affected": True})).structured_content or {}
            assert result["counts"]["passed"] == 1 and "finish:start" not in log
            edit(root / "pkg/mod.py", "return 1", "return 2")  # the write has not read it yet
            assert await plan(client) == {"tests/test_a.py::test_a"}
            assert "waited" in log


TWO = "def value():\n    return 1\n\n\ndef other():\n    return 2\n"
USES_OTHER = "from pkg.mod import other\n\n\ndef test_b():\n    assert other() == 2\n"


async def test_an_edit_right_after_the_first_recording_keeps_what_ran(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a root's first recording nothing is parsed yet: a file the run executed, edited before
    the write read it, cost every test that ran it its record (all were selected again). Its
    bytes as the run ended are kept: only the test of the edited function is selected."""
    log: list[str] = []
    gate = threading.Event()
    spy(monkeypatch, runner, "finish", log, gate)
    open_gate_when_waited(monkeypatch, gate, log)
    root = write_project(
        tmp_path / "proj",
        {"pkg/__init__.py": "", "pkg/mod.py": TWO, "tests/test_a.py": PASSES, "tests/test_b.py": USES_OTHER},
    )
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = (await client.call_tool("run_tests", {"affected": True})).structured_content or {}
            assert result["counts"]["passed"] == 2 and "finish:start" not in log
            edit(root / "pkg/mod.py", "return 2", "return 1 + 1")  # before the write reads it
            assert await plan(client) == {"tests/test_b.py::test_b"}
            assert "waited" in log


async def test_a_write_pending_when_the_server_stops_is_finished(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run with no test reports makes no history write (nothing to record); its records are
    written all the same (the run's collected list: an affected run then knows the tree), here
    as the server stops."""
    log: list[str] = []
    spy(monkeypatch, history, "record_reports", log)
    spy(monkeypatch, runner, "finish", log)
    root = write_project(tmp_path / "proj", {"test_a.py": "def test_a():\n    pass\n"})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            result = (await client.call_tool("run_tests", {"select": ["test_a.py::test_none"]})).structured_content
            assert result is not None
    assert log == ["finish:start", "finish:end"]
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            assert await plan(client) == {"test_a.py::test_a"}  # not run yet: no record


FAILS_ONCE = """
import pathlib

def test_b():
    marker = pathlib.Path(__file__).with_name("ran-once")
    if not marker.exists():
        marker.write_text("")
        raise AssertionError("first run fails")
"""
