"""`python -m mcp_server` as a real process on each transport: clean exit, no orphans, clean stdout.

Each test makes the server start a child (a warm ruff server, through `lint`), then stops the
server the way its users do (EOF on stdin, SIGTERM, SIGINT) and checks that it exits 0, that the
children it had are gone, and that stdout carried nothing but protocol. (The leak check plugin
also fails any test that leaves a descendant behind.)
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx2
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from mcp.client import Client

from mcp_server.transports.ws_client import websocket_client
from tests.conftest import settings_env
from tests.mcp_server.transports.conftest import INITIALIZE

pytestmark = pytest.mark.anyio

LINT_SOURCE = "import os\n"
MAX_LINE = 4 * 1024 * 1024


def children_of(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text()
        found |= {int(p) for p in text.split()}
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@asynccontextmanager
async def server_process(root: Path, *args: str, **settings: Any) -> AsyncIterator[anyio.abc.Process]:
    command = [sys.executable, "-m", "mcp_server", *args]
    env = settings_env(root, root, **settings)
    proc = await anyio.open_process(
        command, env=env, cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        with anyio.move_on_after(10, shield=True):
            await proc.wait()
        await proc.aclose()


class StdioPeer:
    """A hand-driven stdio client that keeps every stdout line it reads."""

    def __init__(self, proc: anyio.abc.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self.stdin = proc.stdin
        self.stdout = BufferedByteReceiveStream(proc.stdout)
        self.lines: list[str] = []

    async def send(self, message: dict[str, Any]) -> None:
        await self.stdin.send((json.dumps(message) + "\n").encode())

    async def answer(self, request_id: int) -> dict[str, Any]:
        while True:
            line = (await self.stdout.receive_until(b"\n", MAX_LINE)).decode()
            self.lines.append(line)
            message = json.loads(line)
            if message.get("id") == request_id and "method" not in message:
                return dict(message)

    async def rest(self) -> None:
        """Read stdout to EOF."""
        tail = b""
        try:
            while True:
                tail += await self.stdout.receive()
        except (anyio.EndOfStream, anyio.IncompleteRead):
            pass
        self.lines += [line for line in tail.decode().splitlines() if line]

    async def start_a_child(self) -> set[int]:
        await self.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE})
        assert "result" in await self.answer(1)
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        call = {"name": "lint", "arguments": {"source": LINT_SOURCE, "select": ["F401"]}}
        await self.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
        result = (await self.answer(2))["result"]
        assert not result.get("isError"), result
        children = children_of(self.proc.pid)
        assert children, "lint should have started a warm ruff server"
        return children


async def read_all(stream: anyio.abc.ByteReceiveStream) -> bytes:
    data = b""
    try:
        while True:
            data += await stream.receive()
    except (anyio.EndOfStream, anyio.ClosedResourceError):
        return data


def assert_only_protocol(lines: list[str]) -> None:
    assert lines
    for line in lines:
        message = json.loads(line)
        assert isinstance(message, dict) and message.get("jsonrpc") == "2.0", line


async def test_stdio_exits_cleanly_on_eof(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with server_process(tmp_path) as proc:
            peer = StdioPeer(proc)
            children = await peer.start_a_child()
            await proc.stdin.aclose()  # type: ignore[union-attr]
            await peer.rest()
            assert await proc.wait() == 0
            assert not [pid for pid in children if alive(pid)]
            assert_only_protocol(peer.lines)


async def test_stdio_answers_every_request_read_before_eof(tmp_path: Path) -> None:
    """A client that pipes its requests and closes stdin at once still gets every answer (within
    `stdio_eof_grace_s`, raised here so that a slow first lint on a loaded machine still fits)."""
    with anyio.fail_after(60):
        async with server_process(tmp_path, stdio_eof_grace_s=30) as proc:
            peer = StdioPeer(proc)
            await peer.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE})
            await peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            for request_id in range(2, 7):
                call = {"name": "lint", "arguments": {"source": LINT_SOURCE * request_id, "select": ["F401"]}}
                await peer.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": call})
            await proc.stdin.aclose()  # type: ignore[union-attr]
            await peer.rest()
            assert await proc.wait() == 0
            assert_only_protocol(peer.lines)
            answers = {message["id"]: message for message in map(json.loads, peer.lines) if "id" in message}
            assert sorted(answers) == [1, 2, 3, 4, 5, 6]
            assert all(not answers[i]["result"].get("isError") for i in range(2, 7))


async def test_stdio_answers_every_bad_line_in_order_and_goes_on(tmp_path: Path) -> None:
    """What the SDK's stdio reader would drop gets a JSON-RPC error, under the request's id when it
    has one; a blank line is skipped; the session goes on."""
    bad = [
        b"{not json",
        b"[1, 2]",
        b"42",
        b"",
        b'{"jsonrpc": "2.0", "id": 7, "method": 5}',
        b'{"jsonrpc": "1.0", "id": 8, "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": "x"}',
        b'{"id": 10, "method": "ping"}',
        b'{"jsonrpc": "2.0", "id": "\\udc80", "method": "ping"}',  # a lone surrogate: no answer can carry it
    ]
    with anyio.fail_after(60):
        async with server_process(tmp_path) as proc:
            peer = StdioPeer(proc)
            await peer.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE})
            await peer.answer(1)
            await peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            await peer.stdin.send(b"\n".join(bad) + b"\n")
            await peer.send({"jsonrpc": "2.0", "id": 11, "method": "ping"})
            assert (await peer.answer(11))["result"] == {}
            answers = [json.loads(line) for line in peer.lines[1:]]
            assert [(a["id"], a["error"]["code"]) for a in answers[:-1]] == [
                (None, -32700),
                (None, -32600),
                (None, -32600),
                (7, -32600),
                (8, -32600),
                (9, -32600),
                (10, -32600),
                (None, -32600),
            ]
            await proc.stdin.aclose()  # type: ignore[union-attr]
            await peer.rest()
            assert await proc.wait() == 0
            assert_only_protocol(peer.lines)


HANGING_TEST = """
import os, pathlib, socket, time

def test_hangs():
    pathlib.Path(f"pid-{os.getpid()}.txt").write_text("")
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(pathlib.Path("signal_path.txt").read_text())
    time.sleep(600)
"""


@asynccontextmanager
async def hanging_project(tmp_path: Path) -> AsyncIterator[tuple[Path, anyio.abc.SocketListener]]:
    """A project whose one test hangs after connecting to the yielded listener."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_hang.py").write_text(HANGING_TEST)
    directory = Path(tempfile.mkdtemp(prefix="sig-"))  # short: Unix socket paths are limited
    (root / "signal_path.txt").write_text(str(directory / "s"))
    listener = await anyio.create_unix_listener(directory / "s")
    try:
        yield root, listener
    finally:
        await listener.aclose()
        shutil.rmtree(directory, ignore_errors=True)


def hung_test_pids(root: Path) -> list[int]:
    return [int(path.stem.split("-")[1]) for path in root.glob("pid-*.txt")]


async def test_stdio_exits_at_eof_after_the_client_cancelled_a_request(tmp_path: Path) -> None:
    """Issue 11 item 6: a request the client cancelled is never answered (the protocol forbids it);
    end of input must not wait for its answer. (A long grace, so only that rule can end the wait.)"""
    async with hanging_project(tmp_path) as (root, started):
        with anyio.fail_after(120):  # a cold zygote on a loaded machine
            async with server_process(root, stdio_eof_grace_s=60) as proc:
                peer = StdioPeer(proc)
                await peer.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE})
                await peer.answer(1)
                await peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                call = {"name": "run_tests", "arguments": {}}
                await peer.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
                async with await started.accept():
                    cancel = {"requestId": 2, "reason": "user gave up"}
                    await peer.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": cancel})
                    await peer.send({"jsonrpc": "2.0", "id": 3, "method": "ping"})
                    await peer.answer(3)
                    await proc.stdin.aclose()  # type: ignore[union-attr]
                    with anyio.fail_after(15):  # far below the grace: the cancelled request is settled
                        await peer.rest()
                        assert await proc.wait() == 0
                assert_only_protocol(peer.lines)
                assert 2 not in [json.loads(line).get("id") for line in peer.lines]
                assert [pid for pid in hung_test_pids(root) if alive(pid)] == []


async def test_stdio_exits_at_eof_with_runs_in_progress_cancelled_and_reaped(tmp_path: Path) -> None:
    """Issue 11 item 6: a background run and a waiting run are cancelled at end of input (the waiting
    request still gets an answer), their processes reaped, and the server exits."""
    async with hanging_project(tmp_path) as (root, started):
        with anyio.fail_after(120):  # a cold zygote on a loaded machine
            async with server_process(root, max_concurrent_runs=2) as proc:
                peer = StdioPeer(proc)
                await peer.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE})
                await peer.answer(1)
                await peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
                background = {"name": "run_tests", "arguments": {"wait": False}}
                await peer.send({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": background})
                assert not (await peer.answer(2))["result"].get("isError")
                async with await started.accept():
                    waiting = {"name": "run_tests", "arguments": {}}
                    await peer.send({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": waiting})
                    async with await started.accept():
                        assert len(hung_test_pids(root)) == 2
                        await proc.stdin.aclose()  # type: ignore[union-attr]
                        with anyio.fail_after(15):  # the default grace is well under a second
                            await peer.rest()
                            assert await proc.wait() == 0
                assert_only_protocol(peer.lines)
                assert 3 in [json.loads(line).get("id") for line in peer.lines]
                assert [pid for pid in hung_test_pids(root) if alive(pid)] == []


async def test_stdio_answers_an_oversized_line_with_an_error_and_goes_on(tmp_path: Path) -> None:
    """Issue 11 item 4: a line over max_message_bytes is discarded (read in bounded chunks, never
    buffered whole) and answered with a JSON-RPC error; the next line is served."""
    with anyio.fail_after(60):
        async with server_process(tmp_path, max_message_bytes=4096) as proc:
            peer = StdioPeer(proc)
            await peer.send({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE})
            await peer.answer(1)
            await peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            await peer.send({"jsonrpc": "2.0", "id": 2, "method": "ping", "params": {"x": "y" * 3_000_000}})
            await peer.send({"jsonrpc": "2.0", "id": 3, "method": "ping", "params": {"x": "y" * 3000}})
            assert (await peer.answer(3))["result"] == {}
            errors = [json.loads(line) for line in peer.lines[1:-1]]
            assert len(errors) == 1 and errors[0]["id"] is None
            assert errors[0]["error"]["code"] == -32600 and "max_message_bytes" in errors[0]["error"]["message"]
            await proc.stdin.aclose()  # type: ignore[union-attr]
            await peer.rest()
            assert await proc.wait() == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_stdio_exits_cleanly_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    with anyio.fail_after(60):
        async with server_process(tmp_path) as proc:
            peer = StdioPeer(proc)
            children = await peer.start_a_child()
            proc.send_signal(signum)
            await peer.rest()
            assert await proc.wait() == 0
            assert not [pid for pid in children if alive(pid)]
            assert_only_protocol(peer.lines)
            assert proc.stderr is not None
            assert b"Traceback" not in await read_all(proc.stderr)


async def listening_url(proc: anyio.abc.Process) -> str:
    """The URL from the server's `listening on ...` line on stderr."""
    assert proc.stderr is not None
    stderr = BufferedByteReceiveStream(proc.stderr)
    while True:
        line = (await stderr.receive_until(b"\n", 65536)).decode()
        found = re.search(r"listening on (\S+)", line)
        if found:
            return found.group(1)


async def lint_over(client: Client) -> None:
    result = await client.call_tool("lint", {"source": LINT_SOURCE, "select": ["F401"]})
    assert not result.is_error, result.content


@pytest.mark.parametrize(("transport", "signum"), [("websocket", signal.SIGTERM), ("http", signal.SIGINT)])
async def test_network_servers_serve_then_exit_cleanly_on_a_signal(
    tmp_path: Path, transport: str, signum: signal.Signals
) -> None:
    with anyio.fail_after(60):
        async with server_process(tmp_path, "--transport", transport, "--port", "0") as proc:
            url = await listening_url(proc)
            base = url.rsplit("/mcp", 1)[0].replace("ws://", "http://")
            async with httpx2.AsyncClient(timeout=30) as http:
                assert (await http.get(base + "/healthz")).json() == {"status": "ok"}
            opened = Client(websocket_client(url)) if transport == "websocket" else Client(url)
            async with opened as client:
                await lint_over(client)
                children = children_of(proc.pid)
                assert children
                proc.send_signal(signum)
                assert await proc.wait() == 0
            assert not [pid for pid in children if alive(pid)]
            assert proc.stdout is not None
            assert await read_all(proc.stdout) == b""  # nothing on stdout but protocol, and there is none


def test_the_network_servers_refuse_to_start_beyond_loopback_without_a_token(tmp_path: Path) -> None:
    for transport in ("websocket", "http"):
        env = settings_env(tmp_path, tmp_path)
        done = subprocess.run(
            [sys.executable, "-m", "mcp_server", "--transport", transport, "--host", "0.0.0.0"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 2 and done.stdout == ""
        assert "MCP_CODE_TOOLS_TOKEN" in done.stderr and len(done.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("transport", ["websocket", "http"])
def test_a_port_in_use_is_one_line_naming_host_and_port_and_exit_2(tmp_path: Path, transport: str) -> None:
    """Issue 11 item 9 (port in use): no traceback."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "mcp_server", "--transport", transport, "--port", str(port)],
            env=settings_env(tmp_path, tmp_path),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
