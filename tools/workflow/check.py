"""The `check` tool: lint, format, analyze and tests at once, judged by the gates, in one answer.

Phases run concurrently, each in its own cancel scope (`fail_fast` cancels the others on the
first failed gate). Their progress goes through `OrderedEvents`, so the client sees it in phase
order whatever order they finish in. The check owns a run context from the start: its summary
follows the phases, its log gets the ordered events, and at the end it holds every phase's long
lists as sections `phases/<phase>/<list>` (e.g. `get_run(run_id, section="phases/tests/failures")`).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from mcp_server.api import RunContext, ToolContext, ToolError, ToolOutput, trace_span
from tools.code_analysis.cli_runner import RUFF_ENV
from tools.workflow.args import CheckArgs
from tools.workflow.history import CheckHistory, get_history
from tools.workflow.phases import PHASE_FNS, PhaseResult
from tools.workflow.sequencer import OrderedEvents

logger = logging.getLogger("mcp_server.workflow")

EMIT_DRAIN_S = 5.0
# The check's status from its phases' statuses: the first that any phase has wins.
_PRECEDENCE = ("error", "timeout", "failed")


@dataclass
class PhaseRun:
    name: str
    scope: anyio.CancelScope = field(default_factory=anyio.CancelScope)
    result: PhaseResult | None = None
    duration_s: float = 0.0

    def row(self) -> dict[str, Any]:
        if self.result is None:
            return {"name": self.name, "status": "running", "duration_s": None, "summary": {}}
        return {
            "name": self.name,
            "status": self.result.status,
            "duration_s": round(self.duration_s, 4),
            "summary": self.result.summary,
        }


def ruff_threads_beside_tests(cpus: int) -> int | None:
    """ruff's thread count while a tests phase runs beside it: one core left to the test worker
    (ruff takes every core, and the tests are the check's critical path); None on one core."""
    return cpus - 1 if cpus > 1 else None


def ruff_env(tests_running: bool, threads: int | None) -> dict[str, str] | None:
    """The extra environment of a ruff run in a phase: its threads capped (rayon's
    `RAYON_NUM_THREADS`, which ruff honours) while the tests phase runs, ruff's default otherwise.
    The cap changes how fast ruff is, never what it finds."""
    if tests_running and threads is not None:
        return {"RAYON_NUM_THREADS": str(threads)}
    return None


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def launch_order(phases: list[PhaseRun]) -> list[PhaseRun]:
    """The order the phases start in: the tests first. They are the long phase (the check's critical
    path) and mostly wait on their worker; started first, the worker is forked before the other
    phases' in-process work (listing, hashing, parsing ruff's output) holds the event loop.
    Progress keeps phase order whatever the launch order (`OrderedEvents`)."""
    return sorted(phases, key=lambda p: p.name != "tests")


def overall_status(statuses: list[str], cancelled: bool) -> str:
    if cancelled:
        return "cancelled"
    for status in _PRECEDENCE:
        if status in statuses:
            return status
    return "passed"


class Check:
    def __init__(self, ctx: ToolContext, args: CheckArgs, run: RunContext) -> None:
        self.ctx = ctx
        self.args = args
        self.run = run
        self.phases = [PhaseRun(name) for name in args.selected()]
        self.events = OrderedEvents([p.name for p in self.phases])
        self._send, self._receive = anyio.create_memory_object_stream[str](math.inf)
        self._sent = 0
        self.started = time.monotonic()
        self.failed_first: str | None = None
        self.tests_running = False
        self._ruff_threads = ruff_threads_beside_tests(usable_cpus())

    def _ruff_env(self) -> dict[str, str] | None:
        """For `RUFF_ENV`: asked as each ruff run of a phase starts, so a run after the tests
        phase finished gets every core again."""
        return ruff_env(self.tests_running, self._ruff_threads)

    # --- progress, in order ------------------------------------------------------------------------

    def _queue(self, lines: list[str]) -> None:
        for line in lines:
            self.run.log.write(line + "\n")
            self._send.send_nowait(line)

    def _phase_ctx(self, phase: str) -> ToolContext:
        async def report(progress: float, total: float | None, message: str | None) -> None:
            self._queue(self.events.push(phase, f"{phase}: {message or progress}"))

        return ToolContext(
            app=self.ctx.app,
            tool=self.ctx.tool,
            owner=self.ctx.owner,
            connection_id=self.ctx.connection_id,
            report_progress=report,
        )

    async def _emit(self, receive: MemoryObjectReceiveStream[str]) -> None:
        async with receive:
            async for line in receive:
                self._sent += 1
                await self.ctx.progress(self._sent, None, line)

    # --- phases --------------------------------------------------------------------------------------

    async def _phase(self, phase: PhaseRun) -> None:
        started = time.monotonic()
        if phase.name == "tests":
            self.tests_running = True
        else:
            RUFF_ENV.set(self._ruff_env)  # this phase's task (and what it starts) only
        try:
            await self._run_phase(phase, started)
        finally:
            if phase.name == "tests":
                self.tests_running = False

    async def _run_phase(self, phase: PhaseRun, started: float) -> None:
        self._queue(self.events.push(phase.name, f"{phase.name}: started"))
        result: PhaseResult | None = None
        with trace_span(f"check {phase.name}", {"mcp_code_tools.run_id": self.run.run_id}) as span:
            with phase.scope:
                try:
                    result = await PHASE_FNS[phase.name](self._phase_ctx(phase.name), self.args)
                except ToolError as exc:
                    result = PhaseResult("error", {"message": str(exc)})
                except Exception as exc:  # one broken phase is that phase's error, not the check's
                    logger.exception("check phase %s failed unexpectedly", phase.name)
                    result = PhaseResult("error", {"message": f"internal error ({type(exc).__name__}); see the log"})
            phase.result = result or PhaseResult("cancelled", {"message": "cancelled"})
            span.set_attribute("mcp_code_tools.check.status", phase.result.status)
            if isinstance(engine := phase.result.summary.get("engine"), str):
                span.set_attribute("mcp_code_tools.ruff.engine", engine)
        phase.duration_s = time.monotonic() - started
        end = f"{phase.name}: {phase.result.status} in {phase.duration_s:.2f}s"
        self._queue(self.events.push(phase.name, end) + self.events.finish(phase.name))
        self.run.summary = self.summary("running")
        if self.args.fail_fast and phase.result.status in ("failed", "error", "timeout"):
            self.failed_first = self.failed_first or phase.name
            for other in self.phases:
                if other.result is None and other is not phase:
                    other.scope.cancel()

    async def execute(self) -> None:
        """Run the phases; cancellation (cancel_run, the client) propagates after the phases stop."""
        emitted = anyio.Event()

        async def emit() -> None:
            try:
                await self._emit(self._receive)
            finally:
                emitted.set()

        async with anyio.create_task_group() as outer:
            outer.start_soon(emit)
            try:
                async with anyio.create_task_group() as tg:
                    for phase in launch_order(self.phases):
                        tg.start_soon(self._phase, phase)
            finally:
                self._send.close()
            with anyio.move_on_after(EMIT_DRAIN_S):  # a stalled client does not hold the answer for ever
                await emitted.wait()
            outer.cancel_scope.cancel()

    @property
    def completed(self) -> bool:
        return all(p.result is not None for p in self.phases)

    # --- results -------------------------------------------------------------------------------------

    def summary(self, status: str) -> dict[str, Any]:
        return {"run_id": self.run.run_id, "status": status, "phases": [p.row() for p in self.phases]}

    def result(self, cancelled: bool) -> dict[str, Any]:
        for phase in self.phases:
            if phase.result is None:
                phase.result = PhaseResult("cancelled", {"message": "cancelled"})
        status = overall_status([p.result.status for p in self.phases if p.result], cancelled)
        result = self.summary(status)
        result["duration_s"] = round(time.monotonic() - self.started, 4)
        if self.failed_first:
            result["fail_fast"] = f"stopped after {self.failed_first} failed its gate"
        sections = []
        for phase in self.phases:
            for key, items in (phase.result.lists if phase.result else {}).items():
                name = f"phases/{phase.name}/{key}"
                result[name] = items
                sections.append({"section": name, "total": len(items)})
        result["sections"] = sections
        if self.events.dropped:
            result["progress_dropped"] = self.events.dropped
        return result


def _answer(result: dict[str, Any]) -> dict[str, Any]:
    """The answer: the result without the long sections (they stay in the run)."""
    return {k: v for k, v in result.items() if not k.startswith("phases/")}


async def check(ctx: ToolContext, args: CheckArgs) -> ToolOutput:
    root = ctx.root(args.root)  # a bad root or path is an error before anything starts
    for path in args.paths or ():
        ctx.path(path, root=root)
    history: CheckHistory = await get_history(ctx.app)
    run = ctx.new_run()
    work = Check(ctx, args, run)
    run.summary = work.summary("running")
    scope = anyio.CancelScope()
    run.cancel_scope = scope  # cancel_run(run_id) cancels the check and its phases
    try:
        with scope:
            await work.execute()
    finally:  # synchronous: whatever the ending, the run and the history get the result
        result = work.result(cancelled=scope.cancel_called or not work.completed)
        ctx.runs.store(run, summary=_answer(result), result=result)
        ctx.runs.finish(run)
        history.add(ctx.owner, args.root, result)
    return ToolOutput(_answer(result), run=run)
