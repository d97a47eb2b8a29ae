"""Redaction's cost against the wall time of the test run whose output it redacts.

The workload: a real pytest run (`-s`, 200 tests printing log lines, JSON payloads, tracebacks,
about 1 line in 12 holding a trigger word such as `token` or `password` but no secret) whose
output is read from a pipe in 64 KiB chunks, as the server reads it. Its wall time per MB is
the baseline. Two rows, ms per MB of output, interleaved samples, medians:

1. `StreamRedactor` over every byte (what redacting the whole stream costs: the old design, and
   the cost per MB of any output that is shown whole).
2. The server's run log (`RunLog`, default `max_log_bytes` 4 MiB): it redacts its head as it
   streams and its tail when read, never the middle it drops. Measured at two output sizes past
   the cap (the run's output written N and 2N times); its cost is a fixed part plus a per-MB
   part (appending raw text), so the 500 MB figure is `fixed + 500 * per_MB`, compared with
   `500 * pytest ms/MB`. Target: under 5 % of the run.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import Options, Result
from mcp_server.redact import Redactor
from mcp_server.runs import RunLog

TESTS = """
import json

import pytest


@pytest.mark.parametrize("n", range(200))
def test_prints(n):
    for i in range({lines}):
        k = n * 100000 + i
        if i % 12 == 0:
            print(f"DEBUG auth: token refresh scheduled for user {{k}}, password policy ok")
        elif i % 12 == 1:
            print(json.dumps({{"id": k, "name": f"item-{{k}}", "tags": ["a", "b"], "price": 12.5}}))
        elif i % 12 == 2:
            print(f'  File "/src/pkg/module_{{k % 7}}.py", line {{k % 300}}, in handle_request')
        else:
            print(f"2026-12-02 10:00:{{k % 60:02d}} INFO app.handler id={{k}} path=/api/items/{{k}} took={{k % 97}}ms")
"""

CHUNK = 64 * 1024
LOG_BYTES = 4 * 1024 * 1024
"""The default `max_log_bytes`."""
PROJECTION_MB = 500


def write_project(root: Path, lines: int) -> Path:
    (root / "tests").mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\ntestpaths = tests\naddopts = -s -q -p no:cacheprovider\n")
    (root / "tests" / "test_prints.py").write_text(TESTS.format(lines=lines))
    return root


def run_pytest(root: Path) -> tuple[float, list[str]]:
    """Seconds for the run, and its output as the server receives it (decoded 64 KiB chunks)."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pytest"], cwd=root, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    chunks: list[bytes] = []
    while data := os.read(fd, CHUNK):
        chunks.append(data)
    proc.wait()
    elapsed = time.perf_counter() - started
    return elapsed, [c.decode("utf-8", "replace") for c in chunks]


def time_stream(redactor: Redactor, chunks: list[str]) -> float:
    stream = redactor.stream()
    started = time.perf_counter()
    for chunk in chunks:
        stream.feed(chunk)
    stream.flush()
    return time.perf_counter() - started


def time_log(redactor: Redactor, chunks: list[str], repeat: int) -> float:
    log = RunLog(LOG_BYTES, redactor)
    started = time.perf_counter()
    for _ in range(repeat):
        for chunk in chunks:
            log.write(chunk)
    log.text()
    return time.perf_counter() - started


async def run(opts: Options) -> list[Result]:
    root = write_project(opts.workdir / "redact-project", opts.n(800, 200))
    redactor = Redactor([])
    n = opts.n(5, 2)
    run_s: list[float] = []
    stream_s: list[float] = []
    log_1: list[float] = []
    log_2: list[float] = []
    chunks: list[str] = []
    r1 = 1
    for i in range(n):
        elapsed, chunks = run_pytest(root)
        if i == 0:  # both log sizes well past the cap, where the log no longer redacts as it goes
            mb_once = sum(len(c.encode("utf-8")) for c in chunks) / 1e6
            r1 = max(1, math.ceil(1.5 * LOG_BYTES / 1e6 / mb_once))
        run_s.append(elapsed)
        stream_s.append(time_stream(redactor, chunks))
        log_1.append(time_log(redactor, chunks, r1))
        log_2.append(time_log(redactor, chunks, 2 * r1))
    mb = sum(len(c.encode("utf-8")) for c in chunks) / 1e6
    run_per_mb = statistics.median(run_s) * 1000 / mb
    stream_per_mb = statistics.median(stream_s) * 1000 / mb
    one, two = statistics.median(log_1) * 1000, statistics.median(log_2) * 1000
    log_per_mb = max(0.0, (two - one) / (r1 * mb))
    log_fixed = max(0.0, one - log_per_mb * r1 * mb)
    log_500 = log_fixed + PROJECTION_MB * log_per_mb
    run_500 = PROJECTION_MB * run_per_mb
    extra = {"output_mb": round(mb, 1), "pytest_ms_per_mb": round(run_per_mb, 1)}
    return [
        Result(
            name="redact: StreamRedactor, every byte (ms per MB)",
            ours_ms=stream_per_mb,
            baseline_ms=run_per_mb,
            baseline="pytest -s producing that MB",
            target="informational (the whole-stream cost)",
            extra={**extra, "mb_per_s": round(1000 / stream_per_mb, 1)},
        ),
        Result(
            name=f"redact: run log of a {PROJECTION_MB} MB-output test run (projected)",
            ours_ms=log_500,
            baseline_ms=run_500,
            baseline=f"pytest producing {PROJECTION_MB} MB (ms/MB * {PROJECTION_MB})",
            target="<= 0.05x",
            max_ratio=0.05,
            extra={
                **extra,
                "log_fixed_ms": round(log_fixed, 1),
                "log_ms_per_mb": round(log_per_mb, 2),
                "log_sizes_mb": [round(r1 * mb, 1), round(2 * r1 * mb, 1)],
            },
        ),
    ]
