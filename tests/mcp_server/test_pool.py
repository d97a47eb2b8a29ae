"""WarmPool with in-process workers: per-key starts, leasing, the LRU cap's retire-and-drain, the idle
sweeper (which leaves leased workers alone), restarts, failed starts, status and close. The two real
pools (ruff servers, zygotes) are tested with real processes in tests/tools."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

from mcp_server.api import AppState, PooledService, PoolPolicy, Services, ToolError, WarmPool

pytestmark = pytest.mark.anyio


class FakeWorker:
    def __init__(self, key: str, fail: bool) -> None:
        self.key = key
        self.fail = fail
        self.ready = anyio.Event()
        self.stopped = anyio.Event()
        self._stop = anyio.Event()
        self.error: str | None = None

    @property
    def alive(self) -> bool:
        return self.ready.is_set() and self.error is None and not self._stop.is_set()

    def stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        try:
            if self.fail:
                self.error = "it cannot start"
                return
            self.ready.set()
            await self._stop.wait()
        finally:
            self.ready.set()
            self.stopped.set()

    def status(self) -> dict[str, Any]:
        return {"key": self.key, "alive": self.alive}


class FakePolicy(PoolPolicy[str, FakeWorker], name="fake worker", workers_key="fakes"):
    start_timeout_s = 5

    def __init__(self) -> None:
        self.created: list[FakeWorker] = []
        self.gates: dict[str, anyio.Event] = {}
        self.failing: set[str] = set()
        self.ready: list[FakeWorker] = []

    async def new_worker(self, key: str) -> FakeWorker:
        gate = self.gates.get(key)
        if gate is not None:
            await gate.wait()
        worker = FakeWorker(key, key in self.failing)
        self.created.append(worker)
        return worker

    async def on_ready(self, worker: FakeWorker) -> None:
        self.ready.append(worker)

    def gone(self, message: str) -> Exception:
        return ToolError(message)


@asynccontextmanager
async def warm_pool(
    max_size: int = 4, idle_ttl_s: float = 600, policy: FakePolicy | None = None
) -> AsyncIterator[tuple[WarmPool[str, FakeWorker], FakePolicy]]:
    policy = policy or FakePolicy()
    pool = WarmPool(policy, max_size=max_size, idle_ttl_s=idle_ttl_s)
    async with anyio.create_task_group() as tg:
        await pool.start(tg)
        try:
            yield pool, policy
        finally:
            await pool.aclose()


async def until(condition: Any) -> None:
    while not condition():
        await anyio.lowlevel.checkpoint()


async def test_one_start_per_key_and_a_slow_start_holds_up_no_other_key() -> None:
    with anyio.fail_after(10):
        async with warm_pool() as (pool, policy):
            policy.gates["slow"] = anyio.Event()
            got: list[FakeWorker] = []

            async def use(key: str) -> None:
                async with pool.lease(key) as worker:
                    got.append(worker)

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(use, "slow")
                async with pool.lease("fast") as fast:  # while "slow" is still starting
                    assert fast.key == "fast"
                assert not got
                policy.gates["slow"].set()
            assert len({id(w) for w in got}) == 1, "three leases, one start"
            assert pool.started == 2 and [w.key for w in policy.ready] == ["fast", "slow"]


async def test_leases_reuse_and_the_cap_retires_the_least_recently_used_after_it_drains() -> None:
    with anyio.fail_after(10):
        async with warm_pool(max_size=2) as (pool, _policy):
            async with pool.lease("a") as a, pool.lease("b") as b:
                pass
            async with pool.lease("a") as again:
                assert again is a  # reused; now "b" is the least recently used
            async with pool.lease("b") as b_again:
                assert b_again is b
                async with pool.lease("a"):
                    pass
                async with pool.lease("c") as c:  # one too many: "b" is retired, but it is leased
                    assert pool.workers() == [a, c]
                    assert b.alive and not b.stopped.is_set(), "never stopped under its user"
                    assert pool.status()["retiring"] == 1
            await b.stopped.wait()  # its lease ended: it drained and stopped
            pool.prune()
            status = pool.status()
            assert status["evictions"] == 1 and status["retiring"] == 0 and status["size"] == 2
            assert [w["key"] for w in status["fakes"]] == ["a", "c"]
            assert {"started", "restarts", "max_size", "idle_ttl_s"} <= set(status)


async def test_the_idle_sweeper_stops_idle_workers_and_leaves_leased_ones_alone() -> None:
    with anyio.fail_after(10):
        async with warm_pool(idle_ttl_s=0.05) as (pool, _policy):
            async with pool.lease("held") as held:
                assert pool.sweep_delay() is None, "nothing idle: the sweeper sleeps until a lease ends"
                async with pool.lease("idle") as idle:
                    pass
                assert pool.sweep_delay() is not None
                await idle.stopped.wait()  # idle past the TTL
                assert held.alive, "a leased worker has no idle deadline"
                assert pool.sweep_delay() is None, "a busy worker past its idle time wakes nobody"
                assert pool.workers() == [held]
                status = pool.status()
                assert status["fakes"][0]["leases"] == 1 and status["evictions"] == 1
            await held.stopped.wait()  # idle once released
            assert pool.workers() == []


async def test_a_dead_or_stale_worker_is_replaced_on_its_next_lease(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "mcp_server.pool")
    with anyio.fail_after(10):
        async with warm_pool() as (pool, _policy):
            async with pool.lease("k") as first:
                pass
            first.stop()  # it died
            await first.stopped.wait()
            async with pool.lease("k") as second:
                assert second is not first

            async def changed(worker: FakeWorker) -> str | None:
                return "its config changed" if worker is second else None

            async with pool.lease("k", changed) as third:
                assert third is not second
            await second.stopped.wait()
            assert pool.restarts == 2 and pool.started == 3
            assert "its config changed" in caplog.text


async def test_a_failed_start_raises_the_policys_error_and_leaves_nothing_running() -> None:
    with anyio.fail_after(10):
        async with warm_pool() as (pool, policy):
            policy.failing.add("bad")
            with pytest.raises(ToolError, match="cannot start"):
                async with pool.lease("bad"):
                    raise AssertionError("not reached")
            (bad,) = policy.created
            await bad.stopped.wait()
            assert pool.workers() == [] and pool.started == 0


async def test_close_stops_every_worker_and_later_leases_are_refused() -> None:
    with anyio.fail_after(10):
        async with warm_pool(max_size=1) as (pool, _policy):
            async with pool.lease("a") as a:
                async with pool.lease("b") as b:  # "a" retired while leased
                    pass
                await pool.aclose()
                assert a.stopped.is_set() and b.stopped.is_set()
            with pytest.raises(ToolError, match="closed"):
                async with pool.lease("c"):
                    raise AssertionError("not reached")


async def test_a_start_that_outlives_the_pools_host_is_refused_cleanly() -> None:
    """The server shutting down (its task group cancelled) while a start waits in the policy: the
    start gets the pool's `gone` error, not anyio's "task group is not active" RuntimeError."""
    policy = FakePolicy()
    policy.gates["k"] = anyio.Event()
    pool = WarmPool(policy, max_size=4, idle_ttl_s=600)
    errors: list[BaseException] = []

    async def use() -> None:
        try:
            async with pool.lease("k"):
                pass
        except Exception as exc:
            errors.append(exc)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as users:
            async with anyio.create_task_group() as host:
                await pool.start(host)
                users.start_soon(use)
                await until(lambda: pool._locks.get("k") is not None and pool._locks["k"].locked())
                host.cancel_scope.cancel()  # the server's runtime ends
            policy.gates["k"].set()
    assert len(errors) == 1 and isinstance(errors[0], ToolError), errors
    assert "closed" in str(errors[0])


class CheckedPolicy(FakePolicy, name="checked worker"):
    """A slow staleness check beside each use (pytest's configuration for zygotes)."""

    def __init__(self) -> None:
        super().__init__()
        self.checks: list[FakeWorker] = []
        self.verdict: str | None = None
        self.release = anyio.Event()

    async def check_beside(self, worker: FakeWorker) -> str | None:
        self.checks.append(worker)
        await self.release.wait()
        if self.verdict == "raise":
            raise OSError("unreadable config")
        return self.verdict


async def test_a_check_beside_the_use_never_delays_it_and_a_stale_verdict_retires_the_worker() -> None:
    with anyio.fail_after(10):
        async with warm_pool(policy=(policy := CheckedPolicy())) as (pool, _):
            async with pool.lease("k") as first:  # the check is still waiting: the use goes on
                await until(lambda: policy.checks == [first])
                async with pool.lease("k") as same:
                    assert same is first
                await anyio.wait_all_tasks_blocked()
                assert policy.checks == [first], "at most one check per worker at a time"
                policy.verdict = "its pytest configuration changed"
                policy.release.set()
                await until(lambda: pool.workers() == [])
                assert first.alive, "retired, but never stopped under its user"
            await first.stopped.wait()
            async with pool.lease("k") as fresh:
                assert fresh is not first
            assert pool.restarts == 1 and pool.started == 2


async def test_a_check_beside_that_fails_is_logged_and_keeps_the_worker(caplog: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(10):
        async with warm_pool(policy=(policy := CheckedPolicy())) as (pool, _):
            policy.verdict = "raise"
            policy.release.set()
            async with pool.lease("k") as first:
                pass
            await until(lambda: "checking the checked worker failed" in caplog.text)
            async with pool.lease("k") as again:
                assert again is first and pool.restarts == 0


async def test_a_plain_function_is_a_check_too() -> None:
    with anyio.fail_after(10):
        async with warm_pool() as (pool, _policy):
            async with pool.lease("k") as first:
                pass
            async with pool.lease("k", lambda worker: None) as same:
                assert same is first
            async with pool.lease("k", lambda worker: "stale" if worker is first else None) as fresh:
                assert fresh is not first and pool.restarts == 1


class FakeService(PooledService[str, FakeWorker], name="fake worker", service_key="fakes"):
    error = ToolError

    def __init__(self, app: AppState) -> None:
        super().__init__(app)
        self.extras = {"spares": 0}

    def bounds(self) -> tuple[int, float]:
        return 2, 600

    async def new_worker(self, key: str) -> FakeWorker:
        return FakeWorker(key, key == "bad")

    def extra_status(self) -> dict[str, Any]:
        return self.extras


@dataclass
class FakeApp:
    services: Services
    task_group: anyio.abc.TaskGroup | None


async def test_a_pooled_service_is_made_once_reports_one_status_and_closes_with_the_services() -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            app = cast(AppState, FakeApp(Services(), tg))
            service, again = await FakeService.get(app), await FakeService.get(app)
            assert service is again and app.services.peek("fakes") is service
            async with service.pool.lease("a") as a:
                pass
            with pytest.raises(ToolError, match="cannot start"):  # the error named in its class line
                async with service.pool.lease("bad"):
                    raise AssertionError("not reached")
            status = service.status()
            assert status["size"] == 1 and status["max_size"] == 2 and status["spares"] == 0
            assert service.workers() == [a] and service.started == 1 and service.restarts == 0
            await app.services.aclose()
            assert a.stopped.is_set()


async def test_a_pooled_service_without_the_servers_task_group_raises_its_error() -> None:
    app = cast(AppState, FakeApp(Services(), None))
    with anyio.fail_after(10), pytest.raises(ToolError, match="no task group"):
        await FakeService.get(app)
    assert app.services.peek("fakes") is None


class BrokenService(FakeService, service_key="broken"):
    made: list[BrokenService] = []

    async def on_start(self) -> None:
        BrokenService.made.append(self)
        raise ToolError("its rendezvous cannot start")


async def test_a_pooled_service_that_fails_to_start_leaves_no_host_task_behind() -> None:
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:  # ends on its own only if nothing is left in it
            app = cast(AppState, FakeApp(Services(), tg))
            with pytest.raises(ToolError, match="rendezvous"):
                await BrokenService.get(app)
            assert app.services.peek("broken") is None
            (service,) = BrokenService.made
            with pytest.raises(ToolError, match="closed"):
                async with service.pool.lease("a"):
                    raise AssertionError("not reached")
