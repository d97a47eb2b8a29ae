"""Readiness probes: ruff, the run queue, and the services' own status, cached by the monitor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_server.health import NOT_PROBED, ReadinessMonitor, probe_readiness
from mcp_server.server import build_app_state
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio


class Service:
    def __init__(self, status: Any) -> None:
        self._status = status

    async def aclose(self) -> None:
        return None

    def status(self) -> Any:
        if isinstance(self._status, Exception):
            raise self._status
        return self._status


class AsyncStatusService(Service):
    async def status(self) -> Any:  # type: ignore[override]
        return self._status


class NoStatus:
    async def aclose(self) -> None:
        return None


async def add(app: Any, key: str, service: Any) -> None:
    async def factory() -> Any:
        return service

    await app.services.get(key, factory)


async def test_ready_when_ruff_is_there_and_the_queue_has_room(tmp_path: Path) -> None:
    app = build_app_state(make_settings(tmp_path, tmp_path, max_concurrent_runs=3, max_queued_runs=7))
    readiness = await probe_readiness(app)
    assert readiness.ready and readiness.status_code == 200
    assert readiness.body["ruff"]["found"] is True and readiness.body["reasons"] == []
    assert readiness.body["executor"] == {"running": 0, "capacity": 3, "waiting": 0, "max_queued": 7}


async def test_service_status_is_reported_and_can_make_the_server_not_ready(tmp_path: Path) -> None:
    app = build_app_state(make_settings(tmp_path, tmp_path))
    await add(app, "pool", Service({"size": 2, "max_size": 4}))
    await add(app, "async-pool", AsyncStatusService({"size": 1}))
    await add(app, "plain", NoStatus())
    readiness = await probe_readiness(app)
    assert readiness.ready
    assert readiness.body["services"] == {"pool": {"size": 2, "max_size": 4}, "async-pool": {"size": 1}}
    await add(app, "cold", Service({"ready": False}))
    await add(app, "broken", Service(RuntimeError("status exploded")))
    readiness = await probe_readiness(app)
    assert not readiness.ready and readiness.status_code == 503
    assert readiness.body["reasons"] == ["service cold not ready", "service broken not ready"]
    assert readiness.body["services"]["broken"] == {"ready": False, "error": "RuntimeError: status exploded"}


async def test_a_full_run_queue_is_not_ready(tmp_path: Path) -> None:
    app = build_app_state(make_settings(tmp_path, tmp_path, max_concurrent_runs=1, max_queued_runs=0))
    async with app.executor.slots.slot():
        readiness = await probe_readiness(app)
        assert not readiness.ready
        assert readiness.body["reasons"] == ["run queue full (0 waiting; setting max_queued_runs)"]
    assert (await probe_readiness(app)).ready


async def test_the_monitor_probes_at_start_and_serves_the_cached_result(tmp_path: Path) -> None:
    app = build_app_state(make_settings(tmp_path, tmp_path))
    monitor = ReadinessMonitor(app, interval_s=3600)
    assert monitor.current is NOT_PROBED and not NOT_PROBED.ready
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            await monitor.start(tg)
            assert monitor.current.ready
            first = monitor.current
            await add(app, "cold", Service({"ready": False}))
            assert monitor.current is first  # cached until the next probe
            assert not (await monitor.refresh()).ready and not monitor.current.ready
            tg.cancel_scope.cancel()


def evict(app: Any, n: int) -> None:
    """Fill the run store past its cap with finished runs: the oldest are evicted."""
    for _ in range(n):
        run = app.runs.create("owner", "lint")
        app.runs.finish(run)


async def test_readiness_metrics_are_the_readings_the_instruments_observe(tmp_path: Path) -> None:
    """Issue 14: /readyz shows runs in flight, queue depth, run contexts alive and evicted,
    redactions, pool and cache counters from `telemetry.read`, the instruments' source."""
    from mcp_server import telemetry

    app = build_app_state(make_settings(tmp_path, tmp_path, max_runs=3, max_concurrent_runs=2))
    evict(app, 5)
    assert app.runs.evictions == 2 and len(app.runs) == 3
    app.redactor.redact("token: ghp_" + "a" * 36)
    assert app.redactor.redactions >= 1
    pool = {"size": 2, "max_size": 4, "started": 5, "restarts": 1, "evictions": 3, "servers": []}
    zygotes = {"size": 1, "started": 1, "rebuilds": 2, "restarts": 2, "evictions": 0}
    await add(app, "ruff_pool", Service(pool))
    await add(app, "zygotes", AsyncStatusService(zygotes))
    await add(app, "code_analysis", Service({"results": 3, "hits": 3, "misses": 1}))
    async with app.executor.slots.slot():
        body = (await probe_readiness(app)).body
        metrics = body["metrics"]
        assert metrics == {
            "runs_in_flight": 1,
            "queue_depth": 0,
            "run_contexts_alive": 3,
            "run_context_evictions": 2,
            "redactions": app.redactor.redactions,
            "pools": {
                "ruff_pool": {"size": 2, "starts": 5, "restarts": 1, "evictions": 3},
                "zygotes": {"size": 1, "starts": 1, "restarts": 2, "evictions": 0},
            },
            "caches": {"code_analysis": {"hits": 3, "misses": 1, "hit_ratio": 0.75}},
        }
        assert body["executor"] == {
            "running": 1,
            "capacity": 2,
            "waiting": 0,
            "max_queued": app.executor.slots.max_queued,
        }
        # The instruments' source (sync statuses only) gives the same values.
        readings = telemetry.read(app)
        assert readings.as_dict() == {**metrics, "pools": {"ruff_pool": metrics["pools"]["ruff_pool"]}}
    evict(app, 1)
    assert (await probe_readiness(app)).body["metrics"]["run_context_evictions"] == 3 == app.runs.evictions


async def test_readiness_metrics_need_the_token(tmp_path: Path) -> None:
    """The token rule is kept: without a valid token /readyz answers its status only."""
    from mcp_server.netpolicy import NetPolicy
    from mcp_server.transports.network import Door

    settings = make_settings(tmp_path, tmp_path, transport="http", token="health-token", max_runs=3)
    app = build_app_state(settings)
    evict(app, 4)
    monitor = ReadinessMonitor(app, interval_s=3600)
    await monitor.refresh()
    door = Door(NetPolicy(settings), monitor)
    bare = door.health("/readyz", {"host": "127.0.0.1"})
    assert bare is not None and bare.body == {"status": monitor.current.body["status"]}
    full = door.health("/readyz", {"host": "127.0.0.1", "authorization": "Bearer health-token"})
    assert full is not None and full.body["metrics"]["run_context_evictions"] == 1
