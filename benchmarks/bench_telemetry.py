"""Telemetry's cost on the stdio round trip: on (SDK, batching processor, in-memory sinks) against
off, both servers up at once, calls alternating one by one (load drift falls on both alike).

Off, the request path is the one of a server without telemetry: our middleware is not installed,
the SDK's span middleware runs against the API's no-op tracer (as it always did), and no SDK
module is imported (tests/mcp_server/test_telemetry.py checks that). Target: on <= 1.15x off.
"""

from __future__ import annotations

import time

from benchmarks.common import PYTHON, ROOT, Options, Result, median_ms, percentile_ms
from benchmarks.jsonrpc_client import StdioJsonRpc, bench_env

OFF = [PYTHON, "-m", "mcp_server"]
ON = [PYTHON, str(ROOT / "benchmarks" / "telemetry_server.py")]


async def _timed_call(client: StdioJsonRpc) -> float:
    started = time.perf_counter()
    reply = await client.call_tool("get_run", {"run_id": "run_x"})
    elapsed = time.perf_counter() - started
    assert reply["result"]["isError"], reply
    return elapsed


async def run(opts: Options) -> list[Result]:
    root = opts.workdir / "telemetry"
    root.mkdir(parents=True, exist_ok=True)
    calls = opts.n(1000, 100)
    env = bench_env(root)
    on = await StdioJsonRpc.spawn(ON, cwd=root, env={**env, "PYTHONPATH": str(ROOT)})
    try:
        off = await StdioJsonRpc.spawn(OFF, cwd=root, env=env)
        try:
            await on.initialize()
            await off.initialize()
            for _ in range(50):  # warm-up
                await _timed_call(on)
                await _timed_call(off)
            a: list[float] = []
            b: list[float] = []
            for i in range(calls):
                first, second = (on, off) if i % 2 == 0 else (off, on)
                t1, t2 = await _timed_call(first), await _timed_call(second)
                a.append(t1 if first is on else t2)
                b.append(t2 if first is on else t1)
        finally:
            await off.close()
    finally:
        await on.close()
    return [
        Result(
            "tools/call round trip, stdio, telemetry on (in-memory sinks)",
            median_ms(a),
            median_ms(b),
            baseline="telemetry off",
            target="≤ 1.15×",
            max_ratio=1.15,
            extra={"p95_ms": percentile_ms(a, 95), "baseline_p95_ms": percentile_ms(b, 95), "n": calls},
        )
    ]
