"""The `lint` tool: ruff diagnostics for unsaved text, single files (warm servers) or trees (CLI + cache)."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio.to_thread

from mcp_server.api import ToolContext, ToolError, ToolOutput, trace_span
from tools.code_analysis.args import LintArgs
from tools.code_analysis.cache import hit_span
from tools.code_analysis.cli_runner import JsonLines, RuffCli
from tools.code_analysis.diagnostics import (
    SYNTAX_ERROR,
    Diagnostic,
    from_cli_record,
    from_lsp,
    group_by_path,
    sort_key,
    summarize,
    with_unsafe_fixes,
)
from tools.code_analysis.lsp import LinterGone
from tools.code_analysis.ruff_pool import RuffServerPool, get_pool
from tools.code_analysis.selection import Selection
from tools.code_analysis.state import AnalysisState, TreeFile, TreeListing, get_state
from tools.code_analysis.targets import Document, Tree, read_document, resolve_target
from tools.code_analysis.text_edits import apply_lsp_edits, unified_diff

logger = logging.getLogger("mcp_server.code_analysis")

MAX_FIX_FILES = 200
INLINE_CONVERT = 2000
"""More language-server diagnostics than this are converted in a worker thread."""
LSP_MAX_TEXT = 256 * 1024
"""Texts longer than this are linted by `ruff check` (streamed, capped), not the language server."""


SERVER_SPAN = {"mcp_code_tools.ruff.engine": "server"}


class Linter:
    """One `lint` call's view of the shared state, the warm servers and the CLI."""

    def __init__(self, ctx: ToolContext, state: AnalysisState, selection: Selection, unsafe: bool = False) -> None:
        self.ctx = ctx
        self.unsafe = unsafe
        self.state = state
        self.selection = selection
        self.cli = RuffCli(ctx, state.binary)
        self.checker = ctx.file_checker()
        self.cap = ctx.settings.max_diagnostics
        self.dropped = 0
        """Diagnostics ruff reported past the cap: counted, never collected."""
        self.dropped_codes: Counter[str | None] = Counter()
        self.engines: set[str] = set()

    def _lines(self, root: Path) -> JsonLines:
        """A collector for one `ruff check`: at most the cap, each record turned into a diagnostic as read."""
        return JsonLines(self.cap, functools.partial(from_cli_record, root=root, shared={}))

    async def _pool(self) -> RuffServerPool:
        return await get_pool(self.ctx.app)

    async def document(self, doc: Document, *, want_fix: bool) -> tuple[list[Diagnostic], str | None]:
        """Diagnostics (and the fixed text) of one document: cache, else a warm server, else the CLI."""
        state, selection = self.state, self.selection
        key = state.doc_key("lint", doc, selection)
        fix_kind = "fix+unsafe" if self.unsafe else "fix"
        fix_key = state.doc_key(fix_kind, doc, selection) if want_fix else None
        looked_up = time.perf_counter()
        diags: list[Diagnostic] | None = state.results.get(key)
        fixed: str | None = state.results.get(fix_key) if fix_key is not None else None
        if diags is not None and (fix_key is None or fixed is not None):
            self.engines.add("cache")
            hit_span(looked_up, 1, 1)
            return diags, fixed
        pool: RuffServerPool | None = None
        try:
            if not doc.for_language_server:
                raise LinterGone(f"{doc.rel} is not Python source for the language server")
            if len(doc.text) > LSP_MAX_TEXT and diags is None:
                # Its answer could be huge (a diagnostic or more per line): the CLI streams it, capped.
                raise LinterGone(f"{doc.rel} is {len(doc.text)} characters: linted by ruff check")
            pool = await self._pool()
            with trace_span("ruff server", SERVER_SPAN):  # lease (a start, if none is warm) and requests
                async with pool.lease(doc.root, selection, doc.configs) as server:
                    if diags is None:
                        items = await server.diagnostics(doc.path, doc.text)
                        if len(items) > INLINE_CONVERT:  # a big answer: converted off the event loop
                            diags = await anyio.to_thread.run_sync(from_lsp, items, doc.rel, doc.text, server.encoding)
                        else:
                            diags = from_lsp(items, doc.rel, doc.text, server.encoding)
                    if fix_key is not None and fixed is None and not self.unsafe:  # fixAll: safe fixes only
                        edits = await server.fix_all(doc.path, doc.text)
                        fixed = apply_lsp_edits(doc.text, edits, server.encoding)
            if fix_key is not None and fixed is None:
                fixed = await self.cli.fix_text(doc.root, str(doc.path), doc.text, selection, unsafe=True)
            self.engines.add("ruff server")
        except LinterGone as exc:
            logger.info("ruff server unavailable for %s (%s): using ruff check", doc.rel, exc)
            if pool is not None:
                pool.note_fallback()
            if diags is None:
                lines = await self.cli.check_text(doc.root, str(doc.path), doc.text, selection, self._lines(doc.root))
                diags = lines.records
                if lines.truncated:  # not cached: the list is not the whole answer
                    self.dropped += lines.total - len(lines.records)
                    self.dropped_codes.update(lines.codes)
                    diags.sort(key=sort_key)
                    if fix_key is not None and fixed is None:
                        fixed = await self.cli.fix_text(doc.root, str(doc.path), doc.text, selection, self.unsafe)
                    self.engines.add("ruff check")
                    return diags, fixed
            if fix_key is not None and fixed is None:
                fixed = await self.cli.fix_text(doc.root, str(doc.path), doc.text, selection, self.unsafe)
            self.engines.add("ruff check")
        diags.sort(key=sort_key)
        state.results.put(key, diags)
        if fix_key is not None and fixed is not None:
            state.results.put(fix_key, fixed)
        return diags, fixed

    async def tree(self, tree: Tree) -> tuple[list[Diagnostic], TreeListing]:
        """Diagnostics of a tree: cached per file; files not in the cache go through `ruff check`.

        Only the files that passed the path check are named to ruff, never a folder.
        """
        listing = await self.state.list_tree(self.ctx.app, self.cli, tree, checker=self.checker)
        root = tree.root
        by_file: dict[str, list[Diagnostic]] = {}
        misses: list[TreeFile] = []
        looked_up = time.perf_counter()
        for f in listing.files:
            cached = self.state.results.get(self.state.file_key("lint", root, f, self.selection))
            if cached is None:
                misses.append(f)
            else:
                by_file[f.rel] = cached
        self.engines.add("cache")
        hit_span(looked_up, len(by_file), len(listing.files))
        if misses:
            self.engines.add("ruff check")
            lines = await self.cli.check(root, [m.rel for m in misses], self.selection, self._lines(root))
            fresh = group_by_path(lines.records)
            if lines.truncated:  # past the cap: no file's list is known to be whole, none is cached
                self.dropped += lines.total - len(lines.records)
                self.dropped_codes.update(lines.codes)
                for f in misses:
                    by_file[f.rel] = sorted(fresh.pop(f.rel, []), key=sort_key)
                return [d for rel in sorted(by_file) for d in by_file[rel]], listing
            still = await self.state.unchanged(misses)
            for f in misses:
                diags = sorted(fresh.pop(f.rel, []), key=sort_key)
                by_file[f.rel] = diags
                if f.path in still:
                    self.state.results.put(self.state.file_key("lint", root, f, self.selection), diags)
        # Each file's list is sorted: concatenating them in path order sorts the whole.
        return [d for rel in sorted(by_file) for d in by_file[rel]], listing

    async def fixes(self, tree: Tree, diagnostics: list[Diagnostic]) -> tuple[list[dict[str, str]], bool]:
        """Per-file diffs of ruff's fixes (safe ones; unsafe too with `unsafe_fixes`) for the files
        of a tree that have fixable diagnostics."""
        rels = sorted({d["path"] for d in diagnostics if d["fixable"]})
        cut = len(rels) > MAX_FIX_FILES
        out: list[dict[str, str]] = []
        for rel in rels[:MAX_FIX_FILES]:
            path = tree.root / rel
            try:
                doc = await anyio.to_thread.run_sync(read_document, tree.root, path, rel, rel, self.checker)
            except ToolError:
                continue  # changed since it was linted (now binary, gone, a link out): no fix to show
            _, fixed = await self.document(doc, want_fix=True)
            diff = unified_diff(doc.text, fixed, rel) if fixed is not None else ""
            if diff:
                out.append({"path": rel, "diff": diff})
        return out, cut


async def lint(ctx: ToolContext, args: LintArgs) -> ToolOutput:
    started = time.perf_counter()
    state = await get_state(ctx.app)
    selection = Selection.of(args.select, args.ignore)
    target = await resolve_target(ctx, args)
    linter = Linter(ctx, state, selection, args.unsafe_fixes)
    root = target.root if isinstance(target, Tree) else target[0].root
    await state.validate(linter.cli, selection, root)
    fixes: list[dict[str, str]] = []
    fixes_cut = False
    skipped: dict[str, Any] = {"skipped": [], "skipped_count": 0}
    if isinstance(target, Tree):
        diagnostics, listing = await linter.tree(target)
        checked = len(listing.files)
        skipped = listing.skipped_field()
        if args.unsafe_fixes:
            diagnostics = with_unsafe_fixes(diagnostics)
        if args.fix:
            fixes, fixes_cut = await linter.fixes(target, diagnostics)
    else:
        diagnostics = []
        for doc in target:
            diags, fixed = await linter.document(doc, want_fix=args.fix)
            diagnostics.extend(diags)
            if fixed is not None and (diff := unified_diff(doc.text, fixed, doc.rel)):
                fixes.append({"path": doc.rel, "diff": diff})
        diagnostics.sort(key=sort_key)
        if args.unsafe_fixes:
            diagnostics = with_unsafe_fixes(diagnostics)
        checked = len(target)
    total = len(diagnostics) + linter.dropped
    dropped_codes = Counter(d["code"] for d in diagnostics[linter.cap :]) + linter.dropped_codes
    diagnostics = diagnostics[: linter.cap]
    capped = total > len(diagnostics)
    result: dict[str, Any] = {
        **summarize(diagnostics),
        "files_checked": checked,
        "engine": "+".join(sorted(linter.engines)),
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 2),
        **skipped,
        "truncated": capped,
        "diagnostics": diagnostics,
    }
    if capped:  # the list stops at max_diagnostics; `total` and `counts` are over all ruff reported
        result["total"] = total
        result["diagnostics_cap"] = linter.cap
        counts = Counter(result["counts"])
        for code, n in dropped_codes.items():
            counts[code or SYNTAX_ERROR] += n
        result["counts"] = dict(sorted(counts.items()))
    if args.fix:
        result["fix_diff"] = "".join(f["diff"] for f in fixes)
        result["fixed_files"] = len(fixes)
        result["fixes"] = fixes
        if fixes_cut:
            result["fix_files_omitted"] = True
    # The server budgets the answer; the per-file diffs behind fix_diff are kept in the run only.
    return ToolOutput(result, pageable=("diagnostics",), run_only=("fixes",))
