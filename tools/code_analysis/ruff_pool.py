"""RuffServerPool: the `ruff server` policy on `WarmPool`, one per (root, rule selection).

Stale when a config file it resolved settings from changed (per call, against what the call
observed; or seen by a tree walk: `invalidate`). When none can be started, `LinterGone`: the
caller uses the CLI (`note_fallback` counts it). Bounds: settings `ruff_pool_size`, `ruff_idle_ttl_s`.
"""

from __future__ import annotations

import functools
import time
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio.to_thread

from mcp_server.api import PooledService
from tools.code_analysis.cli_runner import RuffBinary, ruff_binary
from tools.code_analysis.lsp import LinterGone
from tools.code_analysis.ruff_server import START_TIMEOUT_S, RuffServer
from tools.code_analysis.selection import Selection
from tools.code_analysis.workspace import ConfigState, scan_tree

Key = tuple[Path, Selection]
CHANGED = "its config changed"


class RuffServerPool(
    PooledService[Key, RuffServer], name="ruff server", workers_key="servers", service_key="ruff_pool"
):
    error = LinterGone
    start_timeout_s = START_TIMEOUT_S + 5
    fallbacks = 0

    @functools.cached_property
    def binary(self) -> RuffBinary:
        return ruff_binary()

    def bounds(self) -> tuple[int, float]:
        return self.app.settings.ruff_pool_size, self.app.settings.ruff_idle_ttl_s

    async def new_worker(self, key: Key) -> RuffServer:
        root, selection = key
        taken_ns = time.time_ns()
        configs = (await anyio.to_thread.run_sync(scan_tree, root, [root])).configs
        return RuffServer(
            root=root,
            selection=selection,
            executor=self.app.executor,
            ruff_bin=self.binary.path,
            configs=configs,
            configs_taken_ns=taken_ns,
        )

    def lease(self, root: Path, selection: Selection, observed: ConfigState) -> AbstractAsyncContextManager[RuffServer]:
        """A live server for `root` and `selection` whose configs match `observed`."""
        return self.pool.lease((root, selection), lambda server: CHANGED if server.stale(observed) else None)

    def invalidate(self, root: Path, observed: ConfigState) -> int:
        """Stop the servers of `root` whose configs changed (seen by a tree walk). Returns how many."""
        return self.pool.retire_where(lambda key, server: key[0] == root and server.stale(observed), CHANGED)

    def note_fallback(self) -> None:
        self.fallbacks += 1

    def extra_status(self) -> dict[str, Any]:
        return {"ruff": self.binary.path, "ruff_version": self.binary.version, "fallbacks": self.fallbacks}


get_pool = RuffServerPool.get
