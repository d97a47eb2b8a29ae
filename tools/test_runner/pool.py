"""ZygotePool: one warm zygote per (root, interpreter), rebuilt on environment change, LRU-capped,
shut down after an idle TTL.

Created lazily (`Services.get("test_pool", ...)`) on the first run. Its host task lives in the
server's task group and owns the rendezvous socket, every zygote's host task, and a sweeper that
stops zygotes idle past `zygote_idle_ttl_s`. At most `zygote_pool_size` are kept: starting one
more retires the least recently used. A retired or stale zygote finishes the runs it has (they
are not disturbed) and stops when its last run ends.
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

from mcp_server.api import AppState, ToolError
from tools.test_runner.environment import fingerprint
from tools.test_runner.rendezvous import Rendezvous
from tools.test_runner.zygote import START_TIMEOUT_S, WorkerGone, Zygote

logger = logging.getLogger("mcp_server.test_runner")

SERVICE_KEY = "test_pool"
PoolKey = tuple[Path, Path]


class ZygotePool:
    def __init__(self, app: AppState) -> None:
        self._app = app
        self.max_size = app.settings.zygote_pool_size
        self.idle_ttl_s = app.settings.zygote_idle_ttl_s
        self.rendezvous = Rendezvous()
        self._zygotes: OrderedDict[PoolKey, Zygote] = OrderedDict()
        self._retired: set[Zygote] = set()
        self._locks: dict[PoolKey, anyio.Lock] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = anyio.Event()
        self._closed = anyio.Event()
        self._wake = anyio.Event()
        self.started = 0
        self.rebuilds = 0

    @classmethod
    async def create(cls, app: AppState) -> ZygotePool:
        if app.task_group is None:
            raise ToolError("internal: the server has no task group for the test worker pool")
        pool = cls(app)
        await app.task_group.start(pool._host)
        return pool

    async def _host(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                await tg.start(self.rendezvous.serve)
                tg.start_soon(self._sweeper)
                task_status.started()
                await self._closing.wait()
                for zygote in [*self._zygotes.values(), *self._retired]:
                    zygote.stop()
                with anyio.move_on_after(10):
                    for zygote in [*self._zygotes.values(), *self._retired]:
                        await zygote.stopped.wait()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self.rendezvous.close()
            self._closed.set()

    # --- leasing ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, root: Path, interpreter: Path) -> AsyncIterator[Zygote]:
        """A ready zygote for (root, interpreter) whose environment is unchanged, held for one run.

        Raises `ToolError` naming the interpreter when none can be started (no pytest there, say).
        """
        zygote = await self._get(root, interpreter)
        zygote.active += 1
        try:
            yield zygote
        finally:
            zygote.active -= 1
            zygote.last_used = time.monotonic()
            if zygote.retiring and zygote.active == 0:
                zygote.stop()
            self._wake.set()

    async def _get(self, root: Path, interpreter: Path) -> Zygote:
        key = (root, interpreter)
        zygote = self._zygotes.get(key)
        if zygote is not None and zygote.alive:
            current = await anyio.to_thread.run_sync(fingerprint, root, interpreter, zygote.site_dirs)
            if current == zygote.fingerprint:
                self._zygotes.move_to_end(key)
                return zygote
        async with self._locks.setdefault(key, anyio.Lock()):
            zygote = self._zygotes.get(key)
            if zygote is not None:
                fresh = zygote.alive and zygote.fingerprint == await anyio.to_thread.run_sync(
                    fingerprint, root, interpreter, zygote.site_dirs
                )
                if fresh:
                    self._zygotes.move_to_end(key)
                    return zygote
                logger.info("rebuilding the test worker for %s: %s", root, zygote.error or "its environment changed")
                self.rebuilds += 1
                self._retire(key)
            zygote = await self._start(root, interpreter)
            self._zygotes[key] = zygote
            self._evict()
            return zygote

    async def _start(self, root: Path, interpreter: Path) -> Zygote:
        if self._tg is None or self._closing.is_set():
            raise WorkerGone("the test worker pool is closed")
        zygote = Zygote(root=root, interpreter=interpreter, executor=self._app.executor)
        self._tg.start_soon(zygote.serve)
        with anyio.move_on_after(START_TIMEOUT_S + 5):
            await zygote.ready.wait()
        if not zygote.alive:
            zygote.stop()
            raise WorkerGone(zygote.error or f"the test worker in {interpreter} did not start")
        zygote.fingerprint = await anyio.to_thread.run_sync(fingerprint, root, interpreter, zygote.site_dirs)
        self.started += 1
        self._wake.set()
        return zygote

    def _retire(self, key: PoolKey) -> None:
        zygote = self._zygotes.pop(key, None)
        if zygote is None:
            return
        zygote.retiring = True
        if zygote.active == 0:
            zygote.stop()
        else:
            self._retired.add(zygote)

    def _evict(self) -> None:
        while len(self._zygotes) > self.max_size:
            self._retire(next(iter(self._zygotes)))  # least recently used first

    # --- idle shutdown ---------------------------------------------------------------------------

    async def _sweeper(self) -> None:
        """Stop zygotes idle past the TTL: sleep until the earliest deadline, prune, repeat."""
        while True:
            now = time.monotonic()
            deadlines = [z.last_used + self.idle_ttl_s for z in self._zygotes.values() if z.active == 0]
            delay = max(0.05, min(deadlines) - now) if deadlines else self.idle_ttl_s
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()
            self.prune()

    def prune(self) -> int:
        """Stop zygotes idle longer than the TTL; forget dead and finished ones. Returns how many."""
        now = time.monotonic()
        doomed = [
            k
            for k, z in self._zygotes.items()
            if (z.active == 0 and now - z.last_used >= self.idle_ttl_s) or z.stopped.is_set()
        ]
        for key in doomed:
            self._retire(key)
        self._retired = {z for z in self._retired if not z.stopped.is_set()}
        return len(doomed)

    # --- service ---------------------------------------------------------------------------------

    def zygotes(self) -> list[Zygote]:
        return list(self._zygotes.values())

    def status(self) -> dict[str, Any]:
        """For readiness probes: bounds, counters, each zygote's state, the run queue."""
        slots = self._app.executor.slots
        return {
            "size": len(self._zygotes),
            "max_size": self.max_size,
            "idle_ttl_s": self.idle_ttl_s,
            "started": self.started,
            "rebuilds": self.rebuilds,
            "retiring": len(self._retired),
            "runs_active": slots.running,
            "runs_queued": slots.waiting,
            "zygotes": [z.status() for z in self._zygotes.values()],
        }

    async def aclose(self) -> None:
        """Stop every zygote (their children die with them), then end the host task. Bounded."""
        self._closing.set()
        with anyio.move_on_after(15, shield=True):
            await self._closed.wait()


async def get_pool(app: AppState) -> ZygotePool:
    async def factory() -> ZygotePool:
        return await ZygotePool.create(app)

    return await app.services.get(SERVICE_KEY, factory)
