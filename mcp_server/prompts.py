"""Prompts: the tools packaged into workflows a person or an agent can pick from a menu.

- `fix-lint` lints a path with ruff's safe fixes and hands over the diagnostics and the diff;
- `triage-failures` hands over the failures of the caller's last test run, tracebacks trimmed;
- `review-change` runs `check` on the given paths (lint + format + tests when `check` is absent).

A prompt runs its tools through the same call path as `tools/call` (guards, policy, redaction,
the output budget), so a prompt can do nothing a client could not do with the tools. Missing
required arguments and unknown prompts are -32602, naming what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import mcp_types as types
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from mcp_server.registry import decode_cursor, encode_cursor
from mcp_server.runs import RunContext

MAX_PROMPT_CHARS: Final = 12_000
MAX_FAILURES: Final = 10
MAX_TRACEBACK_LINES: Final = 25

CallTool = Callable[[str, dict[str, Any]], Awaitable[types.CallToolResult]]
"""Calls a tool on behalf of the prompt's caller (the `tools/call` path)."""
HasTool = Callable[[str], bool]
LastRun = Callable[[str], RunContext | None]
"""The caller's most recent run of a tool, or None."""


@dataclass(frozen=True)
class PromptDeps:
    call_tool: CallTool
    has_tool: HasTool
    last_run: LastRun


Builder = Callable[[PromptDeps, dict[str, str]], Awaitable[str]]


@dataclass(frozen=True)
class PromptSpec:
    name: str
    title: str
    description: str
    arguments: tuple[types.PromptArgument, ...]
    build: Builder

    def to_prompt(self) -> types.Prompt:
        return types.Prompt(
            name=self.name, title=self.title, description=self.description, arguments=list(self.arguments)
        )


def _arg(name: str, description: str, *, required: bool = False) -> types.PromptArgument:
    return types.PromptArgument(name=name, description=description, required=required)


def _root_args(args: Mapping[str, str]) -> dict[str, Any]:
    return {"root": args["root"]} if args.get("root") else {}


def _paths(value: str) -> list[str]:
    return [p for p in (part.strip() for part in value.replace("\n", ",").split(",")) if p]


def _result_text(result: types.CallToolResult) -> str:
    if result.structured_content is not None:
        return json.dumps(result.structured_content, indent=1, default=str)
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


def _cut(text: str, limit: int = MAX_PROMPT_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 60] + f"\n…[{len(text) - limit + 60} characters cut]"


async def _fix_lint(deps: PromptDeps, args: dict[str, str]) -> str:
    result = await deps.call_tool("lint", {"paths": _paths(args["path"]), "fix": True, **_root_args(args)})
    body = result.structured_content or {}
    diff = str(body.get("fix_diff") or "")
    shown = {k: v for k, v in body.items() if k != "fix_diff"}
    parts = [
        f"Fix the ruff lint findings in `{args['path']}`.",
        "Apply the safe fixes below (a unified diff; nothing has been written), then fix by hand what they leave.",
        "## Diagnostics",
        _cut(json.dumps(shown, indent=1, default=str) if body else _result_text(result), MAX_PROMPT_CHARS // 2),
        "## Safe-fix diff",
        _cut(diff, MAX_PROMPT_CHARS // 2) if diff else "(ruff has no safe fixes for these findings)",
    ]
    return "\n\n".join(parts)


def _trim_traceback(text: str) -> str:
    lines = text.splitlines()
    if len(lines) <= MAX_TRACEBACK_LINES:
        return text
    head = lines[:5]
    tail = lines[-(MAX_TRACEBACK_LINES - 6) :]
    return "\n".join([*head, f"… [{len(lines) - len(head) - len(tail)} lines trimmed]", *tail])


async def _triage_failures(deps: PromptDeps, args: dict[str, str]) -> str:
    run = deps.last_run("run_tests")
    if run is None:
        return "There is no test run of yours yet. Call the `run_tests` tool, then get this prompt again."
    if run.running:
        return f"Your last test run {run.run_id} is still running: get this prompt again when it has finished."
    result = run.result or {}
    failures = [f for f in result.get("failures", []) if isinstance(f, dict)]
    if args.get("test"):
        failures = [f for f in failures if str(f.get("nodeid", "")).startswith(args["test"])]
    counts = result.get("counts", {})
    lines = [
        f"Triage the failures of test run {run.run_id} (status: {result.get('status', 'unknown')}, counts: "
        f"{json.dumps(counts, default=str)}).",
        "For each failure say whether the test or the code is wrong, and propose the smallest fix.",
    ]
    if not failures:
        lines.append("The run has no failures.")
    for failure in failures[:MAX_FAILURES]:
        name = failure.get("nodeid") or failure.get("name") or "?"
        trace = _trim_traceback(str(failure.get("traceback") or failure.get("message") or ""))
        lines.append(f"## {name}\n```\n{trace}\n```")
    if len(failures) > MAX_FAILURES:
        lines.append(f"({len(failures) - MAX_FAILURES} more failures: get_run({run.run_id!r}) has them all)")
    return _cut("\n\n".join(lines))


async def _review_change(deps: PromptDeps, args: dict[str, str]) -> str:
    paths = _paths(args["paths"])
    root = _root_args(args)
    sections = [f"Review the change to {', '.join(f'`{p}`' for p in paths)}: is it correct, tested, clean?"]
    if deps.has_tool("check"):
        result = await deps.call_tool("check", {"paths": paths, **root})
        sections += ["## check", _cut(_result_text(result), MAX_PROMPT_CHARS - 500)]
    else:
        budget = (MAX_PROMPT_CHARS - 500) // 3
        for name, arguments in (
            ("lint", {"paths": paths, **root}),
            ("format_check", {"paths": paths, **root}),
            ("run_tests", root),
        ):
            if not deps.has_tool(name):
                sections.append(f"## {name}\n(not available on this server)")
                continue
            result = await deps.call_tool(name, arguments)
            sections += [f"## {name}", _cut(_result_text(result), budget)]
    return "\n\n".join(sections)


PROMPTS: Final[tuple[PromptSpec, ...]] = (
    PromptSpec(
        name="fix-lint",
        title="Fix lint findings",
        description="Lint a path with ruff; the diagnostics and the safe-fix diff, ready to apply.",
        arguments=(
            _arg("path", "A file or folder under a root (comma-separated for several).", required=True),
            _arg("root", "The workspace root (default: the first allowed root)."),
        ),
        build=_fix_lint,
    ),
    PromptSpec(
        name="triage-failures",
        title="Triage test failures",
        description="The failures of your last run_tests run, with trimmed tracebacks, to diagnose.",
        arguments=(_arg("test", "Only the failures whose node id starts with this (a file or a node id)."),),
        build=_triage_failures,
    ),
    PromptSpec(
        name="review-change",
        title="Review a change",
        description="Run `check` (or lint, format check and tests) on the changed paths and review the change.",
        arguments=(
            _arg("paths", "The changed files, comma-separated, relative to the root.", required=True),
            _arg("root", "The workspace root (default: the first allowed root)."),
        ),
        build=_review_change,
    ),
)


class PromptCatalog:
    def __init__(self, prompts: Sequence[PromptSpec] = PROMPTS, page_size: int = 50) -> None:
        self._prompts = {p.name: p for p in prompts}
        self.page_size = max(1, page_size)

    def get(self, name: str) -> PromptSpec | None:
        return self._prompts.get(name)

    def names(self) -> list[str]:
        return list(self._prompts)

    def list_page(self, cursor: str | None) -> types.ListPromptsResult:
        names = self.names()
        offset = decode_cursor(cursor) if cursor else 0
        if offset > len(names):
            raise MCPError(INVALID_PARAMS, f"invalid cursor {cursor!r}: past the end of the list")
        chunk = names[offset : offset + self.page_size]
        next_cursor = encode_cursor(offset + self.page_size) if offset + self.page_size < len(names) else None
        return types.ListPromptsResult(prompts=[self._prompts[n].to_prompt() for n in chunk], next_cursor=next_cursor)

    def check_arguments(self, name: str, arguments: Mapping[str, str] | None) -> tuple[PromptSpec, dict[str, str]]:
        spec = self._prompts.get(name)
        if spec is None:
            raise MCPError(INVALID_PARAMS, f"unknown prompt {name!r}")
        given = dict(arguments or {})
        declared = {a.name for a in spec.arguments}
        unknown = sorted(set(given) - declared)
        if unknown:
            raise MCPError(INVALID_PARAMS, f"prompt {name!r} has no argument {unknown[0]!r}")
        for argument in spec.arguments:
            if argument.required and not str(given.get(argument.name, "")).strip():
                raise MCPError(INVALID_PARAMS, f"prompt {name!r}: missing required argument {argument.name!r}")
        return spec, given

    async def get_prompt(
        self, deps: PromptDeps, name: str, arguments: Mapping[str, str] | None
    ) -> types.GetPromptResult:
        spec, given = self.check_arguments(name, arguments)
        text = await spec.build(deps, given)
        return types.GetPromptResult(
            description=spec.description,
            messages=[types.PromptMessage(role="user", content=types.TextContent(type="text", text=_cut(text)))],
        )
