"""The run queue's busy rule lives in the queue: a `run_tests(wait=false)` call takes its place when
it is accepted, so two calls in the same instant cannot both pass a check made before either one
has queued."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from mcp_server.api import Busy, RunContext, ToolContext
from tests.tools.test_runner.conftest import HANG, Signals, write_project
from tests.tools.test_runner.test_pool import app_state
from tools.test_runner.args import RunTestsArgs
from tools.test_runner.tool import run_tests

pytestmark = pytest.mark.anyio


async def test_background_runs_past_the_queue_limit_are_refused_when_called(tmp_path: Path, signals: Signals) -> None:
    write_project(tmp_path, {"test_hang.py": HANG + "\ndef test_hangs():\n    _hang()\n"})
    signals.install(tmp_path)
    with anyio.fail_after(60):
        async with app_state(tmp_path, max_concurrent_runs=1, max_queued_runs=1) as app:
            ctx = ToolContext(app=app, tool="run_tests", owner=None, connection_id="c")
            first = await run_tests(ctx, RunTestsArgs(wait=False))
            await signals.wait()  # it holds the only slot
            accepted: list[RunContext] = []
            refused: list[str] = []

            async def call() -> None:
                try:
                    output = await run_tests(ctx, RunTestsArgs(wait=False))
                except Busy as exc:
                    refused.append(str(exc))
                else:
                    assert output.run is not None
                    accepted.append(output.run)

            async with anyio.create_task_group() as tg:  # two calls at the same instant
                tg.start_soon(call)
                tg.start_soon(call)
            assert len(accepted) == 1 and len(refused) == 1, (accepted, refused)
            assert "max_queued_runs" in refused[0]
            assert app.executor.slots.waiting == 1
            for run in (first.run, accepted[0]):
                assert run is not None and run.cancel_scope is not None
                run.cancel_scope.cancel()
                await run.finished.wait()
            assert accepted[0].result is not None and accepted[0].result["status"] == "cancelled"
            assert app.executor.slots.waiting == 0 and app.executor.slots.running == 0
