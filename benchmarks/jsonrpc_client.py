"""A minimal JSON-RPC client over a subprocess's stdio: newline-delimited JSON, no SDK parsing.

Used by the benchmarks so that client-side overhead does not hide the server's.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any


class StdioJsonRpc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self._next = 0

    @classmethod
    async def spawn(
        cls, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> StdioJsonRpc:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            limit=64 * 1024 * 1024,
        )
        return cls(proc)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        await self.proc.stdin.drain()

    async def request(self, method: str, params: dict[str, Any] | None = None, wait_s: float = 60) -> dict[str, Any]:
        """Send a request and return its response, skipping notifications."""
        self._next += 1
        rid = self._next
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), wait_s)
            if not line:
                raise EOFError("server closed stdout")
            reply = json.loads(line)
            if reply.get("id") == rid:
                return reply  # type: ignore[no-any-return]

    async def initialize(self) -> dict[str, Any]:
        reply = await self.request(
            "initialize",
            {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "bench", "version": "0"},
            },
        )
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return reply

    async def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return await self.request("tools/call", {"name": name, "arguments": arguments})

    async def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


def bench_env(root: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_CODE_TOOLS_")}
    env["MCP_CODE_TOOLS_ROOTS"] = str(root)
    env["MCP_CODE_TOOLS_AUDIT_LOG"] = str(root.parent / "bench-audit.jsonl")
    env.update({f"MCP_CODE_TOOLS_{k.upper()}": v for k, v in settings.items()})
    return env
