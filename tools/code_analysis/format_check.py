"""The `format_check` tool: what `ruff format` would change, as diffs; nothing is written."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import anyio.to_thread

from mcp_server.api import FileChecker, FileSkipped, ToolContext, ToolOutput, trace_span
from tools.code_analysis.args import FormatCheckArgs
from tools.code_analysis.cache import hit_span
from tools.code_analysis.cli_runner import RuffCli
from tools.code_analysis.diagnostics import SYNTAX_ERROR, rel_path
from tools.code_analysis.lsp import LinterGone
from tools.code_analysis.ruff_pool import RuffServerPool, get_pool
from tools.code_analysis.selection import Selection
from tools.code_analysis.state import AnalysisState, TreeFile, TreeListing, get_state
from tools.code_analysis.targets import Document, Tree, resolve_target
from tools.code_analysis.text_edits import apply_cli_edits, apply_lsp_edits, unified_diff
from tools.code_analysis.workspace import SOURCE_SUFFIXES

logger = logging.getLogger("mcp_server.code_analysis")

Entry = dict[str, Any]
BATCH_BYTES = 32 * 1024 * 1024
"""Source bytes per `ruff format --check` run."""
MAX_DIFF_BYTES = 16 * 1024 * 1024
"""Diff text one call makes; past it, changed files are listed with `diff_omitted: true`."""


def _entry(rel: str, old: str, new: str | None, error: str | None = None) -> Entry:
    diff = unified_diff(old, new, rel) if new is not None else ""
    entry: Entry = {"path": rel, "changed": bool(diff), "diff": diff}
    if error:
        entry["error"] = error
    return entry


async def _document(ctx: ToolContext, state: AnalysisState, cli: RuffCli, doc: Document) -> Entry:
    key = state.doc_key("format", doc)
    looked_up = time.perf_counter()
    cached: Entry | None = state.results.get(key)
    if cached is not None:
        hit_span(looked_up, 1, 1)
        return cached
    try:
        if not doc.for_language_server:
            raise LinterGone(f"{doc.rel} is not Python source for the language server")
        pool = await get_pool(ctx.app)
        with trace_span("ruff server", {"mcp_code_tools.ruff.engine": "server"}):
            entry = await _served(pool, doc)
    except LinterGone as exc:
        logger.info("ruff server unavailable for %s (%s): using ruff format", doc.rel, exc)
        formatted, error = await cli.format_text(doc.root, str(doc.path), doc.text)
        entry = _entry(doc.rel, doc.text, formatted, f"cannot format: {error}" if error else None)
    state.results.put(key, entry)
    return entry


async def _served(pool: RuffServerPool, doc: Document) -> Entry:
    """One document's entry from a warm `ruff server` (`LinterGone` when none can serve)."""
    async with pool.lease(doc.root, Selection(), doc.configs) as server:
        edits = await server.format(doc.path, doc.text)
        if edits is not None:
            return _entry(doc.rel, doc.text, apply_lsp_edits(doc.text, edits, server.encoding))
        # Already formatted, or ruff could not parse it.
        items = await server.diagnostics(doc.path, doc.text)
        bad = [i for i in items if (i.get("code") or SYNTAX_ERROR) == SYNTAX_ERROR]
        line = bad[0].get("range", {}).get("start", {}).get("line", 0) + 1 if bad else 0
        error = f"cannot format: syntax error at line {line}: {bad[0].get('message')}" if bad else None
        return _entry(doc.rel, doc.text, None, error)


def _batches(files: list[TreeFile], max_bytes: int | None = None) -> list[list[TreeFile]]:
    """Files cut into ruff runs of at most `max_bytes` of source each (ruff's answer carries edits
    as long as the files: one batch's records are in memory at a time)."""
    limit = BATCH_BYTES if max_bytes is None else max_bytes
    batches: list[list[TreeFile]] = []
    current: list[TreeFile] = []
    size = 0
    for f in files:
        if current and size + f.state.sig[2] > limit:
            batches.append(current)
            current, size = [], 0
        current.append(f)
        size += f.state.sig[2]
    if current:
        batches.append(current)
    return batches


def _entries(
    root: Path, batch: list[TreeFile], records: dict[str, dict[str, Any]], checker: FileChecker, room: int
) -> tuple[list[tuple[TreeFile, Entry, bool]], int]:
    """Blocking: one batch's entries (read, edits applied, diffed off the event loop).

    Diffs stop once `room` bytes of them are made: the rest are `diff_omitted` (and not cached).
    Returns (file, entry, cacheable) triples and the diff bytes used.
    """
    out: list[tuple[TreeFile, Entry, bool]] = []
    used = 0
    for f in batch:
        rec = records.get(f.rel)
        if rec is None:
            out.append((f, _entry(f.rel, "", ""), True))
            continue
        if rec.get("code") != "unformatted":
            row = (rec.get("location") or {}).get("row")
            out.append((f, _entry(f.rel, "", None, f"cannot format: line {row}: {rec.get('message')}"), True))
            continue
        if used >= room:
            out.append((f, {"path": f.rel, "changed": True, "diff": "", "diff_omitted": True}, False))
            continue
        try:
            old = checker.read(f.path)[1].decode("utf-8")
        except (FileSkipped, UnicodeDecodeError):
            continue  # changed since ruff read it: no diff to show
        entry = _entry(f.rel, old, apply_cli_edits(old, (rec.get("fix") or {}).get("edits") or []))
        used += len(entry["diff"])
        out.append((f, entry, True))
    return out, used


async def _tree(ctx: ToolContext, state: AnalysisState, cli: RuffCli, tree: Tree) -> tuple[list[Entry], TreeListing]:
    checker = ctx.file_checker()
    listing = await state.list_tree(ctx.app, cli, tree, SOURCE_SUFFIXES, checker)
    entries: list[Entry] = []
    misses: list[TreeFile] = []
    looked_up = time.perf_counter()
    for f in listing.files:
        cached: Entry | None = state.results.get(state.file_key("format", tree.root, f))
        if cached is None:
            misses.append(f)
        else:
            entries.append(cached)
    hit_span(looked_up, len(entries), len(listing.files))
    room = MAX_DIFF_BYTES
    for batch in _batches(misses):
        records: dict[str, dict[str, Any]] = {}
        for record in await cli.format_check(tree.root, [m.rel for m in batch]):
            records.setdefault(rel_path(str(record.get("filename", "")), tree.root), record)
        made, used = await anyio.to_thread.run_sync(_entries, tree.root, batch, records, checker, room)
        room -= used
        still = await state.unchanged(batch)
        for f, entry, cacheable in made:
            entries.append(entry)
            if cacheable and f.path in still:
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
        "diffs_omitted": sum(1 for e in entries if e.get("diff_omitted")),
        "truncated": False,
        "files": entries,
    }
    return ToolOutput(result, pageable=("files",))
