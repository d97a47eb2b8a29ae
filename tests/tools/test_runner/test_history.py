"""Test history: per-test statistics in the cache_dir's database, flakiness, failed_first ordering,
the `flaky` marks of run_tests, the test_history tool, a corrupt or unwritable store."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from mcp_server.cachedir import root_cache_dir
from tests.conftest import ClientFactory
from tests.tools.test_runner.conftest import write_project
from tools.test_runner.history import (
    FileHashes,
    Report,
    failed_first_order,
    is_flaky,
    record_reports,
    update_row,
)
from tools.test_runner.testdb import DB_NAME, TestDB

# --- the pure parts -----------------------------------------------------------------------------------


def play(outcomes: list[tuple[str, str | None]], duration: float = 1.0) -> dict[str, Any]:
    row: dict[str, Any] | None = None
    for i, (outcome, file_hash) in enumerate(outcomes):
        row = update_row(row, Report("t.py::x", outcome, duration), file_hash, float(i))
    assert row is not None
    return row


def test_counts_last_outcome_and_recent() -> None:
    row = play([("passed", "h"), ("failed", "h"), ("skipped", "h"), ("error", "h")])
    assert (row["passes"], row["failures"], row["skips"]) == (1, 2, 1)
    assert row["last_outcome"] == "error" and row["last_failed"] == 3.0 and row["last_seen"] == 3.0
    assert row["recent"] == "PFSF"
    assert len(play([("passed", "h")] * 50)["recent"]) == 20


def test_flaky_means_both_outcomes_with_the_same_file_content() -> None:
    assert is_flaky(play([("passed", "a"), ("failed", "a")]))
    assert play([("passed", "a"), ("failed", "a"), ("passed", "a")])["flaky_count"] == 2
    # The file changed between the pass and the failure: a regression, not a flake.
    changed = play([("passed", "a"), ("failed", "b")])
    assert not is_flaky(changed) and changed["flaky_count"] == 0
    assert not is_flaky(play([("failed", "a"), ("failed", "a"), ("skipped", "a")]))
    assert not is_flaky(play([("passed", None), ("failed", None)]))  # no content known: no claim


def test_duration_is_an_exponential_moving_average() -> None:
    row = update_row(None, Report("t::x", "passed", 1.0), "h", 0.0)
    assert row["ema_s"] == 1.0
    row = update_row(row, Report("t::x", "passed", 2.0), "h", 1.0)
    assert row["ema_s"] == pytest.approx(1.3)
    row = update_row(row, Report("t::x", "skipped", 0.0), "h", 2.0)
    assert row["ema_s"] == pytest.approx(1.3)


def test_failed_first_order() -> None:
    rows: dict[str, dict[str, Any]] = {
        "a": {"last_outcome": "passed", "last_failed": 1.0, "ema_s": 3.0},
        "b": {"last_outcome": "failed", "last_failed": 5.0, "ema_s": 9.0},
        "c": {"last_outcome": "passed", "last_failed": None, "ema_s": 0.5},
        "d": {"last_outcome": "error", "last_failed": 7.0, "ema_s": 1.0},
    }
    # Failures, newest first; then the new test (no history) and the rest fastest first.
    assert failed_first_order(["a", "b", "c", "d", "new"], rows) == ["d", "b", "new", "c", "a"]


# --- the database ------------------------------------------------------------------------------------


def test_one_transaction_per_run_retention_and_compaction(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"t.py": "x = 1\n"})
    (tmp_path / "db").mkdir()
    db = TestDB(tmp_path / "db")
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    reports = [Report(f"t.py::test_{i}", "passed", 0.01) for i in range(30)]
    assert record_reports(db, root, reports, max_tests=1000, now=1.0) == []
    assert sum(1 for s in statements if s.startswith(("BEGIN", "COMMIT"))) == 2  # one transaction
    db.conn.set_trace_callback(None)
    later = [Report(f"t.py::new_{i}", "failed", 0.01) for i in range(20)]
    record_reports(db, root, later, max_tests=25, now=2.0)
    names = {n for (n,) in db.conn.execute("SELECT nodeid FROM history_tests")}
    assert len(names) == 25 and {f"t.py::new_{i}" for i in range(20)} <= names  # least recently run dropped
    db.close()


def test_file_hashes_are_kept_across_runs_only_for_settled_unchanged_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file hashed once is not read again while its (mtime, ctime, size, inode) stay the same;
    a rewrite that keeps its size and mtime is still read again (its ctime moved); a file changed
    just before it was hashed is not kept (a same-tick write could leave its times as they were)."""
    root = write_project(tmp_path / "proj", {"t.py": "def test_x():\n    pass\n"})
    (tmp_path / "db").mkdir()
    db = TestDB(tmp_path / "db")
    later = FileHashes(clock=lambda: time.time_ns() + 60 * 1_000_000_000)  # hashed a minute after the write
    report = [Report("t.py::test_x", "passed", 0.01)]

    def file_hash() -> str:
        (value,) = db.conn.execute("SELECT file_hash FROM history_tests").fetchone()
        assert value is not None
        return str(value)

    record_reports(db, root, report, max_tests=100, now=1.0, known=later)
    first = file_hash()
    assert len(later) == 1
    reads: list[Path] = []
    path_open = Path.open

    def counted(self: Path, *args: Any, **kwargs: Any) -> Any:
        reads.append(self)
        return path_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", counted)
    record_reports(db, root, report, max_tests=100, now=2.0, known=later)
    assert reads == [] and file_hash() == first  # unchanged: not read again
    source = root / "t.py"
    st = source.stat()
    source.write_text(source.read_text().replace("pass", "None"))  # same size
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime
    reads.clear()
    record_reports(db, root, [Report("t.py::test_x", "failed", 0.01)], max_tests=100, now=3.0, known=later)
    assert reads == [source] and file_hash() != first  # its ctime moved: read again, a new content
    (value,) = db.conn.execute("SELECT flaky_count FROM history_tests").fetchone()
    assert value == 0  # a regression, not a flake
    now = FileHashes()  # hashed right after the write: never kept
    record_reports(db, root, report, max_tests=100, now=4.0, known=now)
    assert len(now) == 0
    db.close()


# --- through the server -----------------------------------------------------------------------------

FLIPPING = """
import pathlib

def test_flips():
    assert pathlib.Path("{state}").read_text() == "ok"

def test_steady():
    pass
"""


async def call(client: Client, name: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args, **kw)
    assert not result.is_error, result.content
    structured: dict[str, Any] | None = result.structured_content
    assert structured is not None
    return structured


@pytest.mark.anyio
async def test_flaky_marks_failed_first_and_the_history_tool(mcp_client: ClientFactory, tmp_path: Path) -> None:
    state = tmp_path / "state.txt"  # outside the project: the test's own file does not change
    state.write_text("ok")
    root = write_project(tmp_path / "proj", {"tests/test_f.py": FLIPPING.format(state=state)})
    with anyio.fail_after(120):
        async with mcp_client(root) as client:
            first = await call(client, "run_tests", {})
            assert first["status"] == "passed" and "flaky" not in first
            state.write_text("broken")
            second = await call(client, "run_tests", {})
            assert second["status"] == "failed"
            assert second["flaky"] == ["tests/test_f.py::test_flips"]
            assert second["failures"][0]["flaky"] is True

            # failed_first: the last failure runs first although it comes first in no file order.
            (root / "tests" / "test_a.py").write_text("def test_first_in_file_order():\n    pass\n")
            progress: list[str] = []

            async def on_progress(done: float, total: float | None, message: str | None) -> None:
                progress.append(str(message))

            await call(client, "run_tests", {"failed_first": True}, progress_callback=on_progress)
            assert progress[0] == "tests/test_f.py::test_flips failed"
            assert len(progress) == 3  # nothing lost, nothing run twice

            overview = await call(client, "test_history", {})
            assert overview["tests_known"] == 3
            assert [t["nodeid"] for t in overview["flakiest"]] == ["tests/test_f.py::test_flips"]
            assert overview["recently_failing"][0]["nodeid"] == "tests/test_f.py::test_flips"
            one = await call(client, "test_history", {"nodeid": "tests/test_f.py::test_flips"})
            assert one["test"]["recent"] == "PFF" and one["test"]["flaky"] is True
            assert one["test"]["passes"] == 1 and one["test"]["failures"] == 2

            # The test's own file changes: its failure is no longer called flaky.
            path = root / "tests" / "test_f.py"
            path.write_text(path.read_text() + "\n# edited\n")
            third = await call(client, "run_tests", {"select": ["tests/test_f.py"]})
            assert third["status"] == "failed" and "flaky" not in third


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["memory"])
async def test_a_corrupt_database_is_moved_aside(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"tests/test_x.py": "def test_x():\n    pass\n"})
    folder = root_cache_dir(tmp_path / "server-cache", root)
    (folder / DB_NAME).write_bytes(b"this is not a database" * 100)
    with anyio.fail_after(60):
        async with mcp_client(root) as client:
            result = await call(client, "run_tests", {})
            assert result["status"] == "passed"
            # Whoever opens the shared database first (history, or the affected-test data) says so.
            notes = [result.get("history_note", ""), *result.get("warnings", [])]
            assert any("moved aside" in str(note) for note in notes), result
            assert (await call(client, "test_history", {}))["tests_known"] == 1
    assert any(p.name.startswith(f"{DB_NAME}.corrupt-") for p in folder.iterdir())
    with sqlite3.connect(folder / DB_NAME) as conn:
        assert conn.execute("SELECT count(*) FROM history_tests").fetchone() == (1,)


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["memory"])
async def test_an_unwritable_cache_dir_turns_history_off(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"tests/test_x.py": "def test_x():\n    pass\n"})
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    with anyio.fail_after(60):
        async with mcp_client(root, cache_dir=str(blocker)) as client:
            result = await call(client, "run_tests", {})
            assert result["status"] == "passed"
            assert result["history_note"].startswith("test history is off")
            ordered = await call(client, "run_tests", {"failed_first": True})
            assert ordered["status"] == "passed"
            history = await call(client, "test_history", {})
            assert history["tests_known"] == 0 and "off" in history["history_note"]


CODE_UNDER_TEST = """
import pathlib

def value():
    return pathlib.Path("{state}").read_text()
"""
USES_CODE = """
from src.lib import value

def test_value():
    assert value() == "ok"
"""


@pytest.mark.anyio
@pytest.mark.parametrize("transport", ["memory"])
async def test_a_change_in_the_code_it_ran_is_a_regression_not_a_flake(
    mcp_client: ClientFactory, tmp_path: Path
) -> None:
    state = tmp_path / "state.txt"
    state.write_text("ok")
    root = write_project(
        tmp_path / "proj",
        {"src/__init__.py": "", "src/lib.py": CODE_UNDER_TEST.format(state=state), "tests/test_v.py": USES_CODE},
    )
    nodeid = "tests/test_v.py::test_value"
    with anyio.fail_after(120):
        async with mcp_client(root) as client:
            assert (await call(client, "run_tests", {}))["status"] == "passed"
            # The code under test changes (the test's own file does not) and the test fails.
            lib = root / "src" / "lib.py"
            lib.write_text(lib.read_text() + "\n# edited\n")
            state.write_text("broken")
            regression = await call(client, "run_tests", {})
            assert regression["status"] == "failed" and "flaky" not in regression
            # Nothing of the code changes now, and the outcome flips: that is a flake.
            state.write_text("ok")
            assert (await call(client, "run_tests", {}))["status"] == "passed"
            state.write_text("broken")
            flake = await call(client, "run_tests", {})
            assert flake["flaky"] == [nodeid]
            one = await call(client, "test_history", {"nodeid": nodeid})
            assert one["test"]["recent"] == "PFPF" and one["test"]["flaky_count"] == 2


def test_an_old_database_gets_the_new_column(tmp_path: Path) -> None:
    root = write_project(tmp_path / "proj", {"t.py": "x = 1\n"})
    (tmp_path / "db").mkdir()
    with sqlite3.connect(tmp_path / "db" / DB_NAME) as conn:  # the first version's table
        conn.execute(
            "CREATE TABLE history_tests (nodeid TEXT PRIMARY KEY, last_outcome TEXT NOT NULL, last_seen REAL NOT NULL,"
            " last_failed REAL, passes INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,"
            " skips INTEGER NOT NULL DEFAULT 0, ema_s REAL, file_hash TEXT, passes_same INTEGER NOT NULL DEFAULT 0,"
            " failures_same INTEGER NOT NULL DEFAULT 0, flaky_count INTEGER NOT NULL DEFAULT 0, flaky_last REAL,"
            " recent TEXT NOT NULL DEFAULT '')"
        )
    db = TestDB(tmp_path / "db")
    record_reports(db, root, [Report("t.py::test_x", "passed", 0.1)], max_tests=100, now=1.0)
    assert db.conn.execute("SELECT code_files FROM history_tests").fetchone() == ("[]",)
    db.close()
