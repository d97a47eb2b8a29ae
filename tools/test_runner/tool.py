"""The tools `list_tests` and `run_tests`, and the check that lists them only where pytest is.

A `run_tests` call owns a run context from the start: its summary follows the run while it goes
(`get_run` shows it), its log gets pytest's output as it streams (redacted), and the result is
stored in it at the end, whatever the ending. `wait: false` runs it in the server's task group
and answers at once; `cancel_run`, a client's `notifications/cancelled` and the end of the
connection all cancel it, which kills the child's process group and records `cancelled`.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from mcp_server.api import (
    AppState,
    CacheDirUnavailable,
    RunContext,
    SlotTicket,
    ToolContext,
    ToolError,
    ToolOutput,
    ToolSpec,
)
from tools.test_runner.args import ListTestsArgs, RunTestsArgs, pytest_args
from tools.test_runner.environment import find_interpreter
from tools.test_runner.history import Recorded, Report, failed_first_request, get_history
from tools.test_runner.reports import COUNT_KEYS, RunState, TestFinished
from tools.test_runner.runner import RunRequest, TestRun
from tools.test_runner.selection.snapshot import signature as file_signature
from tools.test_runner.shards import ShardedRun, effective_workers

CHECK_SERVICE = "pytest_check"
INLINE_SELECTIONS = 16
"""Up to this many `select` items are checked on the event loop (a few stats); more go to a thread."""
NEGATIVE_RECHECK_S = 10.0
CHECK_CODE = "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('pytest') else 1)"


LOCATE_TTL_S = 1.0
"""How long a root's interpreter and cache folder are trusted without looking again: a venv made
(or removed) is noticed by the calls that start at most this long after it, like the zygote's
environment fingerprint (`environment.ENV_TTL_S`)."""
MAX_LOCATED = 64
_located: dict[tuple[Path, Path | None, Any, bool], tuple[float, Path, Path | None]] = {}


async def _located_for(ctx: ToolContext, root: Path, cached: bool) -> tuple[Path, Path | None]:
    """`_locate`, in a thread, or as found less than `LOCATE_TTL_S` ago (a warm call makes no hop)."""
    key = (root, ctx.settings.python, ctx.settings.cache_dir, cached)
    now = time.monotonic()
    hit = _located.get(key)
    if hit is not None and now - hit[0] < LOCATE_TTL_S:
        return hit[1], hit[2]
    interpreter, cache = await anyio.to_thread.run_sync(_locate, ctx, root, cached)
    if len(_located) >= MAX_LOCATED:
        _located.clear()
    _located[key] = (time.monotonic(), interpreter, cache)
    return interpreter, cache


def _locate(ctx: ToolContext, root: Path, cached: bool) -> tuple[Path, Path | None]:
    """Blocking (stats): the root's interpreter, and (`cached`) its server-owned folder, where the
    affected-test data lives (None if unavailable)."""
    interpreter = find_interpreter(root, ctx.settings.python)
    if not cached:
        return interpreter, None
    try:
        return interpreter, ctx.cache_path(root)
    except CacheDirUnavailable:
        return interpreter, None


async def _request(ctx: ToolContext, args: ListTestsArgs, mode: str, timeout_s: float | None) -> RunRequest:
    root = ctx.root(args.root)
    if len(args.select or ()) > INLINE_SELECTIONS:
        argv = await anyio.to_thread.run_sync(pytest_args, ctx, root, args)  # many path checks: off the loop
    else:
        argv = pytest_args(ctx, root, args)
    cached = mode != "collect" or args.affected
    interpreter, cache = await _located_for(ctx, root, cached)
    ceiling = ctx.settings.run_timeout_max_s
    timeout = min(timeout_s, ceiling) if timeout_s is not None else ceiling
    partial = any("::" in item for item in args.select or ())
    request = RunRequest(
        root, interpreter, argv, "collect" if mode == "collect" else "run", timeout, args.affected, cache, partial
    )
    if cache is None:
        return request
    return dataclasses.replace(request, record=ctx.settings.record_tests, learn=ctx.settings.learn_imports)


# --- run_tests -----------------------------------------------------------------------------------


def _queued_summary(run: RunContext) -> dict[str, Any]:
    return {"run_id": run.run_id, "status": "running", "counts": dict.fromkeys(COUNT_KEYS, 0), "done": 0}


async def _execute(
    ctx: ToolContext, run: RunContext, request: RunRequest, waiting: bool, ticket: SlotTicket | None = None
) -> None:
    """Run and record the result in `run`, whatever happens (cancellation included). A caller
    that waits gets progress, and a run that could not start as a `ToolError`; in the background
    that error is only recorded (the run's result says it)."""

    async def on_test(finished: TestFinished) -> None:
        if waiting:
            await ctx.progress(finished.done, finished.total, f"{finished.nodeid} {finished.outcome}")

    def on_update(state: Any) -> None:
        summary = state.running_summary(run.run_id)
        summary["queued_s"] = round(test_run.queued_s, 4)
        run.summary = summary

    run_class: Any = TestRun if request.workers <= 1 else ShardedRun
    test_run = run_class(
        ctx.app,
        request,
        tool=ctx.tool,
        connection=ctx.connection_id,
        write_log=run.log.write,
        on_test=on_test,
        on_update=on_update,
    )
    test_run.ticket = ticket  # the place in the queue the call took (wait=false)
    error: str | None = None
    recorded = Recorded()

    async def on_ran(state: RunState) -> None:
        nonlocal recorded
        reports = [Report(nodeid, outcome, duration) for nodeid, (outcome, duration) in state.outcomes.items()]
        history = await get_history(ctx.app)
        recorded = await history.record(ctx, request.root, reports)  # one transaction

    test_run.on_ran = on_ran  # the history before the answer (the affected-test records after it)
    try:
        await test_run.execute()
    except ToolError as exc:
        error = str(exc)
        if waiting:
            raise
    finally:
        if ticket is not None:
            ticket.cancel()  # a place never used (cancelled before the run started) goes back
        _record(ctx, run, test_run, error, recorded)  # synchronous: nothing in it can be interrupted


def _record(ctx: ToolContext, run: RunContext, test_run: TestRun, error: str | None, recorded: Recorded) -> None:
    """Store the run's result, whatever its ending, and mark it finished."""
    if test_run.started:
        status, message = test_run.outcome()
        test_run.finish_log(status)
        result = test_run.state.result(
            run_id=run.run_id, status=status, duration_s=test_run.duration_s, message=message
        )
        result.update(test_run.extra())
        recorded.apply(result, ctx.app.redactor.redact)  # flaky failures marked; a note when the history is off
    else:
        status = "error" if error is not None else "cancelled"
        result = {**_queued_summary(run), "status": status, "message": error or "cancelled before it started"}
        run.log.write(f"[run not started: {result['message']}]\n")
    ctx.runs.store(run, summary={k: result[k] for k in ("run_id", "status", "counts")}, result=result)
    ctx.runs.finish(run)


def _output(run: RunContext) -> ToolOutput:
    result = dict(run.result or {})
    status = result.get("status")
    usage = status == "error" and str(result.get("message", "")).startswith("pytest usage error")
    return ToolOutput(result, run=run, is_error=usage, pageable=("failures",))


async def run_tests(ctx: ToolContext, args: RunTestsArgs) -> ToolOutput:
    request = await _request(ctx, args, "run", args.timeout_s)
    workers = effective_workers(args.workers or ctx.settings.test_workers)
    if workers > 1:
        request = dataclasses.replace(request, workers=workers)
    if args.failed_first:
        request = await failed_first_request(ctx, request)  # last failures, then fastest, from history
    # wait=false: the call takes its place in the queue now (Busy at once when it is full)
    ticket = None if args.wait else ctx.reserve_slot()
    run = ctx.new_run()
    run.summary = _queued_summary(run)
    if not args.wait:
        ctx.app.start_background(run, functools.partial(_execute, ctx, run, request, False, ticket))
        return ToolOutput(dict(run.summary), run=run)
    scope = anyio.CancelScope()
    run.cancel_scope = scope
    with scope:  # cancel_run(run_id) cancels this scope; a client's cancel cancels the whole call
        await _execute(ctx, run, request, True)
    return _output(run)


# --- list_tests ----------------------------------------------------------------------------------


async def list_tests(ctx: ToolContext, args: ListTestsArgs) -> ToolOutput:
    request = await _request(ctx, args, "collect", None)
    log = ctx.new_log()
    test_run = TestRun(ctx.app, request, tool=ctx.tool, connection=ctx.connection_id, write_log=log.write)
    await test_run.execute()
    status, message = test_run.outcome()
    state = test_run.state
    errors = [{k: e[k] for k in ("nodeid", "message", "traceback")} for e in state.collect_errors]
    if status in ("crashed", "timeout") or (status == "error" and not state.collect_errors):
        raise ToolError(f"list_tests: {message}")
    structured: dict[str, Any] = {"tests": state.nodeids, "total": len(state.nodeids), "errors": errors}
    if state.counts["deselected"]:
        structured["deselected"] = state.counts["deselected"]
    if message and status == "error":
        structured["message"] = message
    structured.update({k: v for k, v in test_run.extra().items() if k in ("selection", "warnings")})
    return ToolOutput(structured, pageable=("tests",))


# --- availability --------------------------------------------------------------------------------


@dataclass
class PytestCheck:
    """Whether pytest is importable by an interpreter, cached by the interpreter's file signature.
    A yes holds until the interpreter changes; a no is checked again after a while."""

    results: dict[str, tuple[str, str | None, float]] = field(default_factory=dict)

    async def aclose(self) -> None:
        return None

    def status(self) -> dict[str, Any]:
        return {"pytest": {python: reason or "importable" for python, (_, reason, _) in self.results.items()}}

    async def check(self, app: AppState) -> str | None:
        root = app.settings.primary_root
        interpreter = await anyio.to_thread.run_sync(find_interpreter, root, app.settings.python)
        signature = await anyio.to_thread.run_sync(file_signature, str(interpreter))
        cached = self.results.get(str(interpreter))
        now = time.monotonic()
        fresh = cached is not None and (cached[1] is None or now - cached[2] < NEGATIVE_RECHECK_S)
        if cached is not None and fresh and cached[0] == signature:
            return cached[1]
        reason = await _probe(app, root, interpreter)
        self.results[str(interpreter)] = (signature, reason, now)
        return reason


async def _probe(app: AppState, root: Path, interpreter: Path) -> str | None:
    why = f"pytest is not importable by {interpreter} (the interpreter of the root {root})"
    try:
        result = await app.executor.run(
            [str(interpreter), "-c", CHECK_CODE],
            cwd=root,
            tool="run_tests availability",
            connection="server",
            timeout_s=30,
            project_env=True,
            max_output=4096,
        )
    except ToolError as exc:
        return f"{why}: {exc}"
    return None if result.returncode == 0 else why


async def pytest_available(app: AppState) -> str | None:
    if not app.settings.test_execution_allowed:
        return None  # listed as disabled by policy; the project's interpreter is not even started

    async def factory() -> PytestCheck:
        return PytestCheck()

    checker = await app.services.get(CHECK_SERVICE, factory)
    return await checker.check(app)


def load_test_runner_tools() -> list[ToolSpec[Any]]:
    return [
        ToolSpec(
            name="list_tests",
            title="List tests",
            description="Collect the project's tests with pytest (collection only; the project's own pytest "
            "configuration applies) and return their node ids, with any collection errors.",
            args=ListTestsArgs,
            handler=list_tests,
            requires_test_execution=True,
            available=pytest_available,
        ),
        ToolSpec(
            name="run_tests",
            title="Run tests",
            description="Run the project's tests with pytest in its own interpreter, on a warm forked worker. "
            "Returns status (passed, failed, error, timeout, crashed, cancelled, running), counts, failures "
            "with tracebacks trimmed to the project's frames, and the slowest tests; the full output is in "
            "get_run(run_id, section='log'). Sends a progress notification per finished test (fewer, the newest, "
            "to a client that falls behind). With "
            "wait=false it answers at once with the run_id: poll get_run, stop it with cancel_run.",
            args=RunTestsArgs,
            handler=run_tests,
            requires_test_execution=True,
            read_only=False,
            available=pytest_available,
        ),
    ]
