"""The phases of `check`: each calls a tool's handler in-process and judges its result by a gate.

A phase returns a `PhaseResult`: its status (passed, failed, error, timeout, cancelled, skipped),
a short summary for the answer, and its long lists, which the check's run context keeps as
sections `phases/<name>/<list>` for `get_run`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mcp_server.api import ToolContext, ToolOutput
from tools.workflow.args import CheckArgs

WORST_FUNCTIONS = 50


@dataclass
class PhaseResult:
    status: str
    summary: dict[str, Any]
    lists: dict[str, list[Any]] = field(default_factory=dict)


PhaseFn = Callable[[ToolContext, CheckArgs], Awaitable[PhaseResult]]


def full_result(output: ToolOutput) -> dict[str, Any]:
    """A tool's whole result: the run context holds it when the answer was cut to the budget."""
    if output.run is not None and output.run.result is not None:
        return output.run.result
    return output.structured


def _gate(failed: bool, enabled: bool) -> str:
    return "failed" if failed and enabled else "passed"


async def lint_phase(ctx: ToolContext, args: CheckArgs) -> PhaseResult:
    from tools.code_analysis.args import LintArgs
    from tools.code_analysis.lint import lint

    result = full_result(await lint(ctx, LintArgs(root=args.root, paths=args.paths)))
    gate = ctx.settings.check_lint_clean
    summary = {
        "total": result["total"],
        "counts": result["counts"],
        "fixable_count": result["fixable_count"],
        "files_checked": result["files_checked"],
        "engine": result.get("engine"),
        "gate": "lint clean (check_lint_clean)" if gate else None,
    }
    return PhaseResult(_gate(result["total"] > 0, gate), summary, {"diagnostics": result["diagnostics"]})


async def format_phase(ctx: ToolContext, args: CheckArgs) -> PhaseResult:
    from tools.code_analysis.args import FormatCheckArgs
    from tools.code_analysis.format_check import format_check

    result = full_result(await format_check(ctx, FormatCheckArgs(root=args.root, paths=args.paths)))
    gate = ctx.settings.check_format_clean
    files = [f for f in result["files"] if f["changed"] or "error" in f]
    summary = {
        "changed_count": result["changed_count"],
        "error_count": result["error_count"],
        "files_checked": result["files_checked"],
        "gate": "formatted (check_format_clean)" if gate else None,
    }
    failed = result["changed_count"] > 0 or result["error_count"] > 0
    return PhaseResult(_gate(failed, gate), summary, {"files": files})


async def analyze_phase(ctx: ToolContext, args: CheckArgs) -> PhaseResult:
    from tools.code_analysis.args import AnalyzeArgs
    from tools.code_analysis.metrics import analyze

    result = full_result(await analyze(ctx, AnalyzeArgs(root=args.root, paths=args.paths)))
    limit = ctx.settings.check_max_complexity
    functions: list[dict[str, Any]] = result["functions"]  # worst first
    over = [fn for fn in functions if limit is not None and fn["complexity"] > limit]
    summary = {
        **result["summary"],
        "over_limit": len(over),
        "gate": f"complexity <= {limit} (check_max_complexity)" if limit is not None else None,
    }
    lists = {"over_limit": over, "functions": functions[:WORST_FUNCTIONS], "errors": result["errors"]}
    return PhaseResult("failed" if over else "passed", summary, lists)


def _tests_status(ctx: ToolContext, result: dict[str, Any]) -> tuple[str, str | None]:
    status = str(result.get("status"))
    counts: dict[str, int] = result.get("counts") or {}
    ran = sum(v for k, v in counts.items() if k != "deselected")
    if status == "passed" and ran == 0:
        if ctx.settings.check_require_tests:
            return "failed", "no tests ran, and check_require_tests is on"
        return "skipped", "no tests ran: " + str(result.get("message") or "the root has no tests")
    if status in ("failed", "crashed") or (status == "error" and counts.get("errors")):
        return _gate(True, ctx.settings.check_tests_pass), None
    if status in ("passed", "timeout", "cancelled", "error"):
        return status, None
    return "error", f"unexpected test run status {status!r}"


async def tests_phase(ctx: ToolContext, args: CheckArgs) -> PhaseResult:
    from tools.test_runner.args import RunTestsArgs
    from tools.test_runner.tool import load_test_runner_tools, pytest_available, run_tests

    spec = next(s for s in load_test_runner_tools() if s.name == "run_tests")
    why_not = spec.disabled_reason(ctx.settings) or await pytest_available(ctx.app)
    if why_not:
        return PhaseResult("skipped", {"message": f"tests not run: {why_not}"})
    options: dict[str, Any] = {"root": args.root}
    note = None
    if args.affected:
        if "affected" in RunTestsArgs.model_fields:
            options["affected"] = True
        else:
            note = "affected-test selection is not available in this server: all tests ran"
    result = full_result(await run_tests(ctx, RunTestsArgs.model_validate(options)))
    status, message = _tests_status(ctx, result)
    keep = ("counts", "duration_s", "collected", "message", "flaky", "selection", "affected")
    summary = {k: result[k] for k in keep if k in result}
    summary["tests_run_id"] = result.get("run_id")  # its log: get_run(tests_run_id, section="log")
    summary["gate"] = "tests pass (check_tests_pass)" if ctx.settings.check_tests_pass else None
    if message:
        summary["message"] = message
    if note:
        summary["note"] = note
    lists = {k: v for k, v in result.items() if isinstance(v, list)}
    return PhaseResult(status, summary, lists)


PHASE_FNS: dict[str, PhaseFn] = {
    "lint": lint_phase,
    "format": format_phase,
    "analyze": analyze_phase,
    "tests": tests_phase,
}
