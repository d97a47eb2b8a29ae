"""WarmPool[K, W]: long-lived worker processes kept warm per key, bounded, shut down when idle.

One pool per kind of worker (`ruff server`s per root and rule selection, pytest zygotes per root
and interpreter); a tool supplies only its `PoolPolicy`: how to create a worker for a key, what to
do once it is ready, the error to raise when none can be started; and, per lease, what makes a
worker stale (checked before the use, or beside it when the check is slow: `check_beside`). A
`PooledService` is a policy that owns its pool and is one of the server's services (made on first
use, closed with the server): the ruff server and zygote pools are each one.

- Leasing: `lease(key)` yields a live, fresh worker for one use. Starts are serialized per key (a
  slow start of one key never holds up another); a leased worker is never stopped under its user.
- LRU cap with retire-and-drain: starting one worker too many retires the least recently used; a
  retired (or stale) worker that is leased finishes what it does and stops when its last lease
  ends.
- Idle sweeper: sleeps until the earliest idle deadline of the workers nobody leases (a leased
  worker has none), then `prune`s.
- One place counts the pool's size, starts, restarts (a dead or stale worker replaced) and
  evictions (retired by the cap or idleness), in `status()`.

The host task (`start(task_group)`) lives in the server's task group and owns every worker's host
task (`serve()`), the sweeper, and whatever else the owner runs there (`start_task`, `spawn`).
"""

from __future__ import annotations

import abc
import contextlib
import functools
import inspect
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, Self, TypeVar

import anyio
import anyio.abc

if TYPE_CHECKING:
    from mcp_server.api import AppState

logger = logging.getLogger("mcp_server.pool")

MIN_SWEEP_S = 0.01
STOP_WAIT_S = 10.0


class PoolWorker(Protocol):
    """What the pool needs of a worker: a host task that sets `ready` once it is up (or failed)."""

    ready: anyio.Event
    stopped: anyio.Event
    error: str | None

    @property
    def alive(self) -> bool: ...

    def stop(self) -> None: ...

    async def serve(self) -> None: ...

    def status(self) -> dict[str, Any]: ...


K = TypeVar("K")
W = TypeVar("W", bound=PoolWorker)
Check = Callable[[W], Awaitable[str | None] | str | None]
"""Why a worker must be replaced before this lease (None: it is fine); plain or a coroutine."""


class PoolPolicy(abc.ABC, Generic[K, W]):
    """What a kind of worker brings to its pool. A subclass names it in its class line
    (`class RuffServerPool(PoolPolicy[Key, RuffServer], name="ruff server", workers_key="servers")`);
    the class attributes below may also be set in its body."""

    name = "worker"
    """What the workers are, for messages and logs."""
    workers_key = "workers"
    """The key of the worker list in `status()`."""
    start_timeout_s = 60.0
    """How long a start may take before the pool gives up on it."""
    error: type[Exception] = RuntimeError
    """What `gone` raises."""

    def __init_subclass__(cls, *, name: str | None = None, workers_key: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.name = name or cls.name
        cls.workers_key = workers_key or cls.workers_key

    @abc.abstractmethod
    async def new_worker(self, key: K) -> W:
        """A worker for `key`, not started yet (the pool runs its `serve()`)."""

    async def on_ready(self, worker: W) -> None:
        """Called once `worker` is up, before its first lease."""
        return None

    async def check_beside(self, worker: W) -> str | None:
        """Why `worker` went stale, found by a check run beside a use rather than before it (a slow
        one): the use goes on, the worker is retired, the next lease gets a fresh one. At most one
        runs per worker at a time. Not overridden: no such check."""
        return None

    def gone(self, message: str) -> Exception:
        """The error raised when no worker can be had (the pool is closed, a start failed)."""
        return self.error(message)


@dataclass(eq=False)
class _Entry(Generic[W]):
    worker: W
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)
    retiring: bool = False
    checking: bool = False


class WarmPool(Generic[K, W]):
    def __init__(self, policy: PoolPolicy[K, W], *, max_size: int, idle_ttl_s: float) -> None:
        self.policy = policy
        self.name = policy.name
        self.max_size = max_size
        self.idle_ttl_s = idle_ttl_s
        self._entries: OrderedDict[K, _Entry[W]] = OrderedDict()
        self._retired: set[_Entry[W]] = set()
        self._locks: dict[K, anyio.Lock] = {}
        self._tg: anyio.abc.TaskGroup | None = None
        self._closing = anyio.Event()
        self._closed = anyio.Event()
        self._wake = anyio.Event()
        self._checks_beside = type(policy).check_beside is not PoolPolicy.check_beside
        self.started = 0
        self.restarts = 0
        self.evictions = 0

    # --- the host task ---------------------------------------------------------------------------

    async def start(self, task_group: anyio.abc.TaskGroup | None) -> None:
        """Start the host task in `task_group` (the server's); it runs until `aclose()`."""
        if task_group is None:
            raise self.policy.gone(f"internal: the server has no task group for the {self.name} pool")
        await task_group.start(self._run)

    async def _run(self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._sweeper)
                task_status.started()
                await self._closing.wait()
                entries = [*self._entries.values(), *self._retired]
                self._entries.clear()
                for entry in entries:
                    entry.worker.stop()
                with anyio.move_on_after(STOP_WAIT_S):
                    for entry in entries:
                        await entry.worker.stopped.wait()
                tg.cancel_scope.cancel()
        finally:
            self._tg = None
            self._closed.set()

    async def start_task(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run `func` (a host task that reports `task_status.started()`) beside the workers."""
        await self._host().start(func, *args)

    def spawn(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Run `func` in the background beside the workers (ended with the pool)."""
        self._host().start_soon(func, *args)

    def _host(self) -> anyio.abc.TaskGroup:
        if self._tg is None or self._closing.is_set():
            raise self.policy.gone(f"the {self.name} pool is closed")
        return self._tg

    async def aclose(self) -> None:
        """Stop every worker (bounded), then end the host task. Idempotent."""
        self._closing.set()
        with anyio.move_on_after(STOP_WAIT_S + 5, shield=True):
            await self._closed.wait()

    # --- leasing ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def lease(self, key: K, check: Check[W] | None = None) -> AsyncIterator[W]:
        """A live worker for `key` (started if needed) that `check` finds fresh, held for one use.

        Raises the pool's `gone` error when none can be started."""
        entry = await self._acquire(key, check)
        try:
            if self._checks_beside and not entry.checking and self._tg is not None:
                entry.checking = True
                self._tg.start_soon(self._check_beside, entry)
            yield entry.worker
        finally:
            entry.leases -= 1
            entry.last_used = time.monotonic()
            if entry.retiring and entry.leases == 0:
                entry.worker.stop()
            self._wake.set()

    async def _acquire(self, key: K, check: Check[W] | None) -> _Entry[W]:
        entry = self._entries.get(key)
        if entry is not None and await self._why_replace(entry, check) is None and self._entries.get(key) is entry:
            return self._take(key, entry)
        async with self._locks.setdefault(key, anyio.Lock()):
            entry = self._entries.get(key)
            if entry is not None:
                why = await self._why_replace(entry, check)
                if why is None and self._entries.get(key) is entry:
                    return self._take(key, entry)
                if self._entries.get(key) is entry:
                    logger.info("restarting the %s for %s: %s", self.name, key, why)
                    self.restarts += 1
                    self._retire(key)
            worker = await self._start(key)
            entry = _Entry(worker)
            self._entries[key] = entry
            taken = self._take(key, entry)  # leased before the cap is applied: never its victim
            self._evict()
            return taken

    @staticmethod
    async def _why_replace(entry: _Entry[W], check: Check[W] | None) -> str | None:
        worker = entry.worker
        if not worker.alive:
            return f"it died ({worker.error})" if worker.error else "it stopped"
        why = None if check is None else check(worker)
        return await why if inspect.isawaitable(why) else why

    async def _check_beside(self, entry: _Entry[W]) -> None:
        try:
            why = await self.policy.check_beside(entry.worker)
        except Exception:
            logger.exception("checking the %s failed", self.name)
            why = None
        finally:
            entry.checking = False
        if why is not None:
            self.retire_where(lambda key, worker: worker is entry.worker, why)

    def _take(self, key: K, entry: _Entry[W]) -> _Entry[W]:
        self._entries.move_to_end(key)
        entry.leases += 1
        return entry

    async def _start(self, key: K) -> W:
        self._host()  # fail fast when closed
        worker = await self.policy.new_worker(key)
        try:
            # The host again: the pool may have closed (the server shutting down) while we waited.
            self._host().start_soon(worker.serve)
        except RuntimeError:  # its task group ended between the check and the start
            raise self.policy.gone(f"the {self.name} pool is closed") from None
        try:
            with anyio.move_on_after(self.policy.start_timeout_s):
                await worker.ready.wait()
            if worker.alive:
                await self.policy.on_ready(worker)
        finally:
            if not worker.alive:
                worker.stop()
        if not worker.alive:
            raise self.policy.gone(worker.error or f"the {self.name} did not start in time")
        self.started += 1
        self._wake.set()
        return worker

    # --- retiring --------------------------------------------------------------------------------

    def _retire(self, key: K) -> None:
        """Take `key`'s worker out of the pool; it stops now, or when its last lease ends."""
        entry = self._entries.pop(key, None)
        lock = self._locks.get(key)
        if lock is not None and not lock.locked():
            del self._locks[key]
        if entry is None:
            return
        entry.retiring = True
        if entry.leases == 0:
            entry.worker.stop()
        else:
            self._retired.add(entry)

    def retire_where(self, doomed: Callable[[K, W], bool], why: str | None = None) -> int:
        """Retire the workers for which `doomed(key, worker)` holds; with `why` (it went stale),
        each counts as a restart (its key gets a fresh worker on its next lease). Returns how many."""
        keys = [k for k, e in self._entries.items() if doomed(k, e.worker)]
        for key in keys:
            if why is not None:
                logger.info("restarting the %s for %s: %s", self.name, key, why)
                self.restarts += 1
            self._retire(key)
        return len(keys)

    def _evict(self) -> None:
        while len(self._entries) > self.max_size:
            key = next(iter(self._entries))  # least recently used first
            logger.info("retiring the %s for %s: the pool is full (%d)", self.name, key, self.max_size)
            self.evictions += 1
            self._retire(key)

    async def _sweeper(self) -> None:
        """Stop workers idle past the TTL: sleep until the earliest deadline of an unleased one."""
        while True:
            delay = self.sweep_delay()
            with anyio.move_on_after(delay if delay is not None else float("inf")):
                await self._wake.wait()
            self._wake = anyio.Event()
            self.prune()

    def sweep_delay(self) -> float | None:
        """Seconds until the earliest idle deadline; None when no worker is idle (a leased worker
        has no deadline: the sweeper sleeps until a lease ends or a worker starts)."""
        deadlines = [e.last_used + self.idle_ttl_s for e in self._entries.values() if e.leases == 0]
        return max(MIN_SWEEP_S, min(deadlines) - time.monotonic()) if deadlines else None

    def prune(self) -> int:
        """Retire workers idle for the TTL and forget stopped ones. Returns how many went."""
        now = time.monotonic()
        idle = [k for k, e in self._entries.items() if e.leases == 0 and now - e.last_used >= self.idle_ttl_s]
        dead = [k for k, e in self._entries.items() if e.worker.stopped.is_set() and k not in idle]
        self.evictions += len(idle)
        for key in [*idle, *dead]:
            self._retire(key)
        self._retired = {e for e in self._retired if not e.worker.stopped.is_set()}
        return len(idle) + len(dead)

    # --- reporting -------------------------------------------------------------------------------

    def workers(self) -> list[W]:
        return [e.worker for e in self._entries.values()]

    def items(self) -> list[tuple[K, W]]:
        return [(k, e.worker) for k, e in self._entries.items()]

    def status(self) -> dict[str, Any]:
        """Bounds, counters and each worker's state (with its leases and idle time)."""
        now = time.monotonic()
        return {
            "size": len(self._entries),
            "max_size": self.max_size,
            "idle_ttl_s": self.idle_ttl_s,
            "started": self.started,
            "restarts": self.restarts,
            "evictions": self.evictions,
            "retiring": len(self._retired),
            self.policy.workers_key: [
                {**e.worker.status(), "leases": e.leases, "idle_s": round(now - e.last_used, 1)}
                for e in self._entries.values()
            ],
        }


class PooledService(PoolPolicy[K, W]):
    """A policy that owns its `WarmPool` and is one of the server's services: made on first use
    (`get(app)`, once per process), its host task in the server's task group, closed with the server.
    A subclass names its service key in its class line (`service_key="ruff_pool"`) and gives its
    `bounds`; without the server's task group, `get` raises the policy's `gone` error."""

    service_key = "pool"
    """Its key among the server's services (and in health and metrics readings)."""

    def __init_subclass__(cls, *, service_key: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.service_key = service_key or cls.service_key

    def __init__(self, app: AppState) -> None:
        self.app = app
        max_size, idle_ttl_s = self.bounds()
        self.pool: WarmPool[K, W] = WarmPool(self, max_size=max_size, idle_ttl_s=idle_ttl_s)

    @abc.abstractmethod
    def bounds(self) -> tuple[int, float]:
        """The pool's (max_size, idle_ttl_s), from `self.app.settings`."""

    @classmethod
    async def get(cls, app: AppState) -> Self:
        """The server's one pool of this kind (made, and its host task started, on first use)."""
        return await app.services.get(cls.service_key, functools.partial(cls._create, app))

    @classmethod
    async def _create(cls, app: AppState) -> Self:
        self = cls(app)
        await self.pool.start(app.task_group)
        try:
            await self.on_start()
        except BaseException:  # not made: its host task must not outlive it
            await self.pool.aclose()
            raise
        return self

    async def on_start(self) -> None:
        """Called once the host task runs: start what lives beside the workers (`pool.start_task`)."""
        return None

    @property
    def started(self) -> int:
        return self.pool.started

    @property
    def restarts(self) -> int:
        return self.pool.restarts

    def workers(self) -> list[W]:
        return self.pool.workers()

    def prune(self) -> int:
        return self.pool.prune()

    def status(self) -> dict[str, Any]:
        """The pool's `status()` with the policy's own fields (`extra_status`)."""
        return {**self.pool.status(), **self.extra_status()}

    def extra_status(self) -> dict[str, Any]:
        return {}

    async def aclose(self) -> None:
        """Stop every worker (bounded), then end the host task."""
        await self.pool.aclose()
