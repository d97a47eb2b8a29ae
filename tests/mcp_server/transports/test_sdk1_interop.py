"""Interoperability with the WebSocket client of the 1.x SDK (`mcp.client.websocket.websocket_client`).

The 1.x SDK cannot live beside the 2.x one, so it gets its own virtual environment, built once and
cached in `.venv-sdk1` at the top of the checkout (git-ignored; tests/sdk1_venv.py). Where no package registry is
reachable the test is skipped with the reason; under CI (`CI` set) that is a failure instead,
since CI has the registry.
"""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import anyio
import pytest

from mcp_server.transports.websocket import websocket_server
from tests import sdk1_venv
from tests.mcp_server.transports.conftest import ClosedConnections, make_app
from tests.setup_lock import wait_for_setup

pytestmark = [pytest.mark.anyio, pytest.mark.sdk1]

CLIENT_SCRIPT = textwrap.dedent(
    """
    import json, sys, warnings
    import anyio
    import mcp
    from mcp import ClientSession
    from mcp.client.websocket import websocket_client

    warnings.simplefilter("ignore", DeprecationWarning)

    async def main(url):
        async with websocket_client(url) as (read, write), ClientSession(read, write) as session:
            init = await session.initialize()
            tools = await session.list_tools()
            missing = await session.call_tool("get_run", {"run_id": "run_nope"})
            big = await session.call_tool("big", {"n": 300})
            run_id = big.structuredContent["run_id"]
            page = await session.call_tool("get_run", {"run_id": run_id, "section": "items", "limit": 3})
            print(json.dumps({
                "sdk": getattr(mcp, "__version__", None) or __import__("importlib.metadata").metadata.version("mcp"),
                "protocol": init.protocolVersion,
                "server": init.serverInfo.name,
                "tools": sorted(t.name for t in tools.tools),
                "missing_is_error": missing.isError,
                "missing_text": missing.content[0].text,
                "page": [item["i"] for item in page.structuredContent["items"]],
            }))

    anyio.run(main, sys.argv[1])
    """
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"1.x SDK interop must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def sdk1_python() -> Path:
    """The Python of a virtual environment with `mcp<2`, built once (under a lock) and reused
    (tests/sdk1_venv.py; scripts/setup builds it beside the main install)."""
    reason = wait_for_setup() or sdk1_venv.build()  # scripts/setup --background may be building it
    if reason:
        _unavailable(reason)
    return sdk1_venv.sdk1_python()


async def test_the_1x_sdk_websocket_client_talks_to_our_server(tmp_path: Path, sdk1_python: Path) -> None:
    script = tmp_path / "sdk1_client.py"
    script.write_text(CLIENT_SCRIPT)
    app = make_app(tmp_path, "websocket")
    closed = ClosedConnections(app)
    with anyio.fail_after(120):
        async with websocket_server(app) as endpoint:
            done = await anyio.run_process([str(sdk1_python), str(script), endpoint.url], check=False)
            assert done.returncode == 0, done.stderr.decode()[-3000:]
            await closed.wait_for(1)
            assert len(app.app.runs) == 0  # the 1.x client's connection closed: its run was purged
    report = json.loads(done.stdout.decode().strip().splitlines()[-1])
    assert report["sdk"].startswith("1.")
    assert report["server"] == "mcp-code-tools"
    assert {"get_run", "cancel_run", "big"} <= set(report["tools"])
    assert report["missing_is_error"] is True and "not found" in report["missing_text"]
    assert report["page"] == [0, 1, 2]
