"""ZygotePool: the zygote policy on `WarmPool`, one warm zygote per (root, interpreter).

Stale when the interpreter or the installed packages changed (a few `stat`s, cached for a moment
and taken off the loop, before every run) or, seen by a walk beside the run, pytest's
configuration files (the runs after it get a fresh zygote). Its pool also hosts the rendezvous
socket. Bounds: settings `zygote_pool_size`, `zygote_idle_ttl_s`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio.to_thread

from mcp_server.api import AppState, Executor, PoolPolicy, WarmPool
from tools.test_runner.environment import EnvFingerprints, config_fingerprint
from tools.test_runner.rendezvous import Rendezvous
from tools.test_runner.zygote import START_TIMEOUT_S, WorkerGone, Zygote

SERVICE_KEY = "test_pool"
PoolKey = tuple[Path, Path]


class ZygotePool(
    PoolPolicy[PoolKey, Zygote], name="test worker", workers_key="zygotes", start_timeout_s=START_TIMEOUT_S + 5
):
    def __init__(self, executor: Executor, *, max_size: int, idle_ttl_s: float) -> None:
        self.pool = WarmPool(self, max_size=max_size, idle_ttl_s=idle_ttl_s)
        self.executor = executor
        self.rendezvous = Rendezvous()
        self.env = EnvFingerprints()

    @classmethod
    async def create(cls, app: AppState) -> ZygotePool:
        settings = app.settings
        self = cls(app.executor, max_size=settings.zygote_pool_size, idle_ttl_s=settings.zygote_idle_ttl_s)
        self.executor.adopt_orphans()  # what a killed zygote's runs leave is re-parented to us
        await self.pool.start(app.task_group)
        await self.pool.start_task(self.rendezvous.serve)
        return self

    def gone(self, message: str) -> Exception:
        return WorkerGone(message)

    async def new_worker(self, key: PoolKey) -> Zygote:
        root, interpreter = key
        zygote = Zygote(root=root, interpreter=interpreter, executor=self.executor)
        zygote.config_fingerprint = await anyio.to_thread.run_sync(config_fingerprint, root)
        return zygote

    async def on_ready(self, zygote: Zygote) -> None:
        zygote.env_fingerprint = await self.env.get(zygote.interpreter, zygote.site_dirs)

    async def _env_changed(self, zygote: Zygote) -> str | None:
        current = await self.env.get(zygote.interpreter, zygote.site_dirs)
        return None if current == zygote.env_fingerprint else "its interpreter or installed packages changed"

    @contextlib.asynccontextmanager
    async def lease(self, root: Path, interpreter: Path) -> AsyncIterator[Zygote]:
        """A ready zygote for (root, interpreter) whose environment is unchanged, for one run."""
        async with self.pool.lease((root, interpreter), self._env_changed) as zygote:
            if not zygote.checking_config:
                zygote.checking_config = True
                self.pool.spawn(self._check_config, zygote)
            yield zygote

    async def _check_config(self, zygote: Zygote) -> None:
        """The zygote never read the configuration (each run does): a change only retires it."""
        try:
            current = await anyio.to_thread.run_sync(config_fingerprint, zygote.root)
        finally:
            zygote.checking_config = False
        if current != zygote.config_fingerprint:
            self.pool.retire_where(lambda key, z: z is zygote, why="its pytest configuration changed")

    @property
    def rebuilds(self) -> int:
        return self.pool.restarts

    @property
    def started(self) -> int:
        return self.pool.started

    def zygotes(self) -> list[Zygote]:
        return self.pool.workers()

    def prune(self) -> int:
        return self.pool.prune()

    def status(self) -> dict[str, Any]:
        slots = self.executor.slots
        return {
            **self.pool.status(),
            "rebuilds": self.pool.restarts,
            "runs_active": slots.running,
            "runs_queued": slots.waiting,
            "runs_admitted": slots.admitted,
            "queue_wait_s_total": round(slots.total_wait_s, 3),
        }

    async def aclose(self) -> None:
        """Stop every zygote (their children die with them) and the rendezvous. Bounded."""
        await self.pool.aclose()
        self.rendezvous.close()


async def get_pool(app: AppState) -> ZygotePool:
    return await app.services.get(SERVICE_KEY, functools.partial(ZygotePool.create, app))
