"""A run's affected-test records are written after its answer (`runner.RecordWrites`): in order
per root, awaited by the root's next run before it reads them, finished when the server stops,
and a failed write is said in the next run's warnings."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from tests.tools.test_runner.conftest import write_project
from tests.tools.test_runner.test_pool import app_state
from tools.test_runner import preimports
from tools.test_runner.runner import record_writes

pytestmark = pytest.mark.anyio


async def test_writes_run_in_order_and_the_next_run_waits_for_them(tmp_path: Path) -> None:
    folder = tmp_path / "root-cache"
    written: list[str] = []
    release = threading.Event()

    def slow() -> None:
        release.wait(30)
        written.append("first")

    def failing() -> None:
        written.append("second")
        raise OSError("disk full")

    with anyio.fail_after(30):
        async with app_state(tmp_path) as app:
            writes = await record_writes(app)
            await writes.submit(folder, slow)  # handed off: returns at once
            await writes.submit(folder, failing)
            assert written == []
            waiting = anyio.Event()
            notes: list[str | None] = []

            async def next_run() -> None:
                waiting.set()
                notes.append(await writes.settled(folder))

            async with anyio.create_task_group() as tg:
                tg.start_soon(next_run)
                await waiting.wait()
                assert notes == []  # the next run waits for both writes
                release.set()
            assert written == ["first", "second"]
            assert notes and "was not recorded: disk full" in str(notes[0])
            assert await writes.settled(folder) is None  # said once
            assert await writes.settled(tmp_path / "another") is None


async def test_a_write_handed_off_ends_before_the_server_has_stopped(tmp_path: Path) -> None:
    written: list[str] = []

    def write() -> None:
        written.append("done")

    with anyio.fail_after(30):
        async with app_state(tmp_path) as app:
            writes = await record_writes(app)
            await writes.submit(tmp_path / "root-cache", write)
            # the server stops at once (its task group cancelled, its services closed)
    assert written == ["done"]


async def test_learned_preimports_are_read_again_only_when_runs_import_something_new(
    memory_client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The zygote's pre-imports are checked against the database on its first run and after a
    run imported a module it does not have; runs that import nothing new skip that read."""
    reads: list[Path] = []
    wanted = preimports.wanted

    def counting(folder: Path, env: str) -> tuple[list[str], str | None]:
        reads.append(folder)
        return wanted(folder, env)

    monkeypatch.setattr(preimports, "wanted", counting)
    root = write_project(tmp_path / "proj", {"test_a.py": "import colorsys\n\n\ndef test_a():\n    assert colorsys\n"})
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            for _ in range(4):
                result = await client.call_tool("run_tests", {})
                assert (result.structured_content or {})["status"] == "passed"
    # 1st run: a fresh zygote; 2nd: the 1st imported colorsys (now learned); then nothing new
    assert len(reads) == 2
