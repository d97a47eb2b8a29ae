"""Progress to a slow client: the run never waits for it (newest update wins), the last one is sent."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from tests.tools.test_runner.conftest import write_project
from tests.tools.test_runner.test_pool import app_state
from tools.test_runner import reports
from tools.test_runner.progress import ProgressBuffer
from tools.test_runner.runner import RunRequest, TestRun

pytestmark = pytest.mark.anyio
PY = Path(sys.executable)


async def test_a_slow_consumer_gets_the_newest_and_the_producer_never_waits() -> None:
    got: list[int] = []
    release = anyio.Event()

    async def send(item: int) -> None:
        got.append(item)
        await release.wait()

    buffer: ProgressBuffer[int] = ProgressBuffer(send, capacity=4)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(buffer.pump)
            buffer.put(0)
            while got != [0]:
                await anyio.lowlevel.checkpoint()
            for i in range(1, 100):  # the consumer is stuck in send(0): none of these waits
                buffer.put(i)
            release.set()
            await buffer.drain()
    # In order; once full, the newest replaced the last queued update.
    assert got == [0, 1, 2, 3, 99] and buffer.coalesced == 95 and buffer.sent == 5


async def test_a_consumer_that_keeps_up_gets_every_update_and_drain_is_bounded() -> None:
    got: list[int] = []

    async def send(item: int) -> None:
        got.append(item)

    buffer: ProgressBuffer[int] = ProgressBuffer(send)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(buffer.pump)
            for i in range(10):
                buffer.put(i)
                await anyio.lowlevel.checkpoint()  # the consumer keeps up
            await buffer.drain()
    assert got == list(range(10)) and buffer.coalesced == 0

    # At the end, a backlog is cut to its newest few: the answer does not wait for it.
    late: list[int] = []

    async def record(item: int) -> None:
        late.append(item)

    behind: ProgressBuffer[int] = ProgressBuffer(record)
    for i in range(20):
        behind.put(i)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(behind.pump)  # it runs once drain() (which cuts the backlog at once) waits
            await behind.drain(keep=3)
    assert late == [17, 18, 19]

    stuck: ProgressBuffer[int] = ProgressBuffer(lambda item: anyio.Event().wait())
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(stuck.pump)
            stuck.put(1)
            await stuck.drain(timeout_s=0.05)  # gives up on a consumer that never returns
            tg.cancel_scope.cancel()


async def test_a_client_that_never_takes_progress_does_not_stall_the_run(tmp_path: Path) -> None:
    tests = "".join(f"def test_{i}():\n    pass\n\n" for i in range(20))
    root = write_project(tmp_path / "p", {"test_many.py": tests})
    stuck = anyio.Event()
    seen: list[reports.TestFinished] = []

    async def on_test(finished: reports.TestFinished) -> None:  # a client that stopped reading
        seen.append(finished)
        await stuck.wait()

    with anyio.fail_after(60):
        async with app_state(tmp_path) as app:
            run = TestRun(app, RunRequest(root, PY, [], "run", 60), tool="run_tests", connection="t", on_test=on_test)
            await run.execute()
    assert run.outcome()[0] == "passed" and run.state.counts["passed"] == 20
    assert len(seen) == 1  # stuck in the first update for ever; the run went on without it


async def test_at_the_end_a_slow_client_gets_only_the_last_update_a_fast_one_the_newest_few() -> None:
    """The answer waits for a slow client's last update, not for its backlog (its pace is measured)."""
    for per_send, expected in ((0.010, [19]), (0.0001, list(range(12, 20)))):
        now = [0.0]
        got: list[int] = []

        async def send(item: int, per_send: float = per_send, got: list[int] = got, now: list[float] = now) -> None:
            got.append(item)
            now[0] += per_send  # the client's turn-around, on the buffer's clock

        def clock(now: list[float] = now) -> float:
            return now[0]

        buffer: ProgressBuffer[int] = ProgressBuffer(send, clock=clock)
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(buffer.pump)
                buffer.put(-1)
                while got != [-1]:
                    await anyio.lowlevel.checkpoint()  # one update sent: the pace is known
                for i in range(20):  # a burst the client has not taken yet
                    buffer.put(i)
                await buffer.drain()
        assert got == [-1, *expected], per_send
