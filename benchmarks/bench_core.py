"""Server core: cold start and trivial-call round trip, against a minimal SDK server in the same run.

Cold starts run from compiled bytecode on both sides, as an installed package does (pip writes
it at install): a bytecode cache of the run's own (`PYTHONPYCACHEPREFIX` in the work folder),
filled by one start of each server before measuring. Without it, `PYTHONDONTWRITEBYTECODE` (set
on this machine) made every module of ours edited since its .pyc was written compile from source
at each start: a cost of the checkout, on our side only, that grew with each edit (measured
interleaved on 2026-12-02, load ~7: 1.38x the minimal server that way, 1.07x from bytecode).
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.common import PYTHON, ROOT, Options, Result, interleave, median_ms, percentile_ms
from benchmarks.jsonrpc_client import StdioJsonRpc, bench_env

OURS = [PYTHON, "-m", "mcp_server"]
BASELINE = [PYTHON, str(ROOT / "benchmarks" / "minimal_server.py")]


def _from_bytecode(root: Path, cache: Path) -> dict[str, str]:
    """The environment of a start from compiled bytecode (kept in `cache`, written on first use)."""
    env = bench_env(root)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


async def _cold_start(argv: list[str], root: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    client = await StdioJsonRpc.spawn(argv, cwd=root, env=env)
    try:
        reply = await client.initialize()
        elapsed = time.perf_counter() - started
        assert "result" in reply, reply
    finally:
        await client.close()
    return elapsed


async def _timed_call(client: StdioJsonRpc) -> float:
    started = time.perf_counter()
    reply = await client.call_tool("get_run", {"run_id": "run_x"})
    elapsed = time.perf_counter() - started
    assert reply["result"]["isError"], reply
    return elapsed


async def _paired_round_trips(root: Path, n: int) -> tuple[list[float], list[float]]:
    """Both servers up at once, calls alternating one by one: drift in the machine's load falls
    on both sides alike."""
    ours = await StdioJsonRpc.spawn(OURS, cwd=root, env=bench_env(root))
    try:
        base = await StdioJsonRpc.spawn(BASELINE, cwd=root, env=bench_env(root))
        try:
            await ours.initialize()
            await base.initialize()
            for _ in range(20):  # warm-up
                await _timed_call(ours)
                await _timed_call(base)
            a: list[float] = []
            b: list[float] = []
            for i in range(n):
                first, second = (ours, base) if i % 2 == 0 else (base, ours)
                t1, t2 = await _timed_call(first), await _timed_call(second)
                a.append(t1 if first is ours else t2)
                b.append(t2 if first is ours else t1)
            return a, b
        finally:
            await base.close()
    finally:
        await ours.close()


async def _ws_round_trips(root: Path, n: int) -> list[float] | None:
    try:
        from benchmarks.ws_rtt import ws_round_trips
    except ImportError:
        return None
    return await ws_round_trips(root, n)


async def run(opts: Options) -> list[Result]:
    root = opts.workdir / "core"
    root.mkdir(parents=True, exist_ok=True)
    n = opts.n(40, 4)  # start-up times are noisy here: 40 interleaved pairs for a steady median
    env = _from_bytecode(root, opts.workdir / "pycache")

    async def ours() -> float:
        return await _cold_start(OURS, root, env)

    async def base() -> float:
        return await _cold_start(BASELINE, root, env)

    await ours()  # each writes its bytecode, once
    await base()
    a, b = await interleave(n, ours, base)
    results = [
        Result(
            "cold start (spawn → initialize result)",
            median_ms(a),
            median_ms(b),
            baseline="minimal SDK server",
            target="≤ 1.10×",
            max_ratio=1.10,
        )
    ]
    calls = opts.n(500, 100)
    ours_rt, base_rt = await _paired_round_trips(root, calls)
    results.append(
        Result(
            "tools/call round trip, stdio",
            median_ms(ours_rt),
            median_ms(base_rt),
            baseline="minimal SDK server",
            target="≤ 1.2×",
            max_ratio=1.2,
            extra={"p95_ms": percentile_ms(ours_rt, 95), "baseline_p95_ms": percentile_ms(base_rt, 95), "n": calls},
        )
    )
    ws = await _ws_round_trips(root, calls)
    if ws:
        results.append(
            Result(
                f"tools/call round trip, WebSocket (p95 {percentile_ms(ws, 95):.2f} ms)",
                median_ms(ws),
                target="reported",
                extra={"p95_ms": percentile_ms(ws, 95), "n": calls},
            )
        )
    return results
