"""check: the tests phase starts first, and ruff's threads are capped only while tests run beside it.

The cap is observed on the real ruff runs (a spy on the server's executor records each run's extra
environment, and the run still happens); the diagnostics are the same as a plain `lint`'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from mcp_server.server import CodeToolsServer
from mcp_server.transports.memory import memory_transport
from tests.conftest import make_settings
from tests.tools.test_runner.conftest import Signals
from tests.tools.workflow.test_check import BAD_SOURCE, by_name, call, project_with
from tools.workflow.check import PhaseRun, launch_order, ruff_env, ruff_threads_beside_tests, usable_cpus

pytestmark = pytest.mark.anyio

# The project's test reports that it runs, then waits (bounded) for the word to finish.
HELD_TEST = """
import pathlib, socket

def test_held():
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(60)
    sock.connect(pathlib.Path("signal_path.txt").read_text())
    sock.sendall(b"started")
    assert sock.recv(1) == b"g"
"""


class RuffRuns:
    """What the server's executor was asked to run: ruff's runs and their extra environment."""

    def __init__(self, app: Any) -> None:
        self.runs: list[Mapping[str, str] | None] = []
        self.linted = anyio.Event()
        executor = app.executor
        real = executor.run

        async def run(argv: list[str], **kw: Any) -> Any:
            result = await real(argv, **kw)
            if Path(argv[0]).name == "ruff":
                self.runs.append(kw.get("env_extra"))
                if "json-lines" in argv and "--stdin-filename" not in argv:
                    self.linted.set()  # a tree's `ruff check` finished
            return result

        executor.run = run


@asynccontextmanager
async def server(root: Path, tmp: Path) -> AsyncIterator[tuple[Client, RuffRuns]]:
    await anyio.Path(tmp).mkdir(parents=True, exist_ok=True)
    app = CodeToolsServer(make_settings(root, tmp))
    runs = RuffRuns(app.app)
    async with Client(memory_transport(app), mode="legacy") as client:
        yield client, runs


async def test_the_cap_and_the_launch_order() -> None:
    assert ruff_threads_beside_tests(1) is None
    assert ruff_threads_beside_tests(2) == 1
    assert ruff_threads_beside_tests(8) == 7
    assert ruff_env(True, 1) == {"RAYON_NUM_THREADS": "1"}
    assert ruff_env(False, 1) is None  # the tests finished (or none run): every core
    assert ruff_env(True, None) is None  # one core: nothing to leave
    phases = [PhaseRun(name) for name in ("lint", "format", "tests", "analyze")]
    assert [p.name for p in launch_order(phases)] == ["tests", "lint", "format", "analyze"]


async def test_ruff_is_capped_while_the_tests_run_and_finds_the_same(tmp_path: Path, signals: Signals) -> None:
    root = project_with(tmp_path / "proj", BAD_SOURCE, tests=HELD_TEST)
    signals.install(root)
    cap = ruff_threads_beside_tests(usable_cpus())
    expected = {"RAYON_NUM_THREADS": str(cap)} if cap is not None else None
    answers: list[dict[str, Any]] = []
    with anyio.fail_after(120):
        async with server(root, tmp_path / "a") as (client, runs):

            async def run_check() -> None:
                answers.append(await call(client, "check", {"phases": ["lint", "tests"]}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run_check)
                stream = await signals.wait()  # the test runs, and holds until told
                await runs.linted.wait()  # lint's ruff ran meanwhile
                await stream.send(b"g")
            (answer,) = answers
            assert by_name(answer)["tests"]["status"] == "passed"
            assert by_name(answer)["lint"]["status"] == "failed"
            assert runs.runs and all(extra == expected for extra in runs.runs), runs.runs
            section = await call(client, "get_run", {"run_id": answer["run_id"], "section": "phases/lint/diagnostics"})

        async with server(root, tmp_path / "b") as (client, runs):  # a new server: nothing cached
            plain = await call(client, "lint", {})
            assert runs.runs and all(extra is None for extra in runs.runs), runs.runs
    assert plain["diagnostics"] and section["items"] == plain["diagnostics"]


async def test_no_cap_without_a_tests_phase(tmp_path: Path) -> None:
    root = project_with(tmp_path / "proj", BAD_SOURCE)
    with anyio.fail_after(60):
        async with server(root, tmp_path) as (client, runs):
            answer = await call(client, "check", {"phases": ["lint", "format"]})
    assert {p["name"] for p in answer["phases"]} == {"lint", "format"}
    assert runs.runs and all(extra is None for extra in runs.runs), runs.runs
