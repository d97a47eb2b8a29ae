"""What a run's events add up to: counts, failures, the slowest tests, the final status.

Pure state, no I/O: `RunState.feed()` takes the worker's events one by one (see `worker.py`) and
says when a test finished (for progress); `RunState.result()` builds the pinned result shape.
Tracebacks are trimmed to the frames in the project; the full text stays in the run log.
"""

from __future__ import annotations

import heapq
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

COUNT_KEYS = ("passed", "failed", "skipped", "xfailed", "xpassed", "errors", "deselected")
SUBTEST_KEYS = ("subtests_passed", "subtests_failed")
"""Added to `counts` when a run has subtests. As in pytest's summary, a failing subtest also counts
in `failed` (and its test fails too); passing subtests are not tests (`passed` counts tests)."""
_COUNTED = {"passed": "passed", "failed": "failed", "skipped": "skipped", "xfailed": "xfailed", "xpassed": "xpassed"}
_COUNTED["error"] = "errors"
# The outcome of a test, from the categories of its phases: the worst one wins.
_PRIORITY = ("failed", "error", "xpassed", "xfailed", "skipped", "passed")
_OUTSIDE = frozenset({"site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox", "__pypackages__"})

MAX_FAILURES = 1000
MAX_MESSAGE = 2000
MAX_TRACEBACK = 6000
MAX_FULL_TEXT = 2 * 1024 * 1024
SLOWEST = 10
OUTPUT_TAIL = 4000

# pytest's exit codes.
EXIT_OK, EXIT_TESTS_FAILED, EXIT_INTERRUPTED, EXIT_INTERNAL, EXIT_USAGE, EXIT_NO_TESTS = 0, 1, 2, 3, 4, 5


def clip(text: str, limit: int) -> str:
    """At most about `limit` characters: the head and the (more telling) tail."""
    if len(text) <= limit:
        return text
    head = limit // 4
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - head - tail} characters cut ...]\n{text[-tail:]}"


def in_project(path: str | None, root: Path) -> bool:
    """Whether a traceback frame's file is the project's own code (not a library, not a venv)."""
    if not path:
        return False
    full = path if os.path.isabs(path) else os.path.join(root, path)
    full = os.path.normpath(full)
    try:
        rel = Path(full).relative_to(root)
    except ValueError:
        return False
    return not any(part in _OUTSIDE for part in rel.parts)


def project_traceback(frames: list[dict[str, Any]], root: Path, fallback: str) -> str:
    """The traceback with only the project's frames, plus the last frame of each exception in a
    chain (where it was raised, with its `E` lines); runs of other frames become one line."""
    if not frames:
        return clip(fallback, MAX_TRACEBACK)
    kept: list[str] = []
    omitted = 0

    def flush() -> None:
        nonlocal omitted
        if omitted:
            kept.append(f"[... {omitted} frame{'s' if omitted != 1 else ''} outside the project ...]")
            omitted = 0

    for i, frame in enumerate(frames):
        text = str(frame.get("text", ""))
        if frame.get("descr"):
            flush()
            kept.append(text)
            continue
        last_of_chain = i + 1 == len(frames) or bool(frames[i + 1].get("descr"))
        if last_of_chain or in_project(frame.get("path"), root):
            flush()
            kept.append(text)
        else:
            omitted += 1
    flush()
    return clip("\n\n".join(kept), MAX_TRACEBACK)


def outcome_of(categories: list[str]) -> str:
    for outcome in _PRIORITY:
        if outcome in categories:
            return outcome
    return categories[0] if categories else "passed"


def describe_exit(status: int | None) -> str:
    if status is None:
        return "with an unknown status"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = f"signal {-status}"
        return f"killed by {name}"
    return f"with exit status {status}"


def worst_exit(codes: list[int]) -> int:
    for code in (EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_TESTS_FAILED):
        if code in codes:
            return code
    if all(code == EXIT_NO_TESTS for code in codes):
        return EXIT_NO_TESTS
    known = [c for c in codes if c not in (EXIT_OK, EXIT_NO_TESTS)]
    return known[0] if known else EXIT_OK


class Summary(Protocol):
    """What a run shows while it goes (`RunState`, or a sharded run's `PartsSummary`)."""

    def running_summary(self, run_id: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class TestFinished:
    nodeid: str
    outcome: str
    done: int
    total: int | None
    duration_s: float = 0.0


class RunState:
    """Everything a run reported so far."""

    def __init__(self, root: Path, redact: Callable[[str], str] = lambda text: text) -> None:
        self.root = root
        self._redact = redact
        self.counts = dict.fromkeys(COUNT_KEYS, 0)
        self.total: int | None = None
        self.done = 0
        self.current: str | None = None
        self.failures: list[dict[str, Any]] = []
        self.failures_dropped = 0
        self.collect_errors: list[dict[str, Any]] = []
        self.nodeids: list[str] = []
        self.full_texts: list[str] = []
        self._full_size = 0
        self._slowest: list[tuple[float, str]] = []
        self.exit_code: int | None = None
        self.elapsed: float | None = None
        self.session_finished = False
        self.output_tail = ""
        self.internal: list[str] = []
        self.outcomes: dict[str, tuple[str, float]] = {}
        """Raw node id -> (outcome, duration): what the affected-test records store."""
        self.record: dict[str, Any] | None = None
        """The child's `record` event: what each test executed, what was collected and skipped."""

    # --- events ----------------------------------------------------------------------------------

    def feed(self, event: Any) -> TestFinished | None:
        """Take one event; malformed ones raise TypeError/ValueError/KeyError/AttributeError."""
        kind = event.get("e")
        if kind == "collected":
            self.total = int(event.get("total", 0))
            self.counts["deselected"] = int(event.get("deselected", 0))
            self.nodeids = [str(n) for n in event.get("nodeids", [])]
        elif kind == "collect_error":
            self.counts["errors"] += 1
            failure = self._failure(event, "error")
            self.collect_errors.append(failure)
            self._add_failure(failure)
        elif kind == "start":
            self.current = str(event.get("nodeid", ""))
        elif kind == "test":
            return self._finished(event)
        elif kind == "finish":
            self.session_finished = True
        elif kind == "record":
            if not isinstance(event.get("tests"), dict) or not isinstance(event.get("collected"), dict):
                raise TypeError("malformed record event")
            self.record = event
        elif kind == "exit":
            self.exit_code = int(event.get("code", EXIT_INTERNAL))
            self.elapsed = float(event.get("elapsed", 0.0))
        return None

    def _finished(self, event: dict[str, Any]) -> TestFinished:
        nodeid = str(event.get("nodeid", ""))
        categories = [str(c) for c in event.get("categories", [])]
        for category in categories:
            key = _COUNTED.get(category)
            if key is not None:
                self.counts[key] += 1
        subtests = event.get("subtests")
        if isinstance(subtests, dict):
            for outcome in ("passed", "failed"):
                key = f"subtests_{outcome}"
                self.counts[key] = self.counts.get(key, 0) + int(subtests.get(outcome, 0))
        for failure in event.get("failures", []):
            self._add_failure(self._failure(failure, str(failure.get("outcome", "failed"))))
        duration = float(event.get("duration", 0.0))
        self.outcomes[nodeid] = (outcome_of(categories), duration)
        if duration > 0:
            entry = (duration, nodeid)
            if len(self._slowest) < SLOWEST:
                heapq.heappush(self._slowest, entry)
            else:
                heapq.heappushpop(self._slowest, entry)
        self.done += 1
        self.current = None
        return TestFinished(self._redact(nodeid), outcome_of(categories), self.done, self.total, duration)

    def _failure(self, event: dict[str, Any], outcome: str) -> dict[str, Any]:
        longrepr = str(event.get("longrepr", ""))
        frames = [f for f in event.get("frames", []) if isinstance(f, dict)]
        if self._full_size < MAX_FULL_TEXT:
            text = f"{event.get('nodeid', '')} ({outcome})\n{longrepr}"
            self.full_texts.append(text)
            self._full_size += len(text)
        failure = {
            "nodeid": self._redact(str(event.get("nodeid", ""))),
            "outcome": outcome,
            # Redacted before clipped: a clip must never cut a secret in half.
            "message": clip(self._redact(str(event.get("message", ""))), MAX_MESSAGE),
            "traceback": project_traceback(
                [{**f, "text": self._redact(str(f.get("text", "")))} for f in frames], self.root, self._redact(longrepr)
            ),
        }
        if event.get("subtest") is not None:
            failure["subtest"] = self._redact(str(event["subtest"]))
        return failure

    def _add_failure(self, failure: dict[str, Any]) -> None:
        if len(self.failures) < MAX_FAILURES:
            self.failures.append(failure)
        else:
            self.failures_dropped += 1

    def note_output(self, text: str) -> None:
        """Output as it streams (raw: redacted where it leaves): the tail explains usage errors and crashes."""
        self.output_tail = (self.output_tail + text)[-OUTPUT_TAIL:]

    # --- shards ----------------------------------------------------------------------------------

    @classmethod
    def merged(
        cls,
        parts: list[tuple[RunState, bool]],
        root: Path,
        redact: Callable[[str], str],
        *,
        shared_collection: bool = True,
    ) -> RunState:
        """The children of a sharded run as one run. `parts` are (state, first): the first child of
        each shard, and the replacements of one that died (they add their tests, not their total,
        nor their collection's deselections). `shared_collection`: every first child collected
        everything (`-k`/`-m` deselections are the lead's); else each collected its own files
        (deselections add up). A collection error that several children met (a `conftest.py`,
        or a replacement collecting again) counts once. The exit code is the worst one (a shard
        with no tests does not make the run empty)."""
        merged = cls(root, redact)
        summary = PartsSummary(parts, redact, shared_collection=shared_collection)
        merged.counts, merged.total, merged.done, merged.current = summary.counts(), summary.total(), 0, None
        lead = summary.lead
        codes: list[int] = []
        seen_errors: set[str] = set()
        for state, _ in parts:
            repeated = [e for e in state.collect_errors if e["nodeid"] in seen_errors]
            merged.collect_errors += [e for e in state.collect_errors if e["nodeid"] not in seen_errors]
            seen_errors |= {e["nodeid"] for e in state.collect_errors}
            for failure in state.failures:
                if not any(failure is e for e in repeated):
                    merged._add_failure(failure)
            merged.failures_dropped += state.failures_dropped
            merged.done += state.done
            merged.current = state.current or merged.current
            merged.full_texts += state.full_texts
            for entry in state._slowest:
                merged._note_slow(entry)
            merged.outcomes.update(state.outcomes)
            merged.internal += state.internal
            merged.output_tail = (merged.output_tail + state.output_tail)[-OUTPUT_TAIL:]
            if state.elapsed is not None:
                merged.elapsed = max(merged.elapsed or 0.0, state.elapsed)
            if state.exit_code is not None:
                codes.append(state.exit_code)
        if lead is not None:
            merged.nodeids = list(lead.nodeids)
        merged.session_finished = all(state.session_finished for state, _ in parts)
        if parts and len(codes) == len(parts):
            merged.exit_code = worst_exit(codes)
        return merged

    def _note_slow(self, entry: tuple[float, str]) -> None:
        if len(self._slowest) < SLOWEST:
            heapq.heappush(self._slowest, entry)
        else:
            heapq.heappushpop(self._slowest, entry)

    # --- endings ---------------------------------------------------------------------------------

    def usage_error(self) -> str:
        """pytest's `ERROR:` lines (usage errors go to stderr, not to a report), else the last line."""
        lines = [line[len("ERROR:") :].strip() for line in self.output_tail.splitlines() if line.startswith("ERROR:")]
        if lines:
            return "; ".join(lines)
        tail = self.output_tail.strip()
        return tail.splitlines()[-1] if tail else ""

    def _whole_lines_tail(self) -> str:
        """The output tail without a first line cut by the tail's window (a secret cut there
        would no longer be recognised)."""
        tail = self.output_tail
        if len(tail) >= OUTPUT_TAIL:
            tail = tail[tail.find("\n") + 1 :]
        return tail.strip()

    def crashed(self, status: int | None) -> str:
        """A child that died: like pytest-xdist, a failed report for the test it was running."""
        where = f"while running {self.current}" if self.current else "outside of any test (during collection or setup)"
        message = f"the test process died {describe_exit(status)} {where}"
        self.counts["failed"] += 1 if self.current else 0
        self._add_failure(
            {
                "nodeid": self._redact(self.current or ""),
                "outcome": "crashed",
                "message": message,
                "traceback": clip(self._redact(self._whole_lines_tail()), MAX_TRACEBACK),
            }
        )
        return message

    def stopped(self, outcome: str, why: str) -> str:
        """A run ended by a timeout or a cancel: the test it was in is named, not counted."""
        where = f" while running {self.current}" if self.current else ""
        message = f"{why}{where}"
        if self.current and outcome == "timeout":
            self._add_failure(
                {"nodeid": self._redact(self.current), "outcome": outcome, "message": message, "traceback": ""}
            )
        return message

    def status_and_message(self) -> tuple[str, str | None]:
        """For a session that ended by itself: pytest's exit code as a status."""
        code = self.exit_code
        if code == EXIT_OK:
            return "passed", None
        if code == EXIT_NO_TESTS:
            if self.counts["deselected"]:
                return "passed", f"no tests ran: {self.counts['deselected']} deselected by keyword/markers"
            return "passed", "no tests ran: pytest collected none"
        if code == EXIT_TESTS_FAILED:
            return "failed", None
        if code == EXIT_USAGE:
            return "error", f"pytest usage error: {self.usage_error()}"
        if self.collect_errors:
            first = self.collect_errors[0]
            n = len(self.collect_errors)
            return "error", f"{n} error{'s' if n != 1 else ''} during collection; first in {first['nodeid']}: " + (
                first["message"].splitlines()[-1] if first["message"] else ""
            )
        if code == EXIT_INTERRUPTED:
            return "error", "the session was interrupted: " + (self.usage_error() or "see the log")
        if code == EXIT_INTERNAL:
            return "error", "pytest internal error: see the log"
        return ("failed" if self.counts["failed"] or self.counts["errors"] else "error"), f"pytest exited with {code}"

    def slowest(self) -> list[dict[str, Any]]:
        ordered = sorted(self._slowest, key=lambda entry: (-entry[0], entry[1]))
        return [{"nodeid": self._redact(n), "duration_s": round(d, 4)} for d, n in ordered]

    def result(self, *, run_id: str, status: str, duration_s: float, message: str | None) -> dict[str, Any]:
        result: dict[str, Any] = {
            "run_id": run_id,
            "status": status,
            "counts": dict(self.counts),
            "duration_s": round(duration_s, 4),
            "failures": list(self.failures),
            "slowest": self.slowest(),
            "truncated": self.failures_dropped > 0,
        }
        if message:
            result["message"] = message
        if self.total is not None:
            result["collected"] = self.total
        if self.failures_dropped:
            result["failures_dropped"] = self.failures_dropped
        return result

    def running_summary(self, run_id: str) -> dict[str, Any]:
        return {
            "run_id": run_id,
            "status": "running",
            "counts": dict(self.counts),
            "done": self.done,
            "total": self.total,
            "current": self._redact(self.current) if self.current else None,
        }


class PartsSummary:
    """The counts and progress of a sharded run's children, as `RunState.merged` adds them up,
    without merging their outcomes and failures: what `get_run` shows while the run goes, cheap
    enough to build on every finished test."""

    def __init__(
        self, parts: list[tuple[RunState, bool]], redact: Callable[[str], str], *, shared_collection: bool
    ) -> None:
        self.parts = parts
        self._redact = redact
        self.shared_collection = shared_collection
        self.firsts = [state for state, first in parts if first]
        self.lead = self.firsts[0] if self.firsts else (parts[0][0] if parts else None)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(COUNT_KEYS, 0)
        seen_errors: set[str] = set()
        for state, _ in self.parts:
            for key, value in state.counts.items():
                counts[key] = counts.get(key, 0) + value
            counts["errors"] -= sum(1 for e in state.collect_errors if e["nodeid"] in seen_errors)
            seen_errors |= {e["nodeid"] for e in state.collect_errors}
        if self.shared_collection:
            counts["deselected"] = self.lead.counts["deselected"] if self.lead is not None else 0
        else:
            counts["deselected"] = sum(state.counts["deselected"] for state in self.firsts)
        return counts

    def total(self) -> int | None:
        totals = [state.total for state in self.firsts]
        return sum(t for t in totals if t is not None) if totals and None not in totals else None

    def running_summary(self, run_id: str) -> dict[str, Any]:
        current = None
        for state, _ in self.parts:
            current = state.current or current
        return {
            "run_id": run_id,
            "status": "running",
            "counts": self.counts(),
            "done": sum(state.done for state, _ in self.parts),
            "total": self.total(),
            "current": self._redact(current) if current else None,
        }
