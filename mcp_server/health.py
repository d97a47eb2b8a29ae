"""Liveness and readiness of a network server.

`/healthz` (liveness) is a constant answer: the event loop is serving. `/readyz` (readiness) serves the
result of the last probe, which a background task in the server's task group refreshes every
`readiness_interval_s`, so a probe storm costs nothing and a slow check never stalls a request.

Ready means: the ruff binary is found (every analysis tool needs it), the run queue is not full
(`max_queued_runs`: a new run would be refused as busy), and no service reports `ready: false`. The
body also carries the executor's slots, the `status()` of every started service (pools), and
`metrics`: runs in flight, queue depth, run contexts alive and evicted, redactions, per pool its
size, starts, restarts and evictions, per result cache its hits, misses and hit ratio. Those values
are `telemetry.read()`, the readings the OpenTelemetry instruments observe: the same source, never
a second count. (On a server that checks a token, the door shows them to token holders only.)
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc

from mcp_server.api import AppState
from mcp_server.telemetry import read

logger = logging.getLogger("mcp_server.health")

LIVENESS: dict[str, Any] = {"status": "ok"}


@dataclass(frozen=True)
class Readiness:
    ready: bool
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def status_code(self) -> int:
        return 200 if self.ready else 503


NOT_PROBED = Readiness(False, {"status": "not ready", "reasons": ["not probed yet"]})


def _find_ruff() -> str | None:
    try:
        from ruff import find_ruff_bin  # type: ignore[import-untyped]

        return str(find_ruff_bin())
    except (ImportError, FileNotFoundError, OSError):
        return None


async def _service_status(service: Any) -> dict[str, Any] | None:
    status = getattr(service, "status", None)
    if not callable(status):
        return None
    value = status()
    if inspect.isawaitable(value):
        value = await value
    return dict(value) if isinstance(value, dict) else {"status": repr(value)}


async def probe_readiness(app: AppState) -> Readiness:
    """Run every readiness check once. Never raises: a failing check is a reason, not an error."""
    reasons: list[str] = []
    ruff = await anyio.to_thread.run_sync(_find_ruff)
    if ruff is None:
        reasons.append("ruff binary not found")
    services: dict[str, Any] = {}
    for key, service in app.services.items():
        try:
            with anyio.fail_after(5):
                status = await _service_status(service)
        except Exception as exc:  # a broken status() is a reason, never a crash of the probe
            status = {"ready": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        if status is None:
            continue
        services[key] = status
        if status.get("ready") is False:
            reasons.append(f"service {key} not ready")
    readings = read(app, services)
    if readings.queue_depth >= readings.max_queued and readings.runs_in_flight >= readings.run_capacity:
        reasons.insert(
            0 if ruff is not None else 1, f"run queue full ({readings.queue_depth} waiting; setting max_queued_runs)"
        )
    body: dict[str, Any] = {
        "status": "ready" if not reasons else "not ready",
        "reasons": reasons,
        "checked_at": time.time(),
        "ruff": {"found": ruff is not None, "path": ruff},
        "executor": {
            "running": readings.runs_in_flight,
            "capacity": readings.run_capacity,
            "waiting": readings.queue_depth,
            "max_queued": readings.max_queued,
        },
        "services": services,
        "metrics": readings.as_dict(),
    }
    return Readiness(not reasons, body)


class ReadinessMonitor:
    """Caches the readiness probe; `start()` probes once, then refreshes in the background."""

    def __init__(self, app: AppState, interval_s: float) -> None:
        self.app = app
        self.interval_s = interval_s
        self.current: Readiness = NOT_PROBED

    async def refresh(self) -> Readiness:
        try:
            self.current = await probe_readiness(self.app)
        except Exception as exc:
            logger.exception("readiness probe failed")
            self.current = Readiness(False, {"status": "not ready", "reasons": [f"probe failed: {exc}"[:300]]})
        return self.current

    async def start(self, task_group: anyio.abc.TaskGroup) -> None:
        """Probe once now (so /readyz is meaningful from the first request), then every interval."""
        await self.refresh()
        task_group.start_soon(self._run)

    async def _run(self) -> None:
        while True:
            await anyio.sleep(self.interval_s)
            await self.refresh()
