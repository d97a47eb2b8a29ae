"""A slow client must not slow a test run: `run_tests` progress goes through a bounded buffer.

In-process (the server's runtime without a transport), a 200-test suite on a warm zygote, one
run at a time, interleaved: a client that takes 10 ms per progress notification against one that
takes none. Before the buffer the parser awaited each notification, so the slow client's run
took about 200 x 10 ms longer; target <= 1.5x.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio

from benchmarks.common import Options, Result, interleave, median_ms, server_env
from mcp_server.config import load_settings
from mcp_server.server import build_app_state
from tools.test_runner.reports import TestFinished
from tools.test_runner.runner import RunRequest, TestRun

TESTS = 200
CLIENT_DELAY_S = 0.01


def write_suite(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    body = "import pytest\n\n@pytest.mark.parametrize('n', range(%d))\ndef test_n(n):\n    assert n >= 0\n"
    (root / "test_many.py").write_text(body % TESTS)


async def run(opts: Options) -> list[Result]:
    root = opts.workdir / "progress"
    write_suite(root)
    environ = server_env(
        roots=str(root), audit_log=str(opts.workdir / "progress-audit.jsonl"), cache_dir=str(opts.workdir / "cache")
    )
    app = build_app_state(load_settings({}, environ=environ))
    request = RunRequest(root, Path(sys.executable), [], "run", 120)
    sent: list[int] = []

    async def one(delay: float) -> float:
        async def on_test(finished: TestFinished) -> None:
            sent.append(finished.done)
            if delay:
                await anyio.sleep(delay)  # the client's turn-around for one notification

        started = time.perf_counter()
        test_run = TestRun(app, request, tool="run_tests", connection="bench", on_test=on_test)
        await test_run.execute()
        elapsed = time.perf_counter() - started
        assert test_run.state.counts["passed"] == TESTS
        return elapsed

    async with anyio.create_task_group() as tg:
        app.task_group = tg
        try:
            await one(0.0)  # warm: the zygote starts
            slow, fast = await interleave(opts.n(7, 3), lambda: one(CLIENT_DELAY_S), lambda: one(0.0))
        finally:
            with anyio.CancelScope(shield=True):
                await app.services.aclose()
                await app.executor.aclose()
            tg.cancel_scope.cancel()
    return [
        Result(
            name=f"run_tests, {TESTS} tests, client 10 ms per progress notification",
            ours_ms=median_ms(slow),
            baseline_ms=median_ms(fast),
            baseline="a client that takes none",
            target="<= 1.5x",
            max_ratio=1.5,
        )
    ]
