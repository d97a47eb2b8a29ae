"""The shared state of the code-analysis tools: result caches, file hashes, ruff's discovery.

One instance per server process (`Services.get("code_analysis", ...)`). Everything here is bounded.
Tree calls walk the targets (in a thread), reuse ruff's last discovery while no file was added or
removed and no config or ignore file changed, and hash only files whose stat signature moved.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import anyio.to_thread

from mcp_server.api import AppState
from tools.code_analysis.cache import LruDict, ResultCache, ResultKey
from tools.code_analysis.cli_runner import RuffBinary, RuffCli, ruff_binary
from tools.code_analysis.diagnostics import rel_path
from tools.code_analysis.ruff_pool import SERVICE_KEY as POOL_SERVICE_KEY
from tools.code_analysis.ruff_pool import RuffServerPool
from tools.code_analysis.selection import Selection
from tools.code_analysis.targets import Document, Tree
from tools.code_analysis.workspace import (
    ConfigState,
    FileState,
    StatCache,
    TreeScan,
    config_changed,
    config_key,
    scan_tree,
)

logger = logging.getLogger("mcp_server.code_analysis")

SERVICE_KEY = "code_analysis"
DEFAULT_SELECTION = Selection()


class TreeFile(NamedTuple):
    """One file of a tree as discovered by ruff, with its content hash and config key."""

    path: str
    rel: str
    state: FileState
    config_key: str


@dataclass(frozen=True, slots=True)
class TreeListing:
    scan: TreeScan
    files: list[TreeFile]


class AnalysisState:
    def __init__(self, binary: RuffBinary) -> None:
        self.binary = binary
        self.results: ResultCache[Any] = ResultCache()
        self.files = StatCache()
        self.discovery: LruDict[tuple[str, ...]] = LruDict(64)
        """(root, fingerprint of the walk) -> the files ruff discovered."""
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
        self, app: AppState, cli: RuffCli, tree: Tree, suffixes: frozenset[str] | None = None
    ) -> TreeListing:
        """Walk the targets, note config changes, and list (with hashes) the files ruff would check.

        ruff's discovery (`--show-files`) is reused while no file was added or removed and no
        config or ignore file changed.
        """
        scan, key, discovered, files = await anyio.to_thread.run_sync(self._scan_and_hash, tree)
        if self.note_configs(tree.root, scan.configs):
            logger.info("ruff config changed under %s: cached results dropped", tree.root)
        pool = app.services.peek(POOL_SERVICE_KEY)
        if isinstance(pool, RuffServerPool):
            pool.invalidate(tree.root, scan.configs)
        if discovered is not None:
            self.discovery.get(key)  # refresh its place in the LRU (the worker thread only peeked)
        else:
            found = await cli.discover(tree.root, tree.rels)
            discovered = tuple(dict.fromkeys(f if os.path.isabs(f) else str(tree.root / f) for f in found))
            self.discovery.put(key, discovered)
            files = None
        if files is None:
            files = await anyio.to_thread.run_sync(self.file_states, tree.root, discovered, scan.configs)
        if suffixes is not None:
            files = [f for f in files if os.path.splitext(f.path)[1].lower() in suffixes]
        return TreeListing(scan, files)

    def _scan_and_hash(
        self, tree: Tree
    ) -> tuple[TreeScan, tuple[str, str], tuple[str, ...] | None, list[TreeFile] | None]:
        """Blocking: walk; if ruff's discovery for this walk is known, hash its files too (one thread hop)."""
        scan = scan_tree(tree.root, tree.paths)
        key = (str(tree.root), scan.fingerprint(tree.rels))
        discovered = self.discovery.peek(key)
        files = self.file_states(tree.root, discovered, scan.configs) if discovered is not None else None
        return scan, key, discovered, files

    def file_states(self, root: Path, files: tuple[str, ...], configs: ConfigState) -> list[TreeFile]:
        """Blocking: each file's content hash (re-read only if its stat moved) and config key."""
        memo: dict[str, str] = {}
        out: list[TreeFile] = []
        hash_file = self.files.hash_file
        prefix = str(root).rstrip("/") + "/"
        for path in files:  # a hot loop on every tree call: kept free of Path objects
            state = hash_file(path)
            if state is None:
                continue  # gone since discovery
            directory = path.rpartition("/")[0] if "/" in path else os.path.dirname(path)
            key = memo.get(directory) or config_key(directory, configs, memo)
            rel = path[len(prefix) :] if path.startswith(prefix) else rel_path(path, root)
            out.append(TreeFile(path, rel, state, key))
        return out

    async def unchanged(self, files: list[TreeFile]) -> set[str]:
        """The files whose stat signature is still the one they were hashed with."""

        def check() -> set[str]:
            return {f.path for f in files if self.files.still(f.path, f.state)}

        return await anyio.to_thread.run_sync(check)

    def status(self) -> dict[str, Any]:
        return {
            "results": len(self.results),
            "hits": self.results.hits,
            "misses": self.results.misses,
            "hashed_files": len(self.files),
        }


async def get_state(app: AppState) -> AnalysisState:
    async def factory() -> AnalysisState:
        return AnalysisState(ruff_binary())

    return await app.services.get(SERVICE_KEY, factory)
