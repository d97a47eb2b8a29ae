"""Test runner: `run_tests` through the server over stdio against cold `python -m pytest -q`.

Interleaved in one run (ours, cold, cold, ours, ...), medians:
- a 30-test suite: target <= 0.35 x cold;
- a 300-test suite: target <= 0.7 x cold;
- the server's overhead over the bare forked child: the round trip of `run_tests` minus the
  child's own run time as the worker reports it (`worker_s`: from just before its fork to just
  before its exit), per call; target <= 10 ms.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import PYTHON, Options, Result, interleave, median_ms, time_command
from benchmarks.jsonrpc_client import StdioJsonRpc, bench_env

MODULE = """
import json
import re
from dataclasses import dataclass

import pytest


@dataclass
class Point:
    x: int
    y: int


@pytest.fixture
def point():
    return Point(1, 2)


def test_point(point):
    assert point.x + point.y == 3


def test_json_roundtrip():
    assert json.loads(json.dumps({{"a": [1, 2]}})) == {{"a": [1, 2]}}


@pytest.mark.parametrize("n", range({params}))
def test_param(n):
    assert re.fullmatch(r"\\d+", str(n))


class TestGroup:
    def test_one(self):
        assert "abc".upper() == "ABC"

    def test_two(self, point):
        assert point == Point(1, 2)
"""


def write_suite(root: Path, tests: int, files: int) -> Path:
    """`tests` tests in `files` modules (each: 4 plain tests and the rest parametrized)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    per_file = tests // files
    for i in range(files):
        (root / f"test_mod{i:02d}.py").write_text(MODULE.format(params=per_file - 4))
    return root


async def _call(client: StdioJsonRpc, root: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    reply = await client.call_tool("run_tests", {"root": root})
    elapsed = time.perf_counter() - started
    result = reply["result"]
    assert not result.get("isError"), result
    return elapsed, result["structuredContent"]


async def run(opts: Options) -> list[Result]:
    base = opts.workdir / "tests"
    suites = {
        "tests30": (write_suite(base / "tests30", 30, 3), 30, opts.n(20, 5)),
        "tests300": (write_suite(base / "tests300", 300, 10), 300, opts.n(10, 3)),
    }
    env = bench_env(base)
    cold_env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    client = await StdioJsonRpc.spawn([PYTHON, "-m", "mcp_server"], cwd=base, env=env)
    results: list[Result] = []
    overheads: list[float] = []
    try:
        await client.initialize()
        for name, (root, count, n) in suites.items():
            for _ in range(3):  # warm-up: the zygote, pytest's bytecode cache of the tests
                _, warm = await _call(client, name)
                assert warm["status"] == "passed" and warm["counts"]["passed"] == count, warm
                time_command([PYTHON, "-m", "pytest", "-q"], cwd=root, env=cold_env)

            async def ours(name: str = name) -> float:
                elapsed, result = await _call(client, name)
                overheads.append(elapsed - float(result["worker_s"]))
                return elapsed

            async def cold(root: Path = root) -> float:
                return time_command([PYTHON, "-m", "pytest", "-q"], cwd=root, env=cold_env)

            a, b = await interleave(n, ours, cold)
            target = 0.35 if count == 30 else 0.7
            results.append(
                Result(
                    f"run_tests, {count}-test suite (stdio, warm pool)",
                    median_ms(a),
                    median_ms(b),
                    baseline="cold python -m pytest -q",
                    target=f"≤ {target}×",
                    max_ratio=target,
                    extra={"n": n},
                )
            )
    finally:
        await client.close()
    results.append(
        Result(
            "run_tests overhead over the bare forked child",
            statistics.median(overheads) * 1000.0,
            target="≤ 10 ms",
            max_ms=10.0,
            extra={"n": len(overheads)},
        )
    )
    return results
