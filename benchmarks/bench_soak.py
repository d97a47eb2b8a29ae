"""Soak: clients come and go over every transport for `--minutes`, then everything is back to idle.

One server (in this process) serves WebSocket and Streamable HTTP at once, plus in-memory
connections; stdio clients each start their own server process. In a loop, over every transport
(memory, stdio, WebSocket, HTTP in the handshake era, HTTP in the 2026-07-28 era): connect, lint a
changed source, start a background run_tests, subscribe to it (resources/subscribe, or a
subscriptions/listen stream in the 2026-07-28 era), and drop the connection, every other time
without waiting for the run (abandoned: its connection's end cancels it).

At the end (after a bounded settle), these must be back to their idle levels (measured after a
warm-up): run contexts, subscriptions and watched runs, zygotes and ruff servers (pool sizes), open
file descriptors, threads, child processes; and RSS growth over the second half must be < 5 %.
Run contexts of sessionless (2026-07-28 era) HTTP clients have no connection to end with: they
expire after run_ttl_s, set to 10 s here.

    python -m benchmarks.bench_soak --minutes 1      # exit status 1 when a check fails
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPDeprecationWarning

from benchmarks.bench_load import SAMPLE, children_of
from benchmarks.common import PYTHON, Options, Result
from mcp_server.config import load_settings
from mcp_server.server import CodeToolsServer
from mcp_server.transports.http import http_server
from mcp_server.transports.memory import memory_transport
from mcp_server.transports.websocket import websocket_server
from mcp_server.transports.ws_client import websocket_client

MODERN = "2026-07-28"
TRANSPORTS = ("memory", "stdio", "websocket", "http", "http-modern")
RUN_TTL_S = 10
SETTLE_S = 20.0


PLUGIN_AUTOLOAD_OFF = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"
"""Set for the sample project's pytest (every zygote the soak starts, one per stdio server): this
venv's own plugins (hypothesis, pytest-cov, xdist, ...) are not the project's, and loading them cost
each zygote's warm-up about 0.4 s of CPU; what the soak checks (connections, runs, subscriptions and
processes coming and going) does not depend on them. The tests do the same (tests/conftest.py)."""


def soak_env(root: Path, tmp: Path) -> dict[str, str]:
    settings = {
        "roots": str(root),
        "audit_log": str(tmp / "audit.jsonl"),
        "cache_dir": str(tmp / "cache"),
        "allow_test_execution": "true",
        "run_ttl_s": str(RUN_TTL_S),
        "rate_limit_rps": "1000000",
        "rate_limit_burst": "1000000",
        "max_connections_per_client": "10000",
        "max_requests_per_client": "10000",
        "max_queued_runs": "10000",
        "http_session_idle_s": "30",
        "pass_env": PLUGIN_AUTOLOAD_OFF,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_CODE_TOOLS_")}
    env[PLUGIN_AUTOLOAD_OFF] = "1"
    env.update({f"MCP_CODE_TOOLS_{k.upper()}": v for k, v in settings.items()})
    env["XDG_CONFIG_HOME"] = str(tmp / "xdg")
    return env


def fd_targets() -> list[str]:
    out = []
    for fd in sorted(os.listdir("/proc/self/fd"), key=int):
        with suppress(OSError):
            out.append(f"{fd}:{os.readlink(f'/proc/self/fd/{fd}')}")
    return out


def _proc_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


@dataclass
class Levels:
    values: dict[str, int] = field(default_factory=dict)

    def above(self, idle: Levels, slack: dict[str, int]) -> dict[str, tuple[int, int]]:
        return {
            k: (idle.values.get(k, 0), v) for k, v in self.values.items() if v > idle.values.get(k, 0) + slack.get(k, 0)
        }


SLACK = {"open_fds": 4, "threads": 2}
"""Allowed above idle. Descriptors: SQLite defers closing a closed connection's descriptor while another
connection of the process holds the same file (the test history keeps one per root), a few at a time,
not growing with the number of runs (measured: +2..+3 after 14..20 cycles). Threads: a parked worker."""


def levels(app: CodeToolsServer) -> Levels:
    app.app.runs.sweep()  # the store sweeps lazily, on access: this is an access
    values = {
        "run_contexts": len(app.app.runs),
        "subscriptions": len(app.features.subscriptions),
        "watched_runs": app.features.subscriptions.watched_runs(),
        "open_fds": len(os.listdir("/proc/self/fd")),
        "threads": _proc_status("Threads"),
        "python_threads": threading.active_count(),
        "child_processes": len(children_of(os.getpid())),
    }
    for key, service in app.app.services.items():
        status = getattr(service, "status", None)
        if callable(status):
            try:
                value = status()
            except Exception:
                continue
            if isinstance(value, dict) and isinstance(value.get("size"), int):
                values[f"pool:{key}"] = int(value["size"])
    return Levels(values)


@dataclass
class Soak:
    app: CodeToolsServer
    root: Path
    tmp: Path
    ws_url: str
    http_url: str
    env: dict[str, str]
    cycles: int = 0
    errors: list[str] = field(default_factory=list)

    @asynccontextmanager
    async def client(self, transport: str) -> AsyncIterator[Client]:
        if transport == "memory":
            async with Client(memory_transport(self.app), mode="legacy") as client:
                yield client
        elif transport == "stdio":
            params = StdioServerParameters(command=PYTHON, args=["-m", "mcp_server"], env=self.env, cwd=str(self.root))
            async with Client(params, mode="legacy") as client:
                yield client
        elif transport == "websocket":
            async with Client(websocket_client(self.ws_url), mode="legacy") as client:
                yield client
        else:
            mode = MODERN if transport == "http-modern" else "legacy"
            async with (
                httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=120.0)) as http,
                Client(streamable_http_client(self.http_url, http_client=http), mode=mode) as client,
            ):
                yield client

    async def one(self, transport: str, abandon: bool) -> None:
        async with self.client(transport) as client:
            n = self.cycles
            source = f"import os\n\n\ndef f(x):\n    return x + {n}\n"
            await client.call_tool("lint", {"source": source, "filename": f"soak_{n}.py"})
            started = await client.call_tool("run_tests", {"wait": False})
            run_id = str((started.structured_content or {}).get("run_id"))
            uri = f"run://{run_id}"
            if transport == "http-modern":
                async with client.listen(resource_subscriptions=[uri]):
                    pass  # opened, acknowledged, dropped
            else:
                await client.subscribe_resource(uri)
            if not abandon:
                await client.call_tool("get_run", {"run_id": run_id})

    async def warm(self) -> None:
        """The pools started for sure: one lint and one run to its end in process. A cycle's runs are
        dropped with their connections, and under load every one of them can be cancelled before its
        zygote is ready: idle then counted no zygote and the end one (CI: 0 -> 1 zygote, 19 -> 24
        descriptors, reported as leaks)."""
        async with self.client("memory") as client:
            await client.call_tool("lint", {"source": "x = 1\n", "filename": "soak_warm.py"})
            await client.call_tool("run_tests", {})

    async def cycle(self) -> None:
        for transport in TRANSPORTS:
            try:
                with anyio.fail_after(120):
                    await self.one(transport, abandon=self.cycles % 2 == 0)
            except Exception as exc:  # counted, not fatal: the soak reports them
                self.errors.append(f"{transport}: {type(exc).__name__}: {str(exc)[:200]}")
        self.cycles += 1


async def soak(minutes: float, workdir: Path) -> dict[str, Any]:
    # resources/subscribe is the handshake era's (deprecated by 2026-07-28): the soak exercises it on purpose
    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)
    # the SDK client logs an update that arrives as it drops a connection: the soak drops them on purpose
    logging.getLogger("mcp.client.streamable_http").setLevel(logging.CRITICAL)
    tmp = Path(tempfile.mkdtemp(prefix="soak-", dir=workdir))
    root = tmp / "sample_project"
    shutil.copytree(SAMPLE, root)
    env = soak_env(root, tmp)
    os.environ[PLUGIN_AUTOLOAD_OFF] = "1"  # for the in-process server's project processes (pass_env)
    settings = load_settings({}, environ={**env, "MCP_CODE_TOOLS_HOST": "127.0.0.1", "MCP_CODE_TOOLS_PORT": "0"})
    app = CodeToolsServer(settings)
    rss: list[tuple[float, int]] = []
    async with app.running(), websocket_server(app, port=0) as ws, http_server(app, port=0) as http:
        run = Soak(app, root, tmp, ws.url, http.url, env)
        await run.cycle()  # warm-up
        await run.warm()
        idle = await settle(app, None)
        idle_fds = [t.split(":", 1)[1] for t in fd_targets()]
        started = time.monotonic()
        deadline = started + minutes * 60

        async def sample_rss() -> None:
            while True:
                rss.append((time.monotonic() - started, _proc_status("VmRSS")))
                await anyio.sleep(1.0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(sample_rss)
            while time.monotonic() < deadline:
                await run.cycle()
            tg.cancel_scope.cancel()
        end = await settle(app, idle)
        end_fds = [t.split(":", 1)[1] for t in fd_targets()]
    shutil.rmtree(tmp, ignore_errors=True)
    growth = rss_growth(rss)
    leaks = end.above(idle, SLACK)
    return {
        "minutes": minutes,
        "cycles": run.cycles,
        "connections": run.cycles * len(TRANSPORTS),
        "errors": run.errors,
        "idle": idle.values,
        "end": end.values,
        "leaks": {k: {"idle": a, "end": b} for k, (a, b) in leaks.items()},
        "rss_growth_second_half_pct": round(growth, 2),
        "rss_mb_end": round(rss[-1][1] / 1024, 1) if rss else None,
        "new_fds": sorted((Counter(end_fds) - Counter(idle_fds)).elements()),
    }


async def settle(app: CodeToolsServer, idle: Levels | None) -> Levels:
    """Levels once nothing more is going away (bounded): runs finished or expired, threads parked."""
    deadline = time.monotonic() + SETTLE_S
    current = levels(app)
    while time.monotonic() < deadline:
        await anyio.sleep(1.0)
        previous, current = current, levels(app)
        done = current.values == previous.values and (idle is None or not current.above(idle, SLACK))
        if done and (idle is not None or current.values.get("run_contexts", 0) == 0):
            break
    return current


def rss_growth(samples: list[tuple[float, int]]) -> float:
    """Growth over the second half, %: the last tenth's median against the middle tenth's."""
    if len(samples) < 10:
        return 0.0
    total = samples[-1][0]
    mid = [v for t, v in samples if 0.45 * total <= t <= 0.55 * total] or [samples[len(samples) // 2][1]]
    last = [v for t, v in samples if t >= 0.9 * total] or [samples[-1][1]]
    return (statistics.median(last) - statistics.median(mid)) / statistics.median(mid) * 100.0


def results_of(report: dict[str, Any]) -> list[Result]:
    label = f"soak {report['minutes']:g} min, {report['connections']} connections"
    return [
        Result(
            f"{label}: RSS growth over the 2nd half (%)",
            report["rss_growth_second_half_pct"],
            target="< 5 %",
            max_ms=5.0,
            unit="%",
            extra=report,
        ),
        Result(
            f"{label}: leaks + errors (count)",
            float(len(report["leaks"]) + len(report["errors"])),
            target="0",
            max_ms=0.0,
            unit="count",
            extra=report,
        ),
    ]


async def run(opts: Options) -> list[Result]:
    opts.workdir.mkdir(parents=True, exist_ok=True)
    return results_of(await soak(0.5 if opts.quick else 3.0, opts.workdir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=1.0)
    args = parser.parse_args()
    workdir = Options().workdir
    workdir.mkdir(parents=True, exist_ok=True)
    report = anyio.run(soak, args.minutes, workdir)
    print(json.dumps(report, indent=2))
    failed = [r.name for r in results_of(report) if r.ok is False]
    if failed:
        print("soak failed: " + "; ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
