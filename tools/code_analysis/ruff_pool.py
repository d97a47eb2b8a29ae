"""RuffServerPool: warm `ruff server`s, one per (root, rule selection), bounded, idle ones shut down.

Created lazily (`Services.get("ruff_pool", ...)`) on the first single-file call. Its host task lives
in the server's task group and owns every ruff server's host task, plus a sweeper that stops the
ones idle past `ruff_idle_ttl_s`. At most `ruff_pool_size` run at once: starting one more stops
the least recently used idle one. A server that died, or whose config files changed, is replaced
on its next use.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread

from mcp_server.api import AppState
from tools.code_analysis.cli_runner import ruff_binary
from tools.code_analysis.lsp import LinterGone
from tools.code_analysis.ruff_server import START_TIMEOUT_S, RuffServer
from tools.code_analysis.selection import Selection
from tools.code_analysis.workspace import ConfigState, scan_tree

logger = logging.getLogger("mcp_server.ruff_pool")

SERVICE_KEY = "ruff_pool"
PoolKey = tuple[Path, Selection]


class RuffServerPool:
    def __init__(self, app: AppState) -> None:
        self._app = app
        self.max_size = app.settings.ruff_pool_size
        self.idle_ttl_s = app.settings.ruff_idle_ttl_s
        self.binary = ruff_binary()
        self._servers: OrderedDict[PoolKey, RuffServer] = OrderedDict()
        self._start_lock = anyio.Lock()
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = anyio.Event()
        self._closed = anyio.Event()
        self._wake = anyio.Event()
        self.started = 0
        self.restarts = 0
        self.fallbacks = 0

    @classmethod
    async def create(cls, app: AppState) -> RuffServerPool:
        if app.task_group is None:  # not inside a running server: callers use the CLI
            raise LinterGone("the server has no task group for the ruff server pool")
        pool = cls(app)
        await app.task_group.start(pool._host)
        return pool

    async def _host(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._sweeper)
                task_status.started()
                await self._closing.wait()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self._closed.set()

    # --- leasing ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, root: Path, selection: Selection, observed: ConfigState) -> AsyncIterator[RuffServer]:
        """A live server for `root` and `selection` whose configs match `observed`.

        Raises `LinterGone` when none can be started (the caller uses the CLI instead).
        """
        server = await self._get(root, selection, observed)
        server.in_use += 1
        try:
            yield server
        finally:
            server.in_use -= 1
            server.last_used = time.monotonic()

    async def _get(self, root: Path, selection: Selection, observed: ConfigState) -> RuffServer:
        key = (root, selection)
        server = self._servers.get(key)
        if server is not None and server.alive and not server.stale(observed):
            self._servers.move_to_end(key)
            return server
        async with self._start_lock:
            server = self._servers.get(key)
            if server is not None and (not server.alive or server.stale(observed)):
                why = "its config changed" if server.alive else f"it died ({server.error})"
                logger.info("restarting the ruff server for %s: %s", root, why)
                self._retire(key)
                self.restarts += 1
                server = None
            if server is None:
                server = await self._start(root, selection)
                self._servers[key] = server
                self._evict()
            self._servers.move_to_end(key)
            return server

    async def _start(self, root: Path, selection: Selection) -> RuffServer:
        if self._tg is None or self._closing.is_set():
            raise LinterGone("the ruff server pool is closed")
        taken_ns = time.time_ns()
        scan = await anyio.to_thread.run_sync(scan_tree, root, [root])
        server = RuffServer(
            root=root,
            selection=selection,
            executor=self._app.executor,
            ruff_bin=self.binary.path,
            configs=scan.configs,
            configs_taken_ns=taken_ns,
        )
        self._tg.start_soon(server.serve)
        with anyio.move_on_after(START_TIMEOUT_S + 5):
            await server.ready.wait()
        if not server.alive:
            server.stop()
            raise LinterGone(server.error or "the ruff server did not start in time")
        self.started += 1
        self._wake.set()
        return server

    def _retire(self, key: PoolKey) -> None:
        server = self._servers.pop(key, None)
        if server is not None:
            server.stop()

    def _evict(self) -> None:
        while len(self._servers) > self.max_size:
            idle = [k for k, s in self._servers.items() if s.in_use == 0]
            if not idle:
                return  # all busy: the pool shrinks back as they finish and new ones start
            self._retire(idle[0])

    def invalidate(self, root: Path, observed: ConfigState) -> int:
        """Stop the servers of `root` whose configs changed (seen by a tree walk). Returns how many."""
        doomed = [k for k, s in self._servers.items() if k[0] == root and s.stale(observed)]
        for key in doomed:
            self._retire(key)
        return len(doomed)

    def note_fallback(self) -> None:
        self.fallbacks += 1

    # --- idle shutdown ---------------------------------------------------------------------------

    async def _sweeper(self) -> None:
        """Stop servers idle past the TTL: sleep until the earliest deadline, prune, repeat."""
        while True:
            now = time.monotonic()
            deadlines = [s.last_used + self.idle_ttl_s for s in self._servers.values()]
            delay = max(0.05, min(deadlines) - now) if deadlines else self.idle_ttl_s
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()
            self.prune()

    def prune(self) -> int:
        """Stop the servers idle for longer than the TTL, and forget dead ones."""
        now = time.monotonic()
        doomed = [
            k
            for k, s in self._servers.items()
            if (s.in_use == 0 and now - s.last_used >= self.idle_ttl_s) or s.stopped.is_set()
        ]
        for key in doomed:
            self._retire(key)
        return len(doomed)

    # --- service ---------------------------------------------------------------------------------

    def servers(self) -> list[RuffServer]:
        return list(self._servers.values())

    def status(self) -> dict[str, Any]:
        """For readiness probes: the binary, the bounds, and each server's state."""
        return {
            "ruff": self.binary.path,
            "ruff_version": self.binary.version,
            "size": len(self._servers),
            "max_size": self.max_size,
            "idle_ttl_s": self.idle_ttl_s,
            "started": self.started,
            "restarts": self.restarts,
            "fallbacks": self.fallbacks,
            "servers": [s.status() for s in self._servers.values()],
        }

    async def aclose(self) -> None:
        """Shut every server down (bounded), then end the host task."""
        servers = list(self._servers.values())
        self._servers.clear()
        for server in servers:
            server.stop()
        with anyio.move_on_after(5, shield=True):
            for server in servers:
                await server.stopped.wait()
        self._closing.set()
        with anyio.move_on_after(5, shield=True):
            await self._closed.wait()


async def get_pool(app: AppState) -> RuffServerPool:
    async def factory() -> RuffServerPool:
        return await RuffServerPool.create(app)

    return await app.services.get(SERVICE_KEY, factory)
