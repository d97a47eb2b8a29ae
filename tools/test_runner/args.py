"""The tools' arguments (their JSON schemas) and how they become pytest's command line.

User values reach pytest only as data: node ids and paths pass the path check (and must lie in
the call's root), `-k`/`-m` expressions are separate arguments that may not look like options.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, StringConstraints

from mcp_server.api import PathRefused, ToolArgs, ToolContext, ToolError

Selector = Annotated[str, StringConstraints(min_length=1, max_length=4096)]
Expression = Annotated[str, StringConstraints(min_length=1, max_length=4096)]


class ListTestsArgs(ToolArgs):
    root: str | None = Field(default=None, description="Workspace root (default: the first allowed root).")
    select: list[Selector] | None = Field(
        default=None,
        max_length=1000,
        description="pytest node ids (`tests/test_x.py::test_y[1]`) or paths, relative to the root.",
    )
    keyword: Expression | None = Field(default=None, description="A pytest `-k` expression.")
    markers: Expression | None = Field(default=None, description="A pytest `-m` marker expression.")
    affected: bool = Field(
        default=False,
        description="Only the tests a change can affect since their last run (from what each test executed "
        "then), plus those that failed or have no record; the result's `selection` says what and why.",
    )


class RunTestsArgs(ListTestsArgs):
    failed_first: bool = Field(
        default=False,
        description="Run the tests that failed last time first, then the rest fastest first (from the "
        "server's test history; pytest's `--ff` when there is none yet).",
    )
    max_failures: int | None = Field(default=None, ge=1, description="Stop after this many failures (`--maxfail`).")
    workers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Run in this many forked children at once, each a share of the tests balanced by their "
        "recorded durations (default: the test_workers setting; capped at the CPU count). Session and "
        "module fixtures then run once per child, as with pytest-xdist.",
    )
    timeout_s: float | None = Field(
        default=None, gt=0, description="Kill the run after this many seconds (capped by run_timeout_max_s)."
    )
    wait: bool = Field(
        default=True,
        description="Wait for the result. With false, return at once with status `running` and the run_id; "
        "get_run(run_id) then returns the result, cancel_run(run_id) stops it.",
    )


def _expression(flag: str, name: str, value: str) -> list[str]:
    if value.lstrip() != value or value.startswith("-"):
        raise ToolError(f"{name}: {value!r} is not a pytest {flag} expression (it may not start with '-' or a space)")
    return [flag, value]


def selection_arg(ctx: ToolContext, root: Path, item: str) -> str:
    """A node id or path, checked: its path part must exist inside `root`."""
    path_part, sep, rest = item.partition("::")
    resolved = ctx.path(path_part, root=root, must_exist=True)
    if not resolved.path.is_relative_to(root):
        raise PathRefused(f"select {item!r} is outside the root {str(root)!r}")
    if path_part.startswith("-"):
        path_part = "./" + path_part  # a file named like an option is still a file
    return path_part + sep + rest


def pytest_args(ctx: ToolContext, root: Path, args: ListTestsArgs) -> list[str]:
    argv: list[str] = []
    if args.keyword is not None:
        argv += _expression("-k", "keyword", args.keyword)
    if args.markers is not None:
        argv += _expression("-m", "markers", args.markers)
    if isinstance(args, RunTestsArgs):
        if args.failed_first:
            argv.append("--ff")
        if args.max_failures is not None:
            argv.append(f"--maxfail={args.max_failures}")
    selections = [selection_arg(ctx, root, item) for item in args.select or ()]
    if selections:
        argv += ["--", *selections]  # data, never options
    return argv
