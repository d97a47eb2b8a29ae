"""tools/call round trip over WebSocket: `python -m mcp_server --transport websocket` as a real process,
driven by a bare `websockets` client (no SDK parsing on the client side, like the stdio benchmark)."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from benchmarks.common import PYTHON
from benchmarks.jsonrpc_client import bench_env

WAIT_S = 60.0
INITIALIZE = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}


async def _listening_url(proc: asyncio.subprocess.Process) -> str:
    assert proc.stderr is not None
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), WAIT_S)
        if not line:
            raise RuntimeError("the WebSocket server exited before listening")
        found = re.search(r"listening on (\S+)", line.decode("utf-8", "replace"))
        if found:
            return found.group(1)


async def _request(ws: ClientConnection, rid: int, method: str, params: dict[str, Any]) -> dict[str, Any]:
    await ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
    while True:
        reply = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        if reply.get("id") == rid and "method" not in reply:
            return dict(reply)


async def ws_round_trips(root: Path, n: int) -> list[float]:
    env = bench_env(root, rate_limit_rps="1000000", rate_limit_burst="1000000")  # measure the wire, not the limit
    proc = await asyncio.create_subprocess_exec(
        PYTHON,
        "-m",
        "mcp_server",
        "--transport",
        "websocket",
        "--port",
        "0",
        cwd=root,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    samples: list[float] = []
    try:
        url = await _listening_url(proc)
        async with connect(url, subprotocols=[Subprotocol("mcp")], compression=None, max_size=None) as ws:
            assert "result" in await _request(ws, 0, "initialize", INITIALIZE)
            await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            call = {"name": "get_run", "arguments": {"run_id": "run_x"}}
            for rid in range(1, 21):  # warm-up
                await _request(ws, rid, "tools/call", call)
            for rid in range(100, 100 + n):
                started = time.perf_counter()
                reply = await _request(ws, rid, "tools/call", call)
                samples.append(time.perf_counter() - started)
                assert "result" in reply and reply["result"]["isError"], reply
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), WAIT_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    return samples
