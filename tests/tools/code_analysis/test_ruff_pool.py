"""The pool of warm ruff servers, in-process: restart after death, fallback in flight, bounds, TTL, shutdown."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from mcp.client import Client

from mcp_server.server import CodeToolsServer
from mcp_server.transports.memory import memory_transport
from tests.conftest import make_settings
from tests.tools.code_analysis.conftest import MOD, call
from tools.code_analysis.ruff_pool import RuffServerPool
from tools.code_analysis.ruff_server import RuffServer

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def served(root: Path, tmp: Path, **overrides: Any) -> AsyncIterator[tuple[CodeToolsServer, Client]]:
    app = CodeToolsServer(make_settings(root, tmp, **overrides))
    async with Client(memory_transport(app)) as client:
        yield app, client


def pool_of(app: CodeToolsServer) -> RuffServerPool:
    pool = app.app.services.peek(RuffServerPool.service_key)
    assert isinstance(pool, RuffServerPool)
    return pool


def only_server(pool: RuffServerPool) -> RuffServer:
    servers = pool.workers()
    assert len(servers) == 1
    assert servers[0].pid is not None
    return servers[0]


def thread_states(pid: int) -> list[str]:
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            states.append(Path(f"/proc/{pid}/task/{task}/stat").read_text().rsplit(")", 1)[1].split()[0])
    return states


async def stopped(pid: int) -> None:
    """Wait until every thread of `pid` has stopped: SIGSTOP takes effect per thread, and a busy
    one may still answer a request sent meanwhile (the test failed ~1 run in 7 without this)."""
    while not all(state in "Tt" for state in thread_states(pid)):
        await anyio.lowlevel.checkpoint()


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_a_dead_server_is_replaced_on_the_next_call(project: Path, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with served(project, tmp_path) as (app, client):
            await call(client, "lint", {"paths": ["pkg/mod.py"]})
            pool = pool_of(app)
            dead = only_server(pool)
            assert dead.pid is not None
            os.kill(dead.pid, signal.SIGKILL)
            await dead.stopped.wait()
            result = await call(client, "lint", {"source": MOD, "filename": "pkg/other.py"})
            assert result["engine"] == "ruff server" and result["total"] == 6
            fresh = only_server(pool)
            assert fresh is not dead and fresh.pid != dead.pid
            assert pool.status()["restarts"] + pool.status()["started"] >= 2


async def test_a_call_in_flight_when_the_server_dies_is_answered_by_the_cli(project: Path, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with served(project, tmp_path) as (app, client):
            await call(client, "lint", {"paths": ["pkg/mod.py"]})
            server = only_server(pool_of(app))
            assert server.pid is not None
            os.kill(server.pid, signal.SIGSTOP)  # it takes the request and never answers
            await stopped(server.pid)
            answer: dict[str, Any] = {}

            async def lint_changed_text() -> None:
                answer.update(await call(client, "lint", {"source": MOD, "filename": "pkg/inflight.py"}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(lint_changed_text)
                await anyio.wait_all_tasks_blocked()  # the request is with the stopped server
                assert server.requests == 2
                os.kill(server.pid, signal.SIGKILL)
            assert answer["engine"] == "ruff check", repr((answer["engine"], server.status(), pool_of(app).status()))
            assert [d["code"] for d in answer["diagnostics"]] == ["I001", "F401", "F401", "E702", "E501", "E711"]
            assert pool_of(app).status()["fallbacks"] == 1
            # The next call gets a new server.
            again = await call(client, "lint", {"source": MOD + "\n", "filename": "pkg/inflight.py"})
            assert again["engine"] == "ruff server"


async def test_the_pool_is_bounded_and_least_recently_used_goes_first(project: Path, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with served(project, tmp_path, ruff_pool_size=2) as (app, client):
            for select in (["E"], ["F"], ["I"]):  # one server per rule selection
                await call(client, "lint", {"paths": ["pkg/mod.py"], "select": select})
            pool = pool_of(app)
            status = pool.status()
            assert status["size"] == 2 and status["max_size"] == 2
            assert [s["select"] for s in status["servers"]] == [["F"], ["I"]]
            assert status["started"] == 3
            json.dumps(status)  # readiness probes serve it as JSON


async def test_idle_servers_are_shut_down_after_the_ttl(project: Path, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with served(project, tmp_path, ruff_idle_ttl_s=0.3) as (app, client):
            await call(client, "lint", {"paths": ["pkg/mod.py"]})
            pool = pool_of(app)
            server = only_server(pool)
            await server.stopped.wait()
            assert pool.workers() == []
            assert server.pid is not None and not process_exists(server.pid)
            # The next call starts one again.
            result = await call(client, "lint", {"source": "import os\n", "filename": "pkg/x.py"})
            assert result["engine"] == "ruff server"


async def test_a_config_change_restarts_the_server(project: Path, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with served(project, tmp_path) as (app, client):
            await call(client, "lint", {"paths": ["pkg/mod.py"]})
            pool = pool_of(app)
            old = only_server(pool)
            pyproject = project / "pyproject.toml"
            pyproject.write_text(pyproject.read_text().replace('select = ["E", "F", "I"]', 'select = ["F"]'))
            result = await call(client, "lint", {"paths": ["pkg/mod.py"]})
            assert result["counts"] == {"F401": 2}
            new = only_server(pool)
            assert new is not old and pool.status()["restarts"] == 1
            await old.stopped.wait()


async def test_servers_end_with_the_server(project: Path, tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with served(project, tmp_path) as (app, client):
            await call(client, "lint", {"paths": ["pkg/mod.py"]})
            await call(client, "lint", {"paths": ["pkg/mod.py"], "select": ["F"]})
            servers = pool_of(app).workers()
            pids = [s.pid for s in servers]
        assert all(s.stopped.is_set() for s in servers)
        assert pids and not any(pid is not None and process_exists(pid) for pid in pids)
        assert app.app.executor.live == set()
