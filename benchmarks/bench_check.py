"""`check` (lint + tests at once) against its phases alone, in one server over stdio.

1. A project whose lint takes L and whose tests take T: `check(phases=[lint, tests])` should take
about max(L, T), not L + T. Target: wall <= max(L, T) + 15 %. Before every measurement the source
files get a new comment, so lint really runs ruff on them (no result-cache hits); the tests do
not import them. Interleaved triples (lint, tests, check in rotating order), medians; the
baseline is the median over the triples of max(L, T).

`check` starts the tests phase first and caps ruff's threads (cores - 1) while it runs: on 2 cores
ruff took both and the test worker waited. Measured 2026-12-02, round 3 (2 shared cores, load
5-11, everything 2x slower than idle): this row 1.35x / 1.25x with the code before, 1.01x / 1.18x
after; interleaved A/B runs of both codes (two servers, triples rotating, 20-30 each): before ->
after 1.20 -> 1.16, 1.27 -> 1.16, 1.12 -> 1.26. Better on most runs, not robustly under 1.15 at
this load: in `check` the tests phase's start (before its worker forks) waits 15-35 ms behind
lint's in-process work (listing, cache lookups) on the same event loop.

2. Memory: 1,000 `check` and `run_tests` calls (alternating) on a small project in one server;
its resident set (the server process, not its pytest zygotes) after the first 500 and after all.
Targets: below 256 MB, and less than 5 % growth over the last 500 calls.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, Options, Result
from benchmarks.jsonrpc_client import StdioJsonRpc, bench_env

SOURCE = '''# revision {rev}
import os
import sys


def handler_{i}(request, verbose=False):
    """Handle one request."""
    values = [v for v in request.get("values", []) if v is not None]
    if verbose:
        print(len(values), file=sys.stderr)
    total = 0
    for value in values:
        if isinstance(value, int):
            total += value
        elif isinstance(value, str) and value.isdigit():
            total += int(value)
    return {{"total": total, "cwd": os.getcwd()}}
'''

TESTS = """
import time

import pytest


@pytest.mark.parametrize("n", range(40))
def test_io_bound(n):
    time.sleep(0.002)  # the workload: tests that wait (I/O, subprocesses), as real suites do
    assert n >= 0
"""


def write_project(root: Path, modules: int) -> Path:
    (root / "src").mkdir(parents=True, exist_ok=True)
    (root / "tests").mkdir(exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\n")
    (root / "ruff.toml").write_text('[lint]\nselect = ["E", "F", "W", "B", "UP", "SIM"]\n')
    (root / "tests" / "test_work.py").write_text(TESTS)
    touch(root, modules, 0)
    return root


def touch(root: Path, modules: int, rev: int) -> None:
    for i in range(modules):
        (root / "src" / f"mod{i:03d}.py").write_text(SOURCE.format(i=i, rev=rev))


async def _timed(client: StdioJsonRpc, tool: str, args: dict[str, Any]) -> float:
    started = time.perf_counter()
    reply = await client.request("tools/call", {"name": tool, "arguments": args}, wait_s=300)
    elapsed = time.perf_counter() - started
    result = reply["result"]
    assert not result.get("isError"), result
    return elapsed


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


async def memory(opts: Options) -> list[Result]:
    root = opts.workdir / "check" / "small"
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "app.py").write_text("def add(a: int, b: int) -> int:\n    return a + b\n")
    (root / "tests" / "test_app.py").write_text(
        "from app import add\n\n\ndef test_add() -> None:\n    assert add(1, 2) == 3\n"
    )
    calls = opts.n(1000, 100)
    client = await StdioJsonRpc.spawn([PYTHON, "-m", "mcp_server"], cwd=root, env=bench_env(root))
    samples: list[float] = []
    try:
        await client.initialize()
        for i in range(calls):
            tool, args = ("check", {}) if i % 2 == 0 else ("run_tests", {})
            await _timed(client, tool, args)
            if i + 1 in (calls // 2, calls):
                samples.append(rss_mb(client.proc.pid))
    finally:
        await client.close()
    half, end = samples
    growth = (end - half) / half
    return [
        Result(
            f"server RSS after {calls} check/run_tests calls",
            end,
            unit="MB",
            target="< 256 MB",
            max_ms=256.0,
            extra={"rss_at_half_mb": half, "calls": calls},
        ),
        Result(
            f"server RSS growth over the last {calls // 2} calls",
            growth * 100.0,
            unit="%",
            target="< 5 %",
            max_ms=5.0,
            extra={"rss_at_half_mb": half, "rss_end_mb": end},
        ),
    ]


async def run(opts: Options) -> list[Result]:
    return [*await concurrency(opts), *await memory(opts)]


async def concurrency(opts: Options) -> list[Result]:
    modules = opts.n(1500, 600)
    root = write_project(opts.workdir / "check" / "proj", modules)
    client = await StdioJsonRpc.spawn([PYTHON, "-m", "mcp_server"], cwd=root, env=bench_env(root))
    n = opts.n(15, 3)
    lint_s: list[float] = []
    tests_s: list[float] = []
    check_s: list[float] = []
    rev = 0
    calls = {
        "lint": ("lint", {"paths": ["src"]}, lint_s),
        "tests": ("run_tests", {}, tests_s),
        "check": ("check", {"paths": ["src"], "phases": ["lint", "tests"]}, check_s),
    }
    try:
        await client.initialize()
        for _ in range(2):  # warm-up: the zygote, ruff's binary, pytest's bytecode cache
            for tool, args, _samples in calls.values():
                rev += 1
                touch(root, modules, rev)
                await _timed(client, tool, args)
        order = list(calls)
        for i in range(n):
            for name in order[i % 3 :] + order[: i % 3]:
                tool, args, samples = calls[name]
                rev += 1
                touch(root, modules, rev)
                samples.append(await _timed(client, tool, args))
    finally:
        await client.close()
    bound = statistics.median(max(lint, tests) for lint, tests in zip(lint_s, tests_s, strict=True))
    return [
        Result(
            f"check (lint {modules} files + 40 tests, concurrently)",
            statistics.median(check_s) * 1000.0,
            bound * 1000.0,
            baseline="max(lint alone, tests alone)",
            target="≤ 1.15×",
            max_ratio=1.15,
            extra={
                "n": n,
                "lint_ms": statistics.median(lint_s) * 1000.0,
                "tests_ms": statistics.median(tests_s) * 1000.0,
                "sum_ms": (statistics.median(lint_s) + statistics.median(tests_s)) * 1000.0,
            },
        )
    ]
