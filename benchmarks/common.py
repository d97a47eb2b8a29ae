"""Shared pieces of the benchmark runner.

A benchmark module is `benchmarks/bench_<name>.py` with `async def run(opts: Options) -> list[Result]`.
Each `Result` is one line of the table: our figure, the baseline's figure measured in the same
run (interleaved: ours, baseline, ours, baseline ...), their ratio, and the target it is checked
against. Never assert durations in tests; assert them here, as ratios.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass
class Options:
    quick: bool = False
    """Fewer iterations (for a smoke run in CI)."""
    workdir: Path = field(default_factory=lambda: ROOT / ".bench")

    def n(self, full: int, quick: int) -> int:
        return quick if self.quick else full


@dataclass
class Result:
    name: str
    ours_ms: float
    baseline_ms: float | None = None
    baseline: str = ""
    target: str = ""
    """e.g. `<= 0.6x` (ratio) or `<= 10 ms` (absolute, for overheads measured in one run)."""
    max_ratio: float | None = None
    max_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    unit: str = "ms"
    """What `ours_ms`/`max_ms` count when a row is not a duration (e.g. `MB`, `%`, `errors`)."""

    @property
    def ratio(self) -> float | None:
        if self.baseline_ms is None or self.baseline_ms == 0:
            return None
        return self.ours_ms / self.baseline_ms

    @property
    def ok(self) -> bool | None:
        if self.max_ratio is not None and self.ratio is not None:
            return self.ratio <= self.max_ratio
        if self.max_ms is not None:
            return self.ours_ms <= self.max_ms
        return None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        d["ok"] = self.ok
        return d


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000.0


def percentile_ms(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    k = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[k] * 1000.0


async def interleave(
    n: int, ours: Callable[[], Awaitable[float]], baseline: Callable[[], Awaitable[float]]
) -> tuple[list[float], list[float]]:
    """Alternate ours and baseline `n` times each; each callable returns seconds for one sample."""
    a: list[float] = []
    b: list[float] = []
    for i in range(n):
        if i % 2 == 0:
            a.append(await ours())
            b.append(await baseline())
        else:
            b.append(await baseline())
            a.append(await ours())
    return a, b


def time_command(argv: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> float:
    """Seconds for one run of a command to completion (output discarded)."""
    started = time.perf_counter()
    subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - started


def server_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_CODE_TOOLS_")}
    env.update({f"MCP_CODE_TOOLS_{k.upper()}": v for k, v in settings.items()})
    return env


def write_json(path: Path, results: list[Result]) -> None:
    path.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
