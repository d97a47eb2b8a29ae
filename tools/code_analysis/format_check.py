"""The `format_check` tool: what `ruff format` would change, as diffs; nothing is written."""

from __future__ import annotations

import logging
from typing import Any

import anyio.to_thread

from mcp_server.api import FileChecker, FileSkipped, ToolContext, ToolOutput
from tools.code_analysis.args import FormatCheckArgs
from tools.code_analysis.cli_runner import RuffCli
from tools.code_analysis.diagnostics import SYNTAX_ERROR, rel_path
from tools.code_analysis.lsp import LinterGone
from tools.code_analysis.ruff_pool import get_pool
from tools.code_analysis.selection import Selection
from tools.code_analysis.state import AnalysisState, TreeFile, TreeListing, get_state
from tools.code_analysis.targets import Document, Tree, resolve_target
from tools.code_analysis.text_edits import apply_cli_edits, apply_lsp_edits, unified_diff
from tools.code_analysis.workspace import SOURCE_SUFFIXES

logger = logging.getLogger("mcp_server.code_analysis")

Entry = dict[str, Any]


def _entry(rel: str, old: str, new: str | None, error: str | None = None) -> Entry:
    diff = unified_diff(old, new, rel) if new is not None else ""
    entry: Entry = {"path": rel, "changed": bool(diff), "diff": diff}
    if error:
        entry["error"] = error
    return entry


async def _document(ctx: ToolContext, state: AnalysisState, cli: RuffCli, doc: Document) -> Entry:
    key = state.doc_key("format", doc)
    cached: Entry | None = state.results.get(key)
    if cached is not None:
        return cached
    try:
        if not doc.for_language_server:
            raise LinterGone(f"{doc.rel} is not Python source for the language server")
        pool = await get_pool(ctx.app)
        async with pool.lease(doc.root, Selection(), doc.configs) as server:
            edits = await server.format(doc.path, doc.text)
            if edits is None:  # already formatted, or ruff could not parse it
                items = await server.diagnostics(doc.path, doc.text)
                bad = [i for i in items if (i.get("code") or SYNTAX_ERROR) == SYNTAX_ERROR]
                line = bad[0].get("range", {}).get("start", {}).get("line", 0) + 1 if bad else 0
                error = f"cannot format: syntax error at line {line}: {bad[0].get('message')}" if bad else None
                entry = _entry(doc.rel, doc.text, None, error)
            else:
                entry = _entry(doc.rel, doc.text, apply_lsp_edits(doc.text, edits, server.encoding))
    except LinterGone as exc:
        logger.info("ruff server unavailable for %s (%s): using ruff format", doc.rel, exc)
        formatted, error = await cli.format_text(doc.root, str(doc.path), doc.text)
        entry = _entry(doc.rel, doc.text, formatted, f"cannot format: {error}" if error else None)
    state.results.put(key, entry)
    return entry


def _read_texts(paths: list[str], checker: FileChecker) -> dict[str, str]:
    """Blocking: the texts of the files to diff, each through the path check."""
    texts: dict[str, str] = {}
    for path in paths:
        try:
            texts[path] = checker.read(path)[1].decode("utf-8")
        except (FileSkipped, UnicodeDecodeError):
            continue
    return texts


async def _tree(ctx: ToolContext, state: AnalysisState, cli: RuffCli, tree: Tree) -> tuple[list[Entry], TreeListing]:
    checker = ctx.file_checker()
    listing = await state.list_tree(ctx.app, cli, tree, SOURCE_SUFFIXES, checker)
    entries: list[Entry] = []
    misses: list[TreeFile] = []
    for f in listing.files:
        cached: Entry | None = state.results.get(state.file_key("format", tree.root, f))
        if cached is None:
            misses.append(f)
        else:
            entries.append(cached)
    if misses:
        records: dict[str, dict[str, Any]] = {}
        for record in await cli.format_check(tree.root, [m.rel for m in misses]):
            records.setdefault(rel_path(str(record.get("filename", "")), tree.root), record)
        changed = [m.path for m in misses if (records.get(m.rel) or {}).get("code") == "unformatted"]
        texts = await anyio.to_thread.run_sync(_read_texts, changed, checker)
        still = await state.unchanged(misses)
        for f in misses:
            rec = records.get(f.rel)
            if rec is None:
                entry = _entry(f.rel, "", "")
            elif rec.get("code") == "unformatted" and f.path in texts:
                old = texts[f.path]
                entry = _entry(f.rel, old, apply_cli_edits(old, (rec.get("fix") or {}).get("edits") or []))
            else:
                row = (rec.get("location") or {}).get("row")
                entry = _entry(f.rel, "", None, f"cannot format: line {row}: {rec.get('message')}")
            entries.append(entry)
            if f.path in still:
                state.results.put(state.file_key("format", tree.root, f), entry)
    return entries, listing


async def format_check(ctx: ToolContext, args: FormatCheckArgs) -> ToolOutput:
    state = await get_state(ctx.app)
    cli = RuffCli(ctx, state.binary)
    target = await resolve_target(ctx, args)
    skipped: dict[str, Any] = {"skipped": [], "skipped_count": 0}
    if isinstance(target, Tree):
        entries, listing = await _tree(ctx, state, cli, target)
        checked = len(listing.files)
        skipped = listing.skipped_field()
    else:
        entries = [await _document(ctx, state, cli, doc) for doc in target]
        checked = len(entries)
    entries.sort(key=lambda e: (not e["changed"], "error" not in e, e["path"]))
    result: dict[str, Any] = {
        "changed_count": sum(1 for e in entries if e["changed"]),
        "error_count": sum(1 for e in entries if "error" in e),
        "files_checked": checked,
        **skipped,
        "truncated": False,
        "files": entries,
    }
    return ToolOutput(result, pageable=("files",))
