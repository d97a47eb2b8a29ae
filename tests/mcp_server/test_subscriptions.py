"""Subscriptions to runs: updates while a run progresses and when it ends, coalesced; both eras;
foreign/unknown runs are "not found"; a per-connection cap; subscriptions end with the connection."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.shared.exceptions import MCPError

from mcp_server.runs import RunContext, RunStore
from mcp_server.server import CodeToolsServer
from mcp_server.subscriptions import RunSubscriptions
from mcp_server.transports.memory import memory_transport
from tests.conftest import make_settings, network_settings, settings_env

pytestmark = [
    pytest.mark.anyio,
    # resources/subscribe is the handshake era's (deprecated by 2026-07-28, SEP-2575): it is what we test.
    pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning"),
]

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_project"
MODERN = "2026-07-28"

GATED_TEST = """
import pathlib, time

def test_waits_for_the_gate():
    print("started", flush=True)
    gate = pathlib.Path(__file__).parent / "gate"
    deadline = time.monotonic() + 60
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gate.exists()
"""


def gated_project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    shutil.copytree(SAMPLE, root)
    (root / "tests" / "test_gate.py").write_text(GATED_TEST)
    return root


class Updates:
    def __init__(self) -> None:
        self.uris: list[str] = []
        self.changed = anyio.Event()
        self.run: RunContext | None = None
        self.after_end = anyio.Event()
        """Set by an update that arrives once the watched run is over (the server's own state)."""

    async def __call__(self, message: Any) -> None:
        if isinstance(message, types.ResourceUpdatedNotification):
            self.uris.append(str(message.params.uri))
            if self.run is not None and not self.run.running:
                self.after_end.set()
            self.changed.set()
            self.changed = anyio.Event()

    async def next(self) -> None:
        await self.changed.wait()


@asynccontextmanager
async def open_client(
    transport: str, root: Path, tmp: Path, mode: str = "legacy", **client_kwargs: Any
) -> AsyncIterator[tuple[CodeToolsServer, Client]]:
    if transport == "memory":
        app = CodeToolsServer(make_settings(root, tmp))
        async with Client(memory_transport(app), mode=mode, **client_kwargs) as client:
            yield app, client
        return
    if transport == "websocket":
        from mcp_server.transports.websocket import websocket_server
        from mcp_server.transports.ws_client import websocket_client

        app = CodeToolsServer(make_settings(root, tmp, **network_settings("websocket", {})))
        async with (
            websocket_server(app) as endpoint,
            Client(websocket_client(endpoint.url), mode=mode, **client_kwargs) as client,
        ):
            yield app, client
        return
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from mcp_server.transports.http import http_server

    app = CodeToolsServer(make_settings(root, tmp, **network_settings("http", {})))
    async with (
        http_server(app) as endpoint,
        httpx2.AsyncClient(timeout=httpx2.Timeout(30.0, read=120.0)) as http,
        Client(streamable_http_client(endpoint.url, http_client=http), mode=mode, **client_kwargs) as client,
    ):
        yield app, client


async def start_gated_run(client: Client) -> str:
    result = await client.call_tool("run_tests", {"select": ["tests/test_gate.py"], "wait": False})
    assert result.structured_content is not None, result
    return str(result.structured_content["run_id"])


@pytest.mark.parametrize("transport", ["memory", "websocket", "http"])
async def test_updates_while_running_and_at_the_end(tmp_path: Path, transport: str) -> None:
    root = gated_project(tmp_path)
    updates = Updates()
    with anyio.fail_after(120):
        async with open_client(transport, root, tmp_path, message_handler=updates) as (app, client):
            assert client.server_capabilities.resources is not None
            assert client.server_capabilities.resources.subscribe is True
            run_id = await start_gated_run(client)
            updates.run = app.app.runs.get(_owner(app), run_id)
            await client.subscribe_resource(f"run://{run_id}/log")
            await updates.next()  # the run writes its log ("started"): an update while it runs
            assert updates.uris[0] == f"run://{run_id}/log"
            assert not updates.after_end.is_set()
            (root / "tests" / "gate").write_text("")
            await updates.after_end.wait()  # the end is always told
            assert set(updates.uris) == {f"run://{run_id}/log"}
            assert app.features.subscriptions.count(_key(app)) == 1
            await client.unsubscribe_resource(f"run://{run_id}/log")
            assert len(app.features.subscriptions) == 0


async def test_updates_over_stdio(tmp_path: Path) -> None:
    """Over stdio (the server a process of its own, so only what the client sees): updates while the
    run runs, and one once it has ended."""
    root = gated_project(tmp_path)
    updates = Updates()
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server"], env=settings_env(root, tmp_path), cwd=str(root)
    )
    with anyio.fail_after(120):
        async with Client(params, mode="legacy", message_handler=updates) as client:
            run_id = await start_gated_run(client)
            await client.subscribe_resource(f"run://{run_id}/log")
            while not updates.uris:  # the run writes its log ("started"): an update while it runs
                await updates.next()
            assert updates.uris[0] == f"run://{run_id}/log"
            (root / "tests" / "gate").write_text("")
            seen = 0
            while True:  # the end is always told: an update comes once the run is over
                while len(updates.uris) == seen:  # counted, so one arriving during get_run is not missed
                    await updates.next()
                seen = len(updates.uris)
                status = (await client.call_tool("get_run", {"run_id": run_id})).structured_content
                assert status is not None
                if status["status"] not in ("running", "queued"):
                    break
            assert set(updates.uris) == {f"run://{run_id}/log"}
            await client.unsubscribe_resource(f"run://{run_id}/log")


def _key(app: CodeToolsServer) -> str:
    return app.features.subscriptions.keys()[0]


def _owner(app: CodeToolsServer) -> str | None:
    owners = {r.owner for r in app.app.runs._runs.values()}
    assert len(owners) == 1
    return owners.pop()


async def test_foreign_and_unknown_runs_are_not_found(tmp_path: Path) -> None:
    root = gated_project(tmp_path)
    with anyio.fail_after(120):
        app = CodeToolsServer(make_settings(root, tmp_path))
        async with (
            Client(memory_transport(app), mode="legacy") as owner,
            Client(memory_transport(app), mode="legacy") as other,
        ):
            run_id = await start_gated_run(owner)
            for uri in (f"run://{run_id}", "run://run_nope", "file:///etc/passwd", f"run://{run_id}/secrets"):
                with pytest.raises(MCPError, match="not found") as caught:
                    await other.subscribe_resource(uri)
                assert caught.value.error.code == types.INVALID_PARAMS
            await owner.subscribe_resource(f"run://{run_id}")
            assert len(app.features.subscriptions) == 1
            (root / "tests" / "gate").write_text("")
        assert len(app.features.subscriptions) == 0  # ended with the connections
        assert app.features.subscriptions.watched_runs() == 0


async def test_subscriptions_end_with_the_connection(tmp_path: Path) -> None:
    root = gated_project(tmp_path)
    (root / "tests" / "gate").write_text("")
    with anyio.fail_after(120):
        app = CodeToolsServer(make_settings(root, tmp_path))
        async with app.running():
            async with Client(memory_transport(app), mode="legacy") as client:
                run_id = await start_gated_run(client)
                await client.subscribe_resource(f"run://{run_id}")
                run = app.app.runs.get(_key(app), run_id)
                assert len(run.watchers) == 1
            assert len(app.features.subscriptions) == 0
            assert run.watchers == []


@pytest.mark.parametrize("transport", ["memory", "websocket", "http"])
async def test_modern_era_listen_through_the_sdk(tmp_path: Path, transport: str) -> None:
    root = gated_project(tmp_path)
    with anyio.fail_after(120):
        async with open_client(transport, root, tmp_path, MODERN) as (app, client):
            run_id = await start_gated_run(client)
            uri = f"run://{run_id}"
            async with client.listen(resource_subscriptions=[uri]) as sub:
                assert len(app.features.subscriptions) == 1
                (root / "tests" / "gate").write_text("")
                async for event in sub:
                    assert getattr(event, "uri", None) == uri
                    break
            with pytest.raises(MCPError, match="not found"):
                async with client.listen(resource_subscriptions=["run://run_someone_elses"]):
                    pass


# --- the subscription state itself ----------------------------------------------------------------


async def test_cap_per_connection_and_coalescing() -> None:
    runs = RunStore(ttl_s=60, max_runs=100, max_bytes=10_000_000, max_log_bytes=10_000)
    subs = RunSubscriptions(runs, max_per_connection=2, interval_s=0.2)
    sent: list[str] = []
    got = anyio.Event()

    async def send(uri: str) -> None:
        sent.append(uri)
        got.set()

    a, b, c = (runs.create("me", "run_tests") for _ in range(3))
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            subs.task_group = tg
            subs.subscribe("conn", "me", [f"run://{a.run_id}", f"run://{b.run_id}/log"], send)
            with pytest.raises(MCPError, match="too many subscriptions: a connection may hold 2"):
                subs.subscribe("conn", "me", [f"run://{c.run_id}"], send)
            for n in range(500):
                a.log.write(f"line {n}\n")  # a chatty run
            await got.wait()
            assert sent == [f"run://{a.run_id}"]  # 500 writes, one update so far
            runs.purge_owner("me")  # dropped runs: a last update each, then their subscriptions end
            assert subs.count("conn") == 0
            subs.clear()
            tg.cancel_scope.cancel()


async def test_a_connection_past_its_cap_gets_a_clear_error(tmp_path: Path) -> None:
    root = gated_project(tmp_path)
    (root / "tests" / "gate").write_text("")
    with anyio.fail_after(120):
        app = CodeToolsServer(make_settings(root, tmp_path, max_subscriptions_per_connection=1))
        async with Client(memory_transport(app), mode="legacy") as client:
            first, second = await start_gated_run(client), await start_gated_run(client)
            await client.subscribe_resource(f"run://{first}")
            await client.subscribe_resource(f"run://{first}")  # the same one again: still one
            with pytest.raises(MCPError, match="too many subscriptions: a connection may hold 1") as caught:
                await client.subscribe_resource(f"run://{second}/log")
            assert caught.value.error.code == types.INVALID_PARAMS
            await client.unsubscribe_resource(f"run://{first}")
            await client.subscribe_resource(f"run://{second}/log")  # room again
