"""The `ruff` command line, run through the executor: whole trees, discovery, and the fallback path.

Every argument vector is fixed; user values (paths, rule selectors) go after `--` or inside one
`--select=...` argument. `--no-fix` is always passed to `ruff check`, so a project's `fix = true`
never makes us write a file; `ruff format` only ever runs with `--check` or on stdin.
"""

from __future__ import annotations

import functools
import json
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio.to_thread

from mcp_server.api import ProcessResult, ToolContext, ToolError, trace_span
from tools.code_analysis.selection import Selection

CLI_TIMEOUT_S = 300.0
MAX_OUTPUT = 256 * 1024 * 1024
STREAMED_KEEP = 64 * 1024
"""Of a streamed output (its records go to a `JsonLines`), only this much is kept as text."""
INLINE_PARSE_CHARS = 256 * 1024
MAX_ARGV_CHARS = 512 * 1024
"""Bytes of file names per ruff run (Linux takes about 2 MiB of arguments and environment in all)."""
_CODE_FIELD = re.compile(r'"code":(?:"([^"\\]*)"|null)')
"""A record's top-level `"code"` (JSON-escaped strings inside a record cannot contain it unescaped)."""
_UNKNOWN_SELECTOR = re.compile(r"Unknown rule selector `([^`]*)` in `(\w+)`")
RUFF_ENV: ContextVar[Callable[[], Mapping[str, str] | None] | None] = ContextVar("RUFF_ENV", default=None)
"""Extra environment for the current task's ruff CLI runs, asked at each start (`check` caps
ruff's threads with it while its tests phase runs beside: tools/workflow/check.py)."""


@dataclass(frozen=True, slots=True)
class RuffBinary:
    path: str
    version: str


@functools.cache
def ruff_binary() -> RuffBinary:
    """The ruff that our `ruff` dependency installed (not whatever is on PATH), and its version."""
    try:
        from ruff import find_ruff_bin  # type: ignore[import-untyped]
    except ImportError:
        raise ToolError("the ruff package is not installed in the server's environment") from None
    try:
        path = find_ruff_bin()
    except FileNotFoundError:
        raise ToolError("the ruff package is installed but its binary was not found") from None
    return RuffBinary(str(path), metadata.version("ruff"))


def _first_lines(text: str, n: int = 6) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[:n])[:800]


def _ruff_cause(stderr: str) -> str:
    """ruff's "ruff failed / Cause: ..." chain as one line, without its source-snippet art."""
    causes: list[str] = []
    for raw in stderr.splitlines():
        line = raw.strip()
        if not line or line == "ruff failed" or line[0] in "|^" or line[:1].isdigit():
            continue
        line = line.removeprefix("Cause:").removeprefix("error:").strip()
        if line not in causes:
            causes.append(line)
    return ": ".join(causes[:4])[:800]


def ruff_failure(result: ProcessResult, what: str) -> ToolError:
    """A clear tool error for a failed ruff run, naming an unknown selector when that is the cause."""
    if result.timed_out:
        return ToolError(f"{what} timed out")
    match = _UNKNOWN_SELECTOR.search(result.stderr)
    if match:
        return ToolError(f"unknown rule selector {match.group(1)!r} in {match.group(2)}")
    detail = _ruff_cause(result.stderr) or f"exit status {result.returncode}"
    return ToolError(f"{what} failed: {detail}")


_CLI_MODES = {"--show-files": "discover", "--fix-only": "fix", "--check": "check", "--isolated": "validate"}


def _cli_attributes(args: Sequence[str], stdin: bool) -> dict[str, Any]:
    """The CLI span's attributes: engine, mode (discover, fix, check, validate, lint, format),
    whether the text came on stdin (one document), and how many paths were named after `--` (a
    tree). Only the options before `--` are looked at: a long file list costs nothing here."""
    end = args.index("--") if "--" in args[:24] else len(args)
    head = args[:end]
    mode = next((name for flag, name in _CLI_MODES.items() if flag in head), "lint" if args[0] == "check" else "format")
    attributes: dict[str, Any] = {"mcp_code_tools.ruff.engine": "cli", "mcp_code_tools.ruff.mode": mode}
    attributes["mcp_code_tools.ruff.stdin"] = stdin
    if end < len(args):
        attributes["mcp_code_tools.ruff.paths"] = len(args) - end - 1
    return attributes


def chunked(targets: Sequence[str], max_chars: int = MAX_ARGV_CHARS) -> list[list[str]]:
    """Explicit file lists cut into argument vectors the kernel takes (ARG_MAX)."""
    chunks: list[list[str]] = []
    current: list[str] = []
    size = 0
    for target in targets:
        if current and size + len(target) + 1 > max_chars:
            chunks.append(current)
            current, size = [], 0
        current.append(target)
        size += len(target.encode("utf-8", "surrogateescape")) + 1
    if current:
        chunks.append(current)
    return chunks


class JsonLines:
    """ruff's `json-lines` output as it streams: the first `cap` records parsed, the rest only counted.

    Bounds the memory and the work of one call whatever ruff finds (a million diagnostics is
    ~400 MB of JSON: it is never held, and parsed only up to the cap).
    """

    def __init__(self, cap: int, convert: Callable[[dict[str, Any]], Any] | None = None) -> None:
        self.cap = cap
        self.convert = convert
        """Applied to each record as it is parsed (so the raw records are never all held)."""
        self.records: list[Any] = []
        self.total = 0
        self.codes: Counter[str | None] = Counter()
        """Rule codes of the records past the cap (None: a syntax error), read without parsing."""
        self.bad = 0
        self._partial = ""

    @property
    def truncated(self) -> bool:
        return self.total > len(self.records)

    def feed(self, text: str) -> None:
        if len(self.records) >= self.cap:  # past the cap: count (per rule code too), do not parse
            data = self._partial + text  # the partial is at most one record long
            complete, newline, self._partial = data.rpartition("\n")
            if newline:
                self.total += complete.count("\n") + 1
                self.codes.update(code or None for code in _CODE_FIELD.findall(complete))
            else:
                self._partial = data
            return
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)

    def finish(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        self.total += 1
        if len(self.records) >= self.cap:
            self.codes.update(code or None for code in _CODE_FIELD.findall(line))
            return
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            self.bad += 1
            return
        if isinstance(record, dict):
            self.records.append(record if self.convert is None else self.convert(record))


class LineCap:
    """Lines of a streamed output: the first `cap` kept, the rest only counted."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.lines: list[str] = []
        self.total = 0
        self._partial = ""

    def feed(self, text: str) -> None:
        data = self._partial + text
        if len(self.lines) >= self.cap:
            self.total += sum(1 for line in data.split("\n")[:-1] if line.strip())
            self._partial = data.rpartition("\n")[2]
            return
        parts = data.split("\n")
        self._partial = parts.pop()
        for line in parts:
            self._line(line)

    def finish(self) -> None:
        if self._partial:
            self._line(self._partial)
            self._partial = ""

    def _line(self, line: str) -> None:
        if not line.strip():
            return
        self.total += 1
        if len(self.lines) < self.cap:
            self.lines.append(line)


class RuffCli:
    """`ruff check` / `ruff format` for one tool call.

    Nothing is written to the root or where a project's `cache-dir` points: every run has
    `--no-cache`. Measured (2 shared cores, 137 and 3,000 files): a warm `--cache-dir` was no faster
    (no-cache/warm medians 0.88 and 0.99), because our result cache already keeps ruff off every
    unchanged file, and what reaches ruff is what changed.
    """

    def __init__(self, ctx: ToolContext, binary: RuffBinary) -> None:
        self.ctx = ctx
        self.binary = binary
        self.timeout_s = min(CLI_TIMEOUT_S, ctx.settings.run_timeout_max_s)

    async def _run(
        self,
        args: Sequence[str],
        root: Path,
        stdin: str | None = None,
        *,
        max_output: int = MAX_OUTPUT,
        on_output: Callable[[str], None] | None = None,
    ) -> ProcessResult:
        # A child span of the call's: the CLI path (`ruff check` / `ruff format`), vs `ruff server`
        # and `result cache hit` (lint.py, format_check.py). A flag test when telemetry is off.
        with trace_span(f"ruff {args[0]}", _cli_attributes(args, stdin is not None)):
            return await self.ctx.executor.run(
                [self.binary.path, *args],
                cwd=root,
                tool=self.ctx.tool,
                connection=self.ctx.connection_id,
                timeout_s=self.timeout_s,
                stdin=stdin.encode("utf-8") if stdin is not None else None,
                max_output=max_output,
                on_output=on_output,
                env_extra=extra() if (extra := RUFF_ENV.get()) else None,
                redact=False,  # parsed raw (JSON, source text): the result pipeline redacts what leaves
            )

    async def _records(
        self, args: Sequence[str], root: Path, what: str, lines: JsonLines, stdin: str | None = None
    ) -> None:
        """Run `ruff check --output-format json-lines ...`, streaming its records into `lines`."""
        result = await self._run(args, root, stdin, max_output=STREAMED_KEEP, on_output=lines.feed)
        lines.finish()
        if result.timed_out or result.returncode not in (0, 1):
            raise ruff_failure(result, what)
        if lines.bad:
            raise ToolError(f"{what} gave output that is not JSON ({lines.bad} lines)")

    async def _json(self, args: Sequence[str], root: Path, what: str, stdin: str | None = None) -> list[Any]:
        result = await self._run(args, root, stdin)
        if result.timed_out or result.returncode not in (0, 1):
            raise ruff_failure(result, what)
        try:
            data = json.loads(result.stdout or "[]")
        except json.JSONDecodeError:
            raise ToolError(f"{what} gave output that is not JSON ({_first_lines(result.stdout, 2)!r})") from None
        if not isinstance(data, list):
            raise ToolError(f"{what} gave unexpected JSON")
        return data

    async def validate(self, selection: Selection, root: Path) -> None:
        """Raise a clear error if ruff does not know one of the selectors."""
        args = ["check", "--no-fix", "--exit-zero", "--no-cache", "--isolated", *selection.cli_args()]
        result = await self._run([*args, "--stdin-filename", "_.py", "-"], root, stdin="")
        if result.timed_out or result.returncode not in (0, 1):
            raise ruff_failure(result, "checking the rule selection")

    async def check(self, root: Path, files: Sequence[str], selection: Selection, lines: JsonLines) -> JsonLines:
        """`ruff check` over checked files, named one by one (never a folder: ruff would read what
        its own discovery finds there, unchecked). At most `cap` records are kept; all are counted."""
        args = ["check", "--output-format", "json-lines", "--no-fix", "--exit-zero", "--force-exclude"]
        args += ["--no-cache", *selection.cli_args(), "--"]
        for chunk in chunked(files):
            await self._records([*args, *chunk], root, "ruff check", lines)
        return lines

    async def check_text(
        self, root: Path, filename: str, text: str, selection: Selection, lines: JsonLines
    ) -> JsonLines:
        args = ["check", "--output-format", "json-lines", "--no-fix", "--exit-zero", "--force-exclude", "--no-cache"]
        args += [*selection.cli_args(), "--stdin-filename", filename, "-"]
        await self._records(args, root, "ruff check", lines, stdin=text)
        return lines

    async def fix_text(self, root: Path, filename: str, text: str, selection: Selection, unsafe: bool = False) -> str:
        """The text after ruff's safe fixes, and its unsafe ones if `unsafe` (whatever the project's
        `unsafe-fixes` says). Nothing is written: the text goes through stdin."""
        args = ["check", "--fix-only", "--exit-zero", "--force-exclude", "--no-cache", *selection.cli_args()]
        args.append("--unsafe-fixes" if unsafe else "--no-unsafe-fixes")
        result = await self._run([*args, "--stdin-filename", filename, "-"], root, stdin=text)
        if result.timed_out or result.returncode != 0:
            raise ruff_failure(result, "ruff check --fix-only")
        return result.stdout

    async def discover(self, root: Path, targets: Sequence[str], keep: int) -> tuple[list[str], int]:
        """The files ruff would check under `targets` (its include/exclude and .gitignore rules):
        the first `keep` of them, and how many more it listed (counted as they stream, never held)."""
        args = ["check", "--show-files", "--force-exclude", "--no-cache", "--", *targets]
        lines = LineCap(keep)
        result = await self._run(args, root, max_output=STREAMED_KEEP, on_output=lines.feed)
        lines.finish()
        if result.timed_out or result.returncode not in (0, 1):
            raise ruff_failure(result, "ruff check --show-files")
        return lines.lines, lines.total - len(lines.lines)

    async def format_check(self, root: Path, files: Sequence[str]) -> list[dict[str, Any]]:
        """`ruff format --check --output-format json` over checked files: those that would change, with edits."""
        args = ["format", "--check", "--output-format", "json", "--force-exclude", "--no-cache", "--"]
        out: list[dict[str, Any]] = []
        for chunk in chunked(files):
            result = await self._run([*args, *chunk], root)
            if result.timed_out or (result.returncode not in (0, 1) and not result.stdout.strip()):
                raise ruff_failure(result, "ruff format --check")
            try:
                if len(result.stdout) > INLINE_PARSE_CHARS:  # edits as long as the files: off the loop
                    data = await anyio.to_thread.run_sync(json.loads, result.stdout)
                else:
                    data = json.loads(result.stdout or "[]")
            except json.JSONDecodeError:
                raise ToolError("ruff format --check gave output that is not JSON") from None
            if isinstance(data, list):
                out += data
        return out

    async def format_text(self, root: Path, filename: str, text: str) -> tuple[str | None, str | None]:
        """(formatted text, None), or (None, why) when ruff cannot format it (a syntax error)."""
        args = ["format", "--force-exclude", "--no-cache", "--stdin-filename", filename, "-"]
        result = await self._run(args, root, stdin=text)
        if result.timed_out or result.stderr.lstrip().startswith("ruff failed"):  # not the text: ruff itself
            raise ruff_failure(result, "ruff format")
        if result.returncode != 0:
            return None, _first_lines(result.stderr, 2) or f"ruff format exit status {result.returncode}"
        return result.stdout, None
