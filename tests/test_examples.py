"""The example clients against a real token-protected server: a refusal prints the server's message, not a
traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_server.server import CodeToolsServer
from tests.conftest import make_settings, network_settings

pytestmark = pytest.mark.anyio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def http_endpoint(app: CodeToolsServer) -> AbstractAsyncContextManager[Any]:
    from mcp_server.transports.http import http_server

    return http_server(app)


def websocket_endpoint(app: CodeToolsServer) -> AbstractAsyncContextManager[Any]:
    from mcp_server.transports.websocket import websocket_server

    return websocket_server(app)


SERVERS: dict[str, tuple[str, Callable[[CodeToolsServer], AbstractAsyncContextManager[Any]]]] = {
    "http": ("http_client.py", http_endpoint),
    "websocket": ("websocket_client.py", websocket_endpoint),
}


async def run_example(script: str, url: str, token: str | None) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_CODE_TOOLS_")}
    if token is not None:
        env["MCP_CODE_TOOLS_TOKEN"] = token
    env["PYTHONPATH"] = str(EXAMPLES.parent)
    with anyio.fail_after(60):
        done = await anyio.run_process([sys.executable, str(EXAMPLES / script), url], env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.mark.parametrize("transport", ["http", "websocket"])
@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_a_refused_example_client_shows_the_servers_401_message(
    tmp_path: Path, transport: str, token: str | None
) -> None:
    script, endpoint_of = SERVERS[transport]
    app = CodeToolsServer(make_settings(tmp_path, tmp_path, **network_settings(transport, {"token": "s3cret"})))
    async with endpoint_of(app) as endpoint:
        code, out, err = await run_example(script, endpoint.url, token)
    assert code == 1
    assert out == ""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1
    assert "HTTP 401" in lines[0] and "unauthorized" in lines[0] and "MCP_CODE_TOOLS_TOKEN" in lines[0]


@pytest.mark.parametrize("transport", ["http", "websocket"])
async def test_an_example_client_with_the_token_lints(tmp_path: Path, transport: str) -> None:
    script, endpoint_of = SERVERS[transport]
    app = CodeToolsServer(make_settings(tmp_path, tmp_path, **network_settings(transport, {"token": "s3cret"})))
    async with endpoint_of(app) as endpoint:
        code, out, err = await run_example(script, endpoint.url, "s3cret")
    assert code == 0, err
    assert "lint" in out and "F401" in out
