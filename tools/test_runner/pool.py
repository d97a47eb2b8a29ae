"""ZygotePool: the zygote policy on `WarmPool`, one warm zygote per (root, interpreter).

Stale when the interpreter or the installed packages changed (a few `stat`s, cached for a moment
and taken off the loop, before every run) or, seen by a check beside the run, pytest's
configuration files (the runs after it get a fresh zygote; the root is walked once, then each
check stats the files and folders of that walk: `config_watch.ConfigSnapshot`). Its pool also
hosts the rendezvous socket. Bounds: settings `zygote_pool_size`, `zygote_idle_ttl_s`.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio.to_thread

from mcp_server.api import AppState, PooledService
from tools.test_runner.config_watch import ConfigSnapshot
from tools.test_runner.environment import EnvFingerprints
from tools.test_runner.rendezvous import Rendezvous
from tools.test_runner.zygote import START_TIMEOUT_S, WorkerGone, Zygote

Key = tuple[Path, Path]


class ZygotePool(PooledService[Key, Zygote], name="test worker", workers_key="zygotes", service_key="test_pool"):
    error = WorkerGone
    start_timeout_s = START_TIMEOUT_S + 5

    def __init__(self, app: AppState) -> None:
        super().__init__(app)
        self.rendezvous = Rendezvous()
        self.env = EnvFingerprints()

    def bounds(self) -> tuple[int, float]:
        return self.app.settings.zygote_pool_size, self.app.settings.zygote_idle_ttl_s

    async def on_start(self) -> None:
        self.app.executor.adopt_orphans()  # what a killed zygote's runs leave is re-parented to us
        await self.pool.start_task(self.rendezvous.serve)

    async def new_worker(self, key: Key) -> Zygote:
        zygote = Zygote(root=key[0], interpreter=key[1], executor=self.app.executor)
        zygote.config = await anyio.to_thread.run_sync(ConfigSnapshot.take, key[0])
        zygote.config_fingerprint = zygote.config.fingerprint
        return zygote

    async def on_ready(self, zygote: Zygote) -> None:
        zygote.env_fingerprint = await self.env.get(zygote.interpreter, zygote.site_dirs)

    async def _env_changed(self, zygote: Zygote) -> str | None:
        same = await self.env.get(zygote.interpreter, zygote.site_dirs) == zygote.env_fingerprint
        return None if same else "its interpreter or installed packages changed"

    async def check_beside(self, zygote: Zygote) -> str | None:
        """The zygote never read pytest's configuration (each run does): a change retires it for later runs."""
        if zygote.config is None:
            return None
        zygote.config = await anyio.to_thread.run_sync(zygote.config.refresh, zygote.root)
        return None if zygote.config.fingerprint == zygote.config_fingerprint else "its pytest configuration changed"

    def lease(self, root: Path, interpreter: Path) -> AbstractAsyncContextManager[Zygote]:
        """A ready zygote for (root, interpreter) whose environment is unchanged, for one run."""
        return self.pool.lease((root, interpreter), self._env_changed)

    def extra_status(self) -> dict[str, Any]:
        slots = self.app.executor.slots
        return {
            "rebuilds": self.restarts,
            "runs_active": slots.running,
            "runs_queued": slots.waiting,
            "runs_admitted": slots.admitted,
            "queue_wait_s_total": round(slots.total_wait_s, 3),
        }

    async def aclose(self) -> None:
        """Stop every zygote (their children die with them) and the rendezvous. Bounded."""
        await super().aclose()
        self.rendezvous.close()


get_pool = ZygotePool.get
