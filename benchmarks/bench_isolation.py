"""One heavy call must not stall everyone: connection B's `ping` while connection A runs the heaviest lint.

A real `python -m mcp_server --transport websocket` process and two bare `websockets` clients. A
sends `lint {"source": "a;\\n" * N, "select": ["ALL"]}` with N as large as `max_source_bytes`
allows (1 MiB: ~1,047,000 diagnostics from ruff, over 400 MB of its JSON); meanwhile B pings every
10 ms. Rows: B's ping p99 and median while A's lint runs (target p99 <= 50 ms), against B's pings
on the idle server in the same run (the baseline).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from benchmarks.common import PYTHON, Options, Result, percentile_ms
from benchmarks.jsonrpc_client import bench_env
from benchmarks.ws_rtt import INITIALIZE, WAIT_S, _listening_url

MAX_SOURCE_BYTES = 1024 * 1024
HEAVY = "a;\n" * (MAX_SOURCE_BYTES // 3)
PING_EVERY_S = 0.01
LINT_WAIT_S = 300.0


async def _open(url: str) -> ClientConnection:
    ws = await connect(url, subprotocols=[Subprotocol("mcp")], compression=None, max_size=None)
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": INITIALIZE}))
    while json.loads(await asyncio.wait_for(ws.recv(), WAIT_S)).get("id") != 0:
        pass
    await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return ws


async def _ping(ws: ClientConnection, rid: int) -> float:
    started = time.perf_counter()
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "ping"}))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        if reply.get("id") == rid:
            return time.perf_counter() - started


async def _pings_until(ws: ClientConnection, done: asyncio.Event, start_id: int, limit: int) -> list[float]:
    samples: list[float] = []
    rid = start_id
    while not done.is_set() and len(samples) < limit:
        samples.append(await _ping(ws, rid))
        rid += 1
        await asyncio.sleep(PING_EVERY_S)
    return samples


async def _heavy_lint(ws: ClientConnection) -> dict[str, Any]:
    call = {"name": "lint", "arguments": {"source": HEAVY, "select": ["ALL"]}}
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": call}))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), LINT_WAIT_S))
        if reply.get("id") == 1:
            return dict(reply)


async def run(opts: Options) -> list[Result]:
    work = opts.workdir / "isolation"
    shutil.rmtree(work, ignore_errors=True)
    root = work / "root"
    root.mkdir(parents=True)
    env = bench_env(root, rate_limit_rps="1000000", rate_limit_burst="1000000", max_message_bytes="8388608")
    env["MCP_CODE_TOOLS_CACHE_DIR"] = str(work / "cache")
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "mcp_server",
        "--transport",
        "websocket",
        "--port",
        "0",
        cwd=root,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    rounds = opts.n(3, 1)
    busy: list[float] = []
    idle: list[float] = []
    lint_s: list[float] = []
    outcome: dict[str, Any] = {}
    try:
        url = await _listening_url(proc)
        heavy_ws, ping_ws = await _open(url), await _open(url)
        try:
            await _ping(ping_ws, 10)  # warm-up: the tools load on first use
            await _heavy_lint(heavy_ws)  # warm-up: ruff, the code-analysis state
            for r in range(rounds):
                never = asyncio.Event()
                idle += await _pings_until(ping_ws, never, 1000 + r * 100_000, opts.n(200, 50))
                done = asyncio.Event()
                started = time.perf_counter()
                lint_task = asyncio.create_task(_heavy_lint(heavy_ws))
                lint_task.add_done_callback(lambda _t, done=done: done.set())
                busy += await _pings_until(ping_ws, done, 50_000 + r * 100_000, 1_000_000)
                reply = await lint_task
                lint_s.append(time.perf_counter() - started)
                structured = (reply.get("result") or {}).get("structuredContent") or {}
                outcome = {
                    "is_error": (reply.get("result") or {}).get("isError"),
                    "total": structured.get("total"),
                    "truncated": structured.get("truncated"),
                    "diagnostics_cap": structured.get("diagnostics_cap"),
                    "error": reply.get("error"),
                }
        finally:
            await heavy_ws.close()
            await ping_ws.close()
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), WAIT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    extra = {
        "pings_busy": len(busy),
        "pings_idle": len(idle),
        "busy_median_ms": round(statistics.median(busy) * 1000, 2) if busy else None,
        "busy_max_ms": round(max(busy) * 1000, 2) if busy else None,
        "lint_median_s": round(statistics.median(lint_s), 2),
        "lint": outcome,
    }
    return [
        Result(
            name="ping p99 on B while A lints 1 MiB with ALL rules (WebSocket)",
            ours_ms=percentile_ms(busy, 99),
            baseline_ms=percentile_ms(idle, 99),
            baseline="ping p99 on the idle server",
            target="<= 50 ms",
            max_ms=50.0,
            extra=extra,
        )
    ]


def main() -> None:  # `python -m benchmarks.bench_isolation`: this row only
    results = asyncio.run(run(Options(workdir=Path(".bench"))))
    for result in results:
        print(json.dumps(result.as_dict(), indent=2))


if __name__ == "__main__":
    main()
