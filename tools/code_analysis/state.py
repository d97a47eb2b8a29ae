"""The shared state of the code-analysis tools: result caches, file hashes, ruff's discovery.

One instance per server process (`Services.get("code_analysis", ...)`). Everything here is bounded.
Tree calls walk the targets (in a thread), reuse ruff's last discovery while no file was added or
removed and no config or ignore file changed, and hash only files whose stat signature moved.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import anyio.to_thread

from mcp_server.api import AppState, FileChecker, FileSkipped
from tools.code_analysis.cache import LruDict, ResultCache, ResultKey
from tools.code_analysis.cli_runner import RuffBinary, RuffCli, ruff_binary
from tools.code_analysis.diagnostics import rel_path
from tools.code_analysis.ruff_pool import RuffServerPool
from tools.code_analysis.selection import Selection
from tools.code_analysis.targets import Document, Tree
from tools.code_analysis.workspace import (
    ConfigState,
    FileState,
    StatCache,
    TreeScan,
    check_configs,
    config_changed,
    config_key,
    scan_tree,
)

logger = logging.getLogger("mcp_server.code_analysis")

SERVICE_KEY = "code_analysis"
DEFAULT_SELECTION = Selection()


MAX_SKIPPED_LISTED = 100
DISCOVERY_KEEP = 2
"""Of ruff's discovery, this many times `max_walk_files` names are kept (some fail the path check)."""
Discovered = tuple[tuple[str, ...], int]
"""ruff's discovery: the names kept, and how many more it listed."""
Skipped = tuple[str, str]


class TreeFile(NamedTuple):
    """One file of a tree as discovered by ruff, with its content hash and config key."""

    path: str
    rel: str
    state: FileState
    config_key: str


FileStates = tuple[list[TreeFile], list[Skipped], int]


@dataclass(frozen=True, slots=True)
class TreeListing:
    scan: TreeScan
    files: list[TreeFile]
    skipped: list[Skipped] = field(default_factory=list)
    """(rel, reason) of the files discovery reached that are not checked; the first MAX_SKIPPED_LISTED."""
    skipped_count: int = 0

    def skipped_field(self) -> dict[str, Any]:
        """`skipped: [{path, reason}]` (capped) and `skipped_count` for a result."""
        return {
            "skipped": [{"path": rel, "reason": reason} for rel, reason in self.skipped[:MAX_SKIPPED_LISTED]],
            "skipped_count": self.skipped_count,
        }


class AnalysisState:
    def __init__(self, binary: RuffBinary, result_cache_max_bytes: int = 64 * 1024 * 1024) -> None:
        self.binary = binary
        self.results: ResultCache[Any] = ResultCache(max_bytes=result_cache_max_bytes)
        self.files = StatCache()
        self.discovery: LruDict[Discovered] = LruDict(64)
        """(root, fingerprint of the walk) -> the files ruff discovered (the first ones), and how many more."""
        self._validated: LruDict[bool] = LruDict(256)
        self._configs: dict[Path, tuple[ConfigState, int]] = {}

    async def aclose(self) -> None:
        return None

    def key(
        self, kind: str, root: Path, rel: str, content: str, config: str, selection: Selection = DEFAULT_SELECTION
    ) -> ResultKey:
        return ResultKey(kind, self.binary.version, selection.key, str(root), rel, content, config)

    def doc_key(self, kind: str, doc: Document, selection: Selection = DEFAULT_SELECTION) -> ResultKey:
        return self.key(kind, doc.root, doc.rel, doc.digest, doc.config_key, selection)

    def file_key(self, kind: str, root: Path, f: TreeFile, selection: Selection = DEFAULT_SELECTION) -> ResultKey:
        return self.key(kind, root, f.rel, f.state.digest, f.config_key, selection)

    async def validate(self, cli: RuffCli, selection: Selection, root: Path) -> None:
        """Check the selectors with ruff once per selection (a clear error naming an unknown one)."""
        if selection.is_default or self._validated.get(selection.key):
            return
        await cli.validate(selection, root)
        self._validated.put(selection.key, True)

    def note_configs(self, root: Path, configs: ConfigState) -> bool:
        """Record what a walk saw; on a config change, drop the root's cached results. True if changed."""
        now = time.time_ns()
        seen = self._configs.get(root)
        changed = seen is not None and config_changed(seen[0], configs, seen[1])
        if changed:
            self.results.drop_root(str(root))
        merged = {} if changed or seen is None else dict(seen[0])
        merged.update(configs)
        self._configs[root] = (merged, now)
        return changed

    async def list_tree(
        self,
        app: AppState,
        cli: RuffCli,
        tree: Tree,
        suffixes: frozenset[str] | None = None,
        checker: FileChecker | None = None,
    ) -> TreeListing:
        """Walk the targets, note config changes, and list (with hashes) the files ruff would check.

        ruff's discovery (`--show-files`) is reused while no file was added or removed and no
        config or ignore file changed. Every file it lists passes the path check (`FileChecker`):
        links out of the roots, FIFOs, devices and files over `max_source_bytes` are skipped with
        a reason, never read nor handed to ruff; past `max_walk_files` files the rest are skipped.
        """
        settings = app.settings
        checker = checker or FileChecker(settings.roots, settings.max_source_bytes)
        limit = settings.max_walk_files
        scan, key, discovered, listed = await anyio.to_thread.run_sync(self._scan_and_hash, tree, checker, limit)
        if scan.linked_configs:
            await anyio.to_thread.run_sync(check_configs, scan.linked_configs, checker)
        if self.note_configs(tree.root, scan.configs):
            logger.info("ruff config changed under %s: cached results dropped", tree.root)
        pool = app.services.peek(RuffServerPool.service_key)
        if isinstance(pool, RuffServerPool):
            pool.invalidate(tree.root, scan.configs)
        if discovered is not None:
            self.discovery.get(key)  # refresh its place in the LRU (the worker thread only peeked)
        else:
            found, beyond = await cli.discover(tree.root, tree.rels, DISCOVERY_KEEP * limit)
            names = tuple(sorted(dict.fromkeys(f if os.path.isabs(f) else str(tree.root / f) for f in found)))
            discovered = (names, beyond)
            if scan.complete:
                self.discovery.put(key, discovered)
            listed = None
        if listed is None:
            listed = await anyio.to_thread.run_sync(
                self.file_states, tree.root, discovered, scan.configs, checker, limit
            )
        files, skipped, skipped_count = listed
        if suffixes is not None:
            files = [f for f in files if os.path.splitext(f.path)[1].lower() in suffixes]
        return TreeListing(scan, files, skipped, skipped_count)

    def _scan_and_hash(
        self, tree: Tree, checker: FileChecker, limit: int
    ) -> tuple[TreeScan, tuple[str, str], Discovered | None, FileStates | None]:
        """Blocking: walk; if ruff's discovery for this walk is known, hash its files too (one thread hop)."""
        scan = scan_tree(tree.root, tree.paths)
        key = (str(tree.root), scan.fingerprint(tree.rels))
        discovered = self.discovery.peek(key) if scan.complete else None
        listed = None
        if discovered is not None:
            listed = self.file_states(tree.root, discovered, scan.configs, checker, limit)
        return scan, key, discovered, listed

    def file_states(
        self, root: Path, discovered: Discovered, configs: ConfigState, checker: FileChecker, limit: int
    ) -> FileStates:
        """Blocking: each file's content hash (re-read only if its stat moved) and config key.

        Files the path check refuses are skipped (with their reason), as are those past `limit`.
        """
        files, beyond = discovered
        memo: dict[str, str] = {}
        out: list[TreeFile] = []
        skipped: list[Skipped] = []
        skipped_count = 0
        over_limit = f"over the limit of {limit} files per call (setting max_walk_files)"
        if beyond:  # discovery listed more than was kept: all past the limit
            skipped_count += beyond
            skipped.append((f"({beyond} more files)", over_limit))
        hash_file = self.files.hash_file
        prefix = str(root).rstrip("/") + "/"
        for index, path in enumerate(files):  # a hot loop on every tree call: kept free of Path objects
            rel = path[len(prefix) :] if path.startswith(prefix) else rel_path(path, root)
            if len(out) >= limit:
                over = len(files) - index
                skipped_count += over
                if len(skipped) < MAX_SKIPPED_LISTED:
                    skipped.append((rel, over_limit))
                break
            try:
                state = hash_file(path, checker)
            except FileSkipped as exc:
                skipped_count += 1
                if len(skipped) < MAX_SKIPPED_LISTED:
                    skipped.append((rel, exc.reason))
                continue
            directory = path.rpartition("/")[0] if "/" in path else os.path.dirname(path)
            key = memo.get(directory) or config_key(directory, configs, memo)
            out.append(TreeFile(path, rel, state, key))
        return out, skipped, skipped_count

    async def unchanged(self, files: list[TreeFile]) -> set[str]:
        """The files whose stat signature is still the one they were hashed with."""

        def check() -> set[str]:
            return {f.path for f in files if self.files.still(f.path, f.state)}

        return await anyio.to_thread.run_sync(check)

    def status(self) -> dict[str, Any]:
        return {
            "results": len(self.results),
            "result_bytes": self.results.bytes,
            "hits": self.results.hits,
            "misses": self.results.misses,
            "hashed_files": len(self.files),
        }


async def get_state(app: AppState) -> AnalysisState:
    async def factory() -> AnalysisState:
        return AnalysisState(ruff_binary(), app.settings.result_cache_max_bytes)

    return await app.services.get(SERVICE_KEY, factory)
