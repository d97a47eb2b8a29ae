"""RunState and traceback trimming as pure functions of the worker's events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tools.test_runner.reports import (
    MAX_FAILURES,
    MAX_TRACEBACK,
    RunState,
    clip,
    describe_exit,
    in_project,
    outcome_of,
    project_traceback,
)

ROOT = Path("/work/proj")


def frame(path: str | None, text: str) -> dict[str, Any]:
    return {"path": path, "lineno": 1, "text": text}


def test_event(nodeid: str, *categories: str, duration: float = 0.01, **extra: Any) -> dict[str, Any]:
    return {"e": "test", "nodeid": nodeid, "categories": list(categories), "duration": duration, **extra}


test_event.__test__ = False  # type: ignore[attr-defined]


def test_counts_progress_and_result_shape() -> None:
    state = RunState(ROOT)
    assert state.feed({"e": "collected", "total": 4, "deselected": 2}) is None
    state.feed({"e": "start", "nodeid": "t.py::a"})
    assert state.current == "t.py::a"
    done = [
        state.feed(test_event("t.py::a", "passed")),
        state.feed(test_event("t.py::b", "passed", "error", duration=0.5)),  # teardown error
        state.feed(test_event("t.py::c", "xfailed")),
        state.feed(test_event("t.py::d", "skipped", duration=0)),
    ]
    assert [(d.done, d.total, d.outcome) for d in done if d] == [
        (1, 4, "passed"),
        (2, 4, "error"),
        (3, 4, "xfailed"),
        (4, 4, "skipped"),
    ]
    assert state.current is None
    state.feed({"e": "finish", "exitstatus": 1})
    state.feed({"e": "exit", "code": 1, "elapsed": 0.2})
    result = state.result(run_id="run_x", status="failed", duration_s=0.25, message=None)
    assert result["counts"] == {
        "passed": 2,
        "failed": 0,
        "skipped": 1,
        "xfailed": 1,
        "xpassed": 0,
        "errors": 1,
        "deselected": 2,
    }
    assert [s["nodeid"] for s in result["slowest"]] == ["t.py::b", "t.py::a", "t.py::c"]
    assert result["truncated"] is False and "message" not in result
    assert state.elapsed == 0.2 and state.session_finished


@pytest.mark.parametrize(
    ("categories", "outcome"),
    [
        (["passed"], "passed"),
        (["failed", "error"], "failed"),
        (["passed", "error"], "error"),
        (["xpassed"], "xpassed"),
        (["rerun", "passed"], "passed"),
        (["rerun"], "rerun"),
        ([], "passed"),
    ],
)
def test_outcome_of_a_test(categories: list[str], outcome: str) -> None:
    assert outcome_of(categories) == outcome


def test_failures_are_redacted_trimmed_and_capped() -> None:
    state = RunState(ROOT, redact=lambda text: text.replace("secret", "[REDACTED]"))
    failure = {
        "nodeid": "t.py::test_secret",
        "outcome": "failed",
        "message": "secret leaked " + "x" * 5000,
        "longrepr": "full text",
        "frames": [frame("t.py", "in the test"), frame("/usr/lib/python3/json/decoder.py", "raise secret")],
    }
    state.feed(test_event("t.py::test_secret", "failed", failures=[failure]))
    (stored,) = state.failures
    assert stored["nodeid"] == "t.py::test_[REDACTED]"
    assert stored["message"].startswith("[REDACTED] leaked") and len(stored["message"]) < 2200
    assert "in the test" in stored["traceback"] and "raise [REDACTED]" in stored["traceback"]
    assert state.full_texts == ["t.py::test_secret (failed)\nfull text"]
    for i in range(MAX_FAILURES + 5):
        state.feed(test_event(f"t.py::f{i}", "failed", failures=[{**failure, "nodeid": f"t.py::f{i}"}]))
    result = state.result(run_id="r", status="failed", duration_s=1, message=None)
    assert len(result["failures"]) == MAX_FAILURES and result["failures_dropped"] == 6
    assert result["truncated"] is True


def test_project_traceback_keeps_project_frames_and_where_it_was_raised() -> None:
    frames = [
        frame("tests/test_x.py", "TEST"),
        frame(".venv/lib/python3.11/site-packages/lib/a.py", "LIB1"),
        frame("/usr/lib/python3.11/b.py", "LIB2"),
        frame("src/pkg/mod.py", "PROJECT"),
        frame("/opt/lib/c.py", "RAISED"),
        {"path": None, "lineno": None, "text": "The above exception was the direct cause", "descr": True},
        frame(str(ROOT / "tests/test_x.py"), "OUTER"),
    ]
    text = project_traceback(frames, ROOT, "fallback")
    assert text.split("\n\n") == [
        "TEST",
        "[... 2 frames outside the project ...]",
        "PROJECT",
        "RAISED",
        "The above exception was the direct cause",
        "OUTER",
    ]
    assert project_traceback([], ROOT, "no frames: " + "y" * 10_000).startswith("no frames")
    assert len(project_traceback([], ROOT, "y" * 10_000)) < MAX_TRACEBACK + 100


@pytest.mark.parametrize(
    ("path", "inside"),
    [
        ("t.py", True),
        ("sub/t.py", True),
        ("/work/proj/sub/t.py", True),
        ("../other/t.py", False),
        ("/usr/lib/x.py", False),
        ("venv/lib/x.py", False),
        ("sub/site-packages/x.py", False),
        (None, False),
    ],
)
def test_in_project(path: str | None, inside: bool) -> None:
    assert in_project(path, ROOT) is inside


def test_clip_keeps_head_and_tail() -> None:
    text = "H" * 100 + "T" * 1000
    clipped = clip(text, 200)
    assert clipped.startswith("H" * 50) and clipped.endswith("T" * 150) and "characters cut" in clipped
    assert clip("short", 200) == "short"


@pytest.mark.parametrize(
    ("code", "extra", "status", "message"),
    [
        (0, {}, "passed", None),
        (1, {}, "failed", None),
        (5, {}, "passed", "no tests ran: pytest collected none"),
        (5, {"deselected": 3}, "passed", "no tests ran: 3 deselected by keyword/markers"),
        (4, {"output": "ERROR: Wrong expression passed to '-m': not (\n"}, "error", "pytest usage error: Wrong"),
        (2, {"collect_error": True}, "error", "1 error during collection; first in t.py: SyntaxError: bad"),
        (2, {"output": "!!! Interrupted: stop !!!\n"}, "error", "the session was interrupted"),
        (3, {}, "error", "pytest internal error"),
        (7, {}, "error", "pytest exited with 7"),
    ],
)
def test_status_from_exit_codes(code: int, extra: dict[str, Any], status: str, message: str | None) -> None:
    state = RunState(ROOT)
    state.feed({"e": "collected", "total": 0, "deselected": extra.get("deselected", 0)})
    if extra.get("collect_error"):
        state.feed({"e": "collect_error", "nodeid": "t.py", "message": "SyntaxError: bad", "frames": []})
    state.note_output(extra.get("output", ""))
    state.feed({"e": "exit", "code": code})
    got_status, got_message = state.status_and_message()
    assert got_status == status
    assert (got_message is None) if message is None else (got_message or "").startswith(message)


def test_crashes_timeouts_and_cancels_name_the_running_test() -> None:
    state = RunState(ROOT)
    state.feed({"e": "start", "nodeid": "t.py::boom"})
    state.note_output("Fatal Python error: Segmentation fault\n")
    message = state.crashed(-11)
    assert message == "the test process died killed by SIGSEGV while running t.py::boom"
    assert state.counts["failed"] == 1
    assert state.failures[-1]["outcome"] == "crashed" and "Segmentation fault" in state.failures[-1]["traceback"]

    state = RunState(ROOT)
    assert "outside of any test" in state.crashed(3) and state.counts["failed"] == 0

    state = RunState(ROOT)
    state.feed({"e": "start", "nodeid": "t.py::slow"})
    assert state.stopped("timeout", "timed out after 2s") == "timed out after 2s while running t.py::slow"
    assert state.failures[-1] == {
        "nodeid": "t.py::slow",
        "outcome": "timeout",
        "message": "timed out after 2s while running t.py::slow",
        "traceback": "",
    }
    state = RunState(ROOT)
    state.feed({"e": "start", "nodeid": "t.py::slow"})
    assert state.stopped("cancelled", "cancelled") == "cancelled while running t.py::slow"
    assert state.failures == []
    assert describe_exit(None) == "with an unknown status" and describe_exit(-99) == "killed by signal 99"


def test_running_summary() -> None:
    state = RunState(ROOT)
    state.feed({"e": "collected", "total": 2})
    state.feed({"e": "start", "nodeid": "t.py::a"})
    summary = state.running_summary("run_1")
    assert summary == {
        "run_id": "run_1",
        "status": "running",
        "counts": dict.fromkeys(["passed", "failed", "skipped", "xfailed", "xpassed", "errors", "deselected"], 0),
        "done": 0,
        "total": 2,
        "current": "t.py::a",
    }


@pytest.mark.parametrize(
    "event",
    [
        [],
        "text",
        {"e": "collected", "total": "many"},
        {"e": "test", "nodeid": "t.py::a", "categories": 5},
        {"e": "test", "nodeid": "t.py::a", "categories": [], "failures": ["not a dict"]},
        {"e": "exit", "code": None},
    ],
)
def test_malformed_events_raise_what_the_reader_drops(event: Any) -> None:
    with pytest.raises((TypeError, ValueError, KeyError, AttributeError)):
        RunState(ROOT).feed(event)
