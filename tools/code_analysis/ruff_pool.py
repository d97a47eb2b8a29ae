"""RuffServerPool: the `ruff server` policy on `WarmPool`, one per (root, rule selection).

Stale when a config file it resolved settings from changed (per call, against what the call
observed; or seen by a tree walk: `invalidate`). When none can be started, `LinterGone`: the
caller uses the CLI (`note_fallback` counts it). Bounds: settings `ruff_pool_size`, `ruff_idle_ttl_s`.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread

from mcp_server.api import AppState, PoolPolicy, WarmPool
from tools.code_analysis.cli_runner import ruff_binary
from tools.code_analysis.lsp import LinterGone
from tools.code_analysis.ruff_server import START_TIMEOUT_S, RuffServer
from tools.code_analysis.selection import Selection
from tools.code_analysis.workspace import ConfigState, scan_tree

SERVICE_KEY = "ruff_pool"
PoolKey = tuple[Path, Selection]


class RuffServerPool(
    PoolPolicy[PoolKey, RuffServer], name="ruff server", workers_key="servers", start_timeout_s=START_TIMEOUT_S + 5
):
    def __init__(self, app: AppState) -> None:
        self._app = app
        self.binary = ruff_binary()
        self.fallbacks = 0
        self.pool = WarmPool(self, max_size=app.settings.ruff_pool_size, idle_ttl_s=app.settings.ruff_idle_ttl_s)

    @classmethod
    async def create(cls, app: AppState) -> RuffServerPool:
        self = cls(app)  # without the server's task group: LinterGone, and callers use the CLI
        await self.pool.start(app.task_group)
        return self

    def gone(self, message: str) -> Exception:
        return LinterGone(message)

    async def new_worker(self, key: PoolKey) -> RuffServer:
        root, selection = key
        taken_ns = time.time_ns()
        scan = await anyio.to_thread.run_sync(scan_tree, root, [root])
        return RuffServer(
            root=root,
            selection=selection,
            executor=self._app.executor,
            ruff_bin=self.binary.path,
            configs=scan.configs,
            configs_taken_ns=taken_ns,
        )

    @contextlib.asynccontextmanager
    async def lease(self, root: Path, selection: Selection, observed: ConfigState) -> AsyncIterator[RuffServer]:
        """A live server for `root` and `selection` whose configs match `observed`."""

        async def changed(server: RuffServer) -> str | None:
            return "its config changed" if server.stale(observed) else None

        async with self.pool.lease((root, selection), changed) as server:
            yield server

    def invalidate(self, root: Path, observed: ConfigState) -> int:
        """Stop the servers of `root` whose configs changed (seen by a tree walk). Returns how many."""
        return self.pool.retire_where(
            lambda key, server: key[0] == root and server.stale(observed), "its config changed"
        )

    def note_fallback(self) -> None:
        self.fallbacks += 1

    def servers(self) -> list[RuffServer]:
        return self.pool.workers()

    def prune(self) -> int:
        return self.pool.prune()

    def status(self) -> dict[str, Any]:
        return {
            "ruff": self.binary.path,
            "ruff_version": self.binary.version,
            **self.pool.status(),
            "fallbacks": self.fallbacks,
        }

    async def aclose(self) -> None:
        """Shut every server down (bounded), then end the host task."""
        await self.pool.aclose()


async def get_pool(app: AppState) -> RuffServerPool:
    return await app.services.get(SERVICE_KEY, functools.partial(RuffServerPool.create, app))
