"""ZygotePool: one warm zygote per (root, interpreter), rebuilt on environment change, LRU-capped,
shut down after an idle TTL.

A change of the interpreter or of the installed packages is checked before every run (a few
`stat`s); a change of pytest's configuration files (a walk of the project) beside the run, and
the zygote is replaced for the runs after it.

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
from tools.test_runner.environment import config_fingerprint, env_fingerprint
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
        app.executor.adopt_orphans()  # what a killed zygote's runs leave is re-parented to us
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
        if zygote is not None and self._usable(zygote):
            self._zygotes.move_to_end(key)
            self._check_config_soon(key, zygote)
            return zygote
        async with self._locks.setdefault(key, anyio.Lock()):
            zygote = self._zygotes.get(key)
            if zygote is not None:
                if self._usable(zygote):
                    self._zygotes.move_to_end(key)
                    return zygote
                why = zygote.error or "its interpreter or installed packages changed"
                logger.info("rebuilding the test worker for %s: %s", root, why)
                self.rebuilds += 1
                self._retire(key)
            zygote = await self._start(root, interpreter)
            self._zygotes[key] = zygote
            self._evict()
            return zygote

    @staticmethod
    def _usable(zygote: Zygote) -> bool:
        """Alive, and what it imported is unchanged: the interpreter and the installed packages.
        A few `stat`s, checked before every run (a stale pytest would change results)."""
        return zygote.alive and env_fingerprint(zygote.interpreter, zygote.site_dirs) == zygote.env_fingerprint

    def _check_config_soon(self, key: PoolKey, zygote: Zygote) -> None:
        """Walk the project's pytest configuration in the background, beside the run. The zygote
        never read it (the run re-reads everything), so a change only retires the zygote: the
        runs after it get a fresh one."""
        if zygote.checking_config or self._tg is None:
            return
        zygote.checking_config = True
        self._tg.start_soon(self._check_config, key, zygote)

    async def _check_config(self, key: PoolKey, zygote: Zygote) -> None:
        try:
            current = await anyio.to_thread.run_sync(config_fingerprint, zygote.root)
        finally:
            zygote.checking_config = False
        if current != zygote.config_fingerprint and self._zygotes.get(key) is zygote:
            logger.info("rebuilding the test worker for %s: its pytest configuration changed", zygote.root)
            self.rebuilds += 1
            self._retire(key)

    async def _start(self, root: Path, interpreter: Path) -> Zygote:
        if self._tg is None or self._closing.is_set():
            raise WorkerGone("the test worker pool is closed")
        config = await anyio.to_thread.run_sync(config_fingerprint, root)
        zygote = Zygote(root=root, interpreter=interpreter, executor=self._app.executor)
        self._tg.start_soon(zygote.serve)
        with anyio.move_on_after(START_TIMEOUT_S + 5):
            await zygote.ready.wait()
        if not zygote.alive:
            zygote.stop()
            raise WorkerGone(zygote.error or f"the test worker in {interpreter} did not start")
        zygote.config_fingerprint = config
        zygote.env_fingerprint = env_fingerprint(interpreter, zygote.site_dirs)
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
            "runs_admitted": slots.admitted,
            "queue_wait_s_total": round(slots.total_wait_s, 3),
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
