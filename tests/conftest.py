"""Shared fixtures. `mcp_client` opens the SDK's `Client` to a server on every transport."""

from __future__ import annotations

import functools
import os
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from mcp_server.config import Settings, env_name, load_settings
from mcp_server.server import CodeToolsServer
from mcp_server.transports.memory import memory_transport

pytest_plugins = ["tests.leakcheck", "tests.redis_server"]

ALL_TRANSPORTS = ["memory", "stdio", "websocket", "http"]
"""Every transport `OPENERS` below can open."""

TRANSPORTS = [t for t in os.environ.get("MCP_CODE_TOOLS_TEST_TRANSPORTS", "memory,http").split(",") if t]
"""The transports behaviour tests run over: in memory, plus one network transport (a real socket, the SDK's
own HTTP client). Transport conformance (framing, stdio processes, WebSocket, sessions) is tested in
tests/mcp_server/transports/ and the fuzz tests; `MCP_CODE_TOOLS_TEST_TRANSPORTS=memory,stdio,websocket,http`
runs the behaviour tests over all four."""
assert set(TRANSPORTS) <= set(ALL_TRANSPORTS), f"unknown transport in MCP_CODE_TOOLS_TEST_TRANSPORTS: {TRANSPORTS}"

ClientFactory = Callable[..., AbstractAsyncContextManager[Client]]

PLUGIN_AUTOLOAD_OFF = "PYTEST_DISABLE_PLUGIN_AUTOLOAD"
"""Set for the sample projects' pytest (the zygotes the tests' servers start, their runs): this venv's
own plugins (hypothesis, pytest-cov, xdist, timeout, anyio) are not the projects' and cost every zygote
about 0.4 s of CPU in its warm-up session. The tests that are about plugins say so (`plugins=True`)."""


def pytest_configure(config: pytest.Config) -> None:
    # Only where tests run (an xdist worker, or a run without workers): this process loaded its own
    # plugins already; the controller's workers must still load theirs.
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        os.environ[PLUGIN_AUTOLOAD_OFF] = "1"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def settings_env(root: Path, tmp: Path, **overrides: Any) -> dict[str, str]:
    """Environment for a server subprocess: the test's root, a private audit log, and overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_CODE_TOOLS_")}
    env[env_name("roots")] = str(root)
    env[env_name("audit_log")] = str(tmp / "audit.jsonl")
    env[env_name("cache_dir")] = str(tmp / "server-cache")
    env["XDG_CONFIG_HOME"] = str(tmp / "xdg-config")  # the operator's user config: none, unless a test writes one
    if PLUGIN_AUTOLOAD_OFF in os.environ:  # passed on to the projects' processes (see above)
        names = overrides.get("pass_env", [])
        names = names.split(",") if isinstance(names, str) else list(names)
        overrides = {**overrides, "pass_env": [*names, PLUGIN_AUTOLOAD_OFF]}
    for key, value in overrides.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        env[env_name(key)] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


def make_settings(root: Path, tmp: Path, **overrides: Any) -> Settings:
    return load_settings({}, environ=settings_env(root, tmp, **overrides))


@asynccontextmanager
async def open_memory(root: Path, tmp: Path, mode: str = "legacy", **overrides: Any) -> AsyncIterator[Client]:
    app = CodeToolsServer(make_settings(root, tmp, **overrides))
    async with Client(memory_transport(app), mode=mode) as client:
        yield client


@asynccontextmanager
async def open_stdio(root: Path, tmp: Path, mode: str = "legacy", **overrides: Any) -> AsyncIterator[Client]:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server"], env=settings_env(root, tmp, **overrides), cwd=str(root)
    )
    async with Client(params, mode=mode) as client:
        yield client


def network_settings(transport: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """A network server for a behaviour test: a free loopback port, and the tools' policy of stdio
    (network transports forbid running project code by default; tests of that policy say so)."""
    return {"allow_test_execution": True, **overrides, "transport": transport, "host": "127.0.0.1", "port": 0}


def bearer(overrides: dict[str, Any]) -> dict[str, str]:
    token = overrides.get("token")
    return {"Authorization": f"Bearer {token}"} if token else {}


@asynccontextmanager
async def open_websocket(root: Path, tmp: Path, mode: str = "legacy", **overrides: Any) -> AsyncIterator[Client]:
    """A WebSocket server in this event loop on a real socket, and the 2.x Client through our adapter."""
    from mcp_server.transports.websocket import websocket_server
    from mcp_server.transports.ws_client import websocket_client

    app = CodeToolsServer(make_settings(root, tmp, **network_settings("websocket", overrides)))
    async with (
        websocket_server(app) as endpoint,
        Client(websocket_client(endpoint.url, headers=bearer(overrides)), mode=mode) as client,
    ):
        yield client


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One client TLS context for every test's HTTP client (never used on plain http://): a new
    client loads the CA bundle into a context of its own, 38 ms of CPU each (~300 clients a run)."""
    return ssl.create_default_context()


@asynccontextmanager
async def open_http(root: Path, tmp: Path, mode: str = "legacy", **overrides: Any) -> AsyncIterator[Client]:
    """A Streamable HTTP server in this event loop on a real socket, and the SDK's own HTTP client."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    from mcp_server.transports.http import http_server

    app = CodeToolsServer(make_settings(root, tmp, **network_settings("http", overrides)))
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with (
        http_server(app) as endpoint,
        httpx2.AsyncClient(headers=bearer(overrides), timeout=timeout, verify=tls_context()) as http,
        Client(streamable_http_client(endpoint.url, http_client=http), mode=mode) as client,
    ):
        yield client


OPENERS: dict[str, Callable[..., AbstractAsyncContextManager[Client]]] = {
    "memory": open_memory,
    "stdio": open_stdio,
    "websocket": open_websocket,
    "http": open_http,
}


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def mcp_client(transport: str, tmp_path: Path) -> ClientFactory:
    """`async with mcp_client(root, mode="legacy", **settings) as client:` over the parametrized transport."""

    def factory(
        root: Path | None = None, mode: str = "legacy", **overrides: Any
    ) -> AbstractAsyncContextManager[Client]:
        return OPENERS[transport](root or tmp_path, tmp_path, mode, **overrides)

    return factory
