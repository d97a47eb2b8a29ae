"""The `analyze` tool: per-function complexity and size, in-process with `ast`, cached per content hash."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio.to_thread

from mcp_server.api import FileChecker, FileSkipped, ToolContext, ToolOutput
from tools.code_analysis.args import AnalyzeArgs
from tools.code_analysis.cli_runner import RuffCli
from tools.code_analysis.complexity import FileMetrics, analyze_source
from tools.code_analysis.state import AnalysisState, get_state
from tools.code_analysis.targets import Tree, resolve_target
from tools.code_analysis.workspace import SOURCE_SUFFIXES


def _metrics_key(state: AnalysisState, content: str) -> Any:
    # Metrics depend on the bytes alone: no root, path or config in the key.
    return state.key("analyze", Path("/"), "", content, "")


def _analyze_files(pending: list[tuple[str, str]], checker: FileChecker) -> dict[str, FileMetrics]:
    """Blocking: read (through the path check) and analyse files; (path, rel) in, rel -> metrics out."""
    out: dict[str, FileMetrics] = {}
    for path, rel in pending:
        try:
            text = checker.read(path)[1].decode("utf-8")
        except FileSkipped as exc:
            out[rel] = FileMetrics(error={"line": None, "message": f"cannot read: {exc.reason}"})
            continue
        except UnicodeDecodeError:
            out[rel] = FileMetrics(error={"line": None, "message": "cannot read: not UTF-8 text"})
            continue
        out[rel] = analyze_source(text, rel)
    return out


async def _collect(
    ctx: ToolContext, state: AnalysisState, args: AnalyzeArgs, skipped: dict[str, Any]
) -> dict[str, FileMetrics]:
    target = await resolve_target(ctx, args)
    found: dict[str, FileMetrics] = {}
    if not isinstance(target, Tree):
        for doc in target:
            key = _metrics_key(state, doc.digest)
            metrics: FileMetrics | None = state.results.get(key)
            if metrics is None:
                metrics = await anyio.to_thread.run_sync(analyze_source, doc.text, doc.rel)
                state.results.put(key, metrics)
            found[doc.rel] = metrics
        return found
    checker = ctx.file_checker()
    listing = await state.list_tree(ctx.app, RuffCli(ctx, state.binary), target, SOURCE_SUFFIXES, checker)
    skipped.update(listing.skipped_field())
    pending: list[tuple[str, str]] = []
    keys = {}
    for f in listing.files:
        keys[f.rel] = _metrics_key(state, f.state.digest)
        cached: FileMetrics | None = state.results.get(keys[f.rel])
        if cached is None:
            pending.append((f.path, f.rel))
        else:
            found[f.rel] = cached
    if pending:
        fresh = await anyio.to_thread.run_sync(_analyze_files, pending, checker)
        still = await state.unchanged([f for f in listing.files if f.rel in fresh])
        for f in listing.files:
            if f.rel in fresh:
                found[f.rel] = fresh[f.rel]
                unreadable = str((fresh[f.rel].error or {}).get("message", "")).startswith("cannot read")
                if f.path in still and not unreadable:
                    state.results.put(keys[f.rel], fresh[f.rel])
    return found


async def analyze(ctx: ToolContext, args: AnalyzeArgs) -> ToolOutput:
    state = await get_state(ctx.app)
    skipped: dict[str, Any] = {"skipped": [], "skipped_count": 0}
    per_file = await _collect(ctx, state, args, skipped)
    functions: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    classes = code_lines = 0
    for rel in sorted(per_file):
        metrics = per_file[rel]
        functions.extend({"path": rel, **fn} for fn in metrics.functions)
        classes += metrics.classes
        code_lines += metrics.code_lines
        if metrics.error is not None:
            errors.append({"path": rel, **metrics.error})
    functions.sort(key=lambda fn: (-fn["complexity"], fn["path"], fn["line"]))
    complexities = [fn["complexity"] for fn in functions]
    summary = {
        "files": len(per_file),
        "functions": len(functions),
        "classes": classes,
        "code_lines": code_lines,
        "max_complexity": max(complexities, default=0),
        "mean_complexity": round(sum(complexities) / len(complexities), 2) if complexities else 0.0,
    }
    result: dict[str, Any] = {
        "summary": summary,
        "errors": errors,
        **skipped,
        "truncated": False,
        "functions": functions,
    }
    return ToolOutput(result, pageable=("functions",))
