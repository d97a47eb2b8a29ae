"""Load: many clients at once, each making `lint` calls on small changed sources and 2 `run_tests`.

Separately over WebSocket, HTTP in the handshake era and HTTP in the 2026-07-28 era (sessionless):
`clients` connections at once (50; 8 with --quick), each `calls` lint calls (100; 10 with --quick)
on a source that changes every call, then 2 run_tests on the sample project. Figures: lint
p50/p95/p99, errors (must be 0), the server's peak RSS (the server process, and its whole process
tree: ruff servers and pytest zygotes). Targets on 2 cores: lint p95 <= 250 ms, 0 errors, peak RSS
<= 256 MB.

Also the round trip of a trivial call (get_run of an unknown id) on one kept-alive HTTP connection
in each era, against the same over WebSocket (target <= 2x). The 44 ms seen before was Nagle
against delayed ACK: the listening socket (socket.create_server, proto 0) gave accepted
connections no TCP_NODELAY (asyncio sets it only on proto-IPPROTO_TCP sockets), so a reply written
in two pieces waited for the client's delayed ACK (40 ms) on a kept-alive connection, while a fresh
connection is in quick-ack mode. Fixed in transports/network.py. The mirror case remains and is
measured here: a client that writes a request's head and body apart without TCP_NODELAY waits for
the server's delayed ACK; only the client can fix that (every mainstream HTTP client does).

The round trips are measured interleaved: the three servers run at once, one kept-alive client each,
and every round calls them in a fresh random order (a busy moment of the shared machine falls on all
three alike). The ratio moves with the machine's load (a quiet machine shrinks WebSocket's round
trip more than HTTP's); the rows "server CPU per trivial call" are steadier.

Where the HTTP round trip goes (variant servers measured interleaved against WebSocket, load ~4-9,
2026-12-02): hypercorn with our front answering the POST itself (no SDK) takes 0.83-0.87x of the
WHOLE WebSocket call. The SDK then added ~0.6 ms in the 2026-07-28 era and ~0.9 ms in the handshake
era, where its session transport answers every POST with an SSE stream (sse-starlette starts five
tasks and a task group per reply, memory streams between request, dispatcher, router and writer) so
that progress and log entries tied to the request can travel before the answer. Its JSON mode exists
only per session manager and drops those notifications. What we do instead:
- a session's `tools/call` is served as one exchange through the SDK's public single-exchange driver
  (`serve_one`, what the SDK's own 2026-07-28 entry uses), with the connection the client described
  in its `initialize`; the reply is JSON unless progress, a log entry or 15 s of silence comes first,
  then SSE (transports/http_exchange.py). Cancellation (notifications/cancelled, session end) keeps
  the era's rules;
- any other POST whose SSE stream would hold only its answer goes out as JSON (http_replies.py).
Before/after, three interleaved runs of 600 rounds at load ~10: handshake era 1.57/1.92/4.72 ms ->
1.10/1.47/1.55 ms against WebSocket 0.78/1.08/1.21 ms (ratio 2.02/1.78/3.89 -> 1.42/1.37/1.27); server
CPU per call 1.55-1.97 -> 0.98-1.37 ms against 0.58-0.83 ms. The 2026-07-28 era is unchanged
(1.44-1.66x at that load; the README's quiet, sequential run had 1.98x): its remaining cost is the
SDK's own entry (the spec's header checks, a task group and two tasks per request) and hypercorn.
Our front (door, caps, session ledger, body timer, cork) measured ~0.05-0.09 ms per call. Each
reply's bytes leave in one packet (TCP_CORK in transports/http_sockets.py).

The clients are bare (websockets, raw HTTP/1.1 on asyncio streams): client-side SDK parsing would
compete with the server for the same 2 cores.

    python -m benchmarks.bench_load [--quick] [--clients N] [--calls N] [--transports ws,http,http-modern]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import re
import shutil
import socket
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from benchmarks.common import PYTHON, ROOT, Options, Result, percentile_ms

WAIT_S = 120.0
LEGACY = "2025-11-25"
MODERN = "2026-07-28"
CLIENT_INFO = {"name": "bench-load", "version": "0"}
MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": MODERN,
    "io.modelcontextprotocol/clientInfo": CLIENT_INFO,
    "io.modelcontextprotocol/clientCapabilities": {},
}
SAMPLE = ROOT / "examples" / "sample_project"


# --- the server under test ------------------------------------------------------------------------


def load_env(root: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCP_CODE_TOOLS_")}
    base = {
        "roots": str(root),
        "audit_log": str(root.parent / "bench-audit.jsonl"),
        "cache_dir": str(root.parent / "bench-cache"),
        "allow_test_execution": "true",
        # the load is one client address: lift the per-client caps, not the per-call work
        "rate_limit_rps": "1000000",
        "rate_limit_burst": "1000000",
        "max_connections_per_client": "10000",
        "max_requests_per_client": "10000",
        "max_queued_runs": "10000",
        **settings,
    }
    env.update({f"MCP_CODE_TOOLS_{k.upper()}": v for k, v in base.items()})
    return env


@dataclass
class ServerProcess:
    proc: asyncio.subprocess.Process
    url: str
    peak_rss: int = 0
    peak_tree_rss: int = 0
    _watch: asyncio.Task[None] | None = None
    _drain: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, root: Path, transport: str, **settings: str) -> ServerProcess:
        proc = await asyncio.create_subprocess_exec(
            PYTHON,
            "-m",
            "mcp_server",
            "--transport",
            transport,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            cwd=root,
            env=load_env(root, **settings),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stderr is not None
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), WAIT_S)
            if not line:
                raise RuntimeError(f"the {transport} server exited before listening")
            found = re.search(r"listening on (\S+)", line.decode("utf-8", "replace"))
            if found:
                break
        server = cls(proc, found.group(1))
        server._watch = asyncio.create_task(server._sample_rss())
        server._drain = asyncio.create_task(_drain(proc.stderr))
        return server

    async def _sample_rss(self) -> None:
        while self.proc.returncode is None:
            own, tree = process_tree_rss(self.proc.pid)
            self.peak_rss = max(self.peak_rss, own)
            self.peak_tree_rss = max(self.peak_tree_rss, tree)
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        self.peak_rss = max(self.peak_rss, vm_hwm(self.proc.pid))
        if self._watch is not None:
            self._watch.cancel()
        if self.proc.returncode is None:
            self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def _status(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def vm_hwm(pid: int) -> int:
    return _status(pid, "VmHWM")


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text().split()
            found += [int(c) for c in text]
    except OSError:
        pass
    return found


def process_tree_rss(pid: int) -> tuple[int, int]:
    own = _status(pid, "VmRSS")
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _status(p, "VmRSS")
        todo += children_of(p)
    return own, total


# --- bare clients -----------------------------------------------------------------------------------


class WsClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    @classmethod
    async def open(cls, url: str) -> WsClient:
        ws = await connect(url, subprotocols=[Subprotocol("mcp")], compression=None, max_size=None, open_timeout=WAIT_S)
        client = cls(ws)
        init = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": CLIENT_INFO}
        assert "result" in await client.request("initialize", init)
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        return client

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = next(self._ids)
        await self.ws.send(json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), WAIT_S))
            if reply.get("id") == rid and "method" not in reply:
                return dict(reply)

    async def close(self) -> None:
        await self.ws.close()


class HttpClient:
    """One kept-alive HTTP/1.1 connection (asyncio streams: TCP_NODELAY, one write per request)."""

    def __init__(self, url: str, era: str) -> None:
        found = re.match(r"http://([^:/]+):(\d+)(/\S*)", url)
        assert found, url
        self.host, self.port, self.path = found.group(1), int(found.group(2)), found.group(3)
        self.era = era
        self.session: str | None = None
        self._ids = itertools.count(1)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @classmethod
    async def open(cls, url: str, era: str) -> HttpClient:
        client = cls(url, era)
        client.reader, client.writer = await asyncio.open_connection(client.host, client.port)
        if era == LEGACY:
            init = {"protocolVersion": LEGACY, "capabilities": {}, "clientInfo": CLIENT_INFO}
            reply, headers = await client._post({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": init})
            assert "result" in reply, reply
            client.session = headers.get("mcp-session-id")
            await client._post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return client

    def _head(self, body: bytes, extra: dict[str, str]) -> bytes:
        lines = [
            f"POST {self.path} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            "Accept: application/json, text/event-stream",
            "Content-Type: application/json",
            f"MCP-Protocol-Version: {self.era}",
            f"Content-Length: {len(body)}",
        ]
        if self.session:
            lines.append(f"Mcp-Session-Id: {self.session}")
        lines += [f"{k}: {v}" for k, v in extra.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    async def _post(self, message: dict[str, Any], extra: dict[str, str] | None = None) -> tuple[Any, dict[str, str]]:
        assert self.reader is not None and self.writer is not None
        body = json.dumps(message).encode()
        self.writer.write(self._head(body, extra or {}) + body)
        await self.writer.drain()
        return await asyncio.wait_for(read_response(self.reader, message.get("id")), WAIT_S)

    async def request(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = next(self._ids)
        extra = {"Mcp-Method": method}
        if self.era == MODERN:
            params = {**params, "_meta": MODERN_META}
            if method == "tools/call":
                extra["Mcp-Name"] = str(params["name"])
        reply, _ = await self._post({"jsonrpc": "2.0", "id": rid, "method": method, "params": params}, extra)
        return dict(reply)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()


async def read_response(reader: asyncio.StreamReader, rid: Any) -> tuple[Any, dict[str, str]]:
    """One HTTP/1.1 response: JSON, or an SSE stream (chunked) whose event answers `rid`."""
    status = await reader.readline()
    if not status:
        raise EOFError("connection closed")
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        key, _, value = line.decode("latin-1").partition(":")
        headers[key.strip().lower()] = value.strip()
    code = int(status.split()[1])
    if "content-length" in headers:
        data = await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                break
            parts.append(await reader.readexactly(size))
            await reader.readline()
        data = b"".join(parts)
    else:
        data = b""
    if code >= 400:
        return {"error": {"code": code, "message": data.decode("utf-8", "replace")[:200]}}, headers
    if not data:
        return {}, headers
    if headers.get("content-type", "").startswith("text/event-stream"):
        for event_line in data.decode().splitlines():
            if event_line.startswith("data:") and event_line[5:].strip():
                event = json.loads(event_line[5:])
                if event.get("id") == rid and "method" not in event:
                    return event, headers
        return {"error": {"message": "no answer in the event stream"}}, headers
    return json.loads(data), headers


Opener = Callable[[str], Awaitable[Any]]
OPENERS: dict[str, tuple[str, Opener]] = {
    "ws": ("websocket", WsClient.open),
    "http": ("http", lambda url: HttpClient.open(url, LEGACY)),
    "http-modern": ("http", lambda url: HttpClient.open(url, MODERN)),
}


# --- the load ---------------------------------------------------------------------------------------


@dataclass
class LoadFigures:
    lint: list[float] = field(default_factory=list)
    tests: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0


def changed_source(client: int, call: int) -> str:
    return (
        f'"""Module {client}/{call}."""\n\nimport os\n\n\ndef f_{call}(x):\n'
        f"    y = x + {call}\n    return y if y != {client} else None\n"
    )


async def one_client(opener: Opener, url: str, n: int, calls: int, figures: LoadFigures) -> None:
    try:
        client = await opener(url)
    except Exception as exc:
        figures.errors.append(f"connect: {exc!r}")
        return
    try:
        for i in range(calls):
            args = {"source": changed_source(n, i), "filename": f"src/sample/load_{n}.py"}
            started = time.perf_counter()
            reply = await client.request("tools/call", {"name": "lint", "arguments": args})
            figures.lint.append(time.perf_counter() - started)
            if "result" not in reply or reply["result"].get("isError"):
                figures.errors.append(f"lint: {str(reply)[:200]}")
        for _ in range(2):
            started = time.perf_counter()
            reply = await client.request("tools/call", {"name": "run_tests", "arguments": {}})
            figures.tests.append(time.perf_counter() - started)
            result = reply.get("result", {})
            status = (result.get("structuredContent") or {}).get("status")
            if "result" not in reply or status not in ("passed", "failed"):
                figures.errors.append(f"run_tests: {str(reply)[:200]}")
    except Exception as exc:
        figures.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        await client.close()


async def load(root: Path, kind: str, clients: int, calls: int) -> tuple[LoadFigures, ServerProcess]:
    transport, opener = OPENERS[kind]
    server = await ServerProcess.start(root, transport)
    figures = LoadFigures()
    try:
        warm = await opener(server.url)  # warm the ruff server and the zygote once, outside the figures
        await warm.request("tools/call", {"name": "lint", "arguments": {"source": "x = 1\n", "filename": "w.py"}})
        await warm.request("tools/call", {"name": "run_tests", "arguments": {}})
        await warm.close()
        started = time.perf_counter()
        await asyncio.gather(*(one_client(opener, server.url, n, calls, figures) for n in range(clients)))
        figures.wall_s = time.perf_counter() - started
    finally:
        await server.stop()
    return figures, server


def load_results(kind: str, figures: LoadFigures, server: ServerProcess, clients: int, calls: int) -> list[Result]:
    label = {"ws": "WebSocket", "http": f"HTTP {LEGACY}", "http-modern": f"HTTP {MODERN}"}[kind]
    lint = figures.lint or [0.0]
    extra = {
        "clients": clients,
        "lint_calls": len(figures.lint),
        "p50_ms": round(percentile_ms(lint, 50), 1),
        "p95_ms": round(percentile_ms(lint, 95), 1),
        "p99_ms": round(percentile_ms(lint, 99), 1),
        "run_tests_p50_ms": round(percentile_ms(figures.tests or [0.0], 50), 1),
        "errors": len(figures.errors),
        "first_errors": figures.errors[:3],
        "peak_rss_mb": round(server.peak_rss / 2**20, 1),
        "peak_tree_rss_mb": round(server.peak_tree_rss / 2**20, 1),
        "lint_calls_per_s": round(len(figures.lint) / figures.wall_s, 1) if figures.wall_s else None,
    }
    return [
        Result(
            f"load {label}: lint p95, {clients} clients x {calls}",
            percentile_ms(lint, 95),
            target="<= 250 ms",
            max_ms=250.0,
            extra=extra,
        ),
        Result(f"load {label}: errors", float(len(figures.errors)), target="0", max_ms=0.0, extra=extra, unit="errors"),
        Result(
            f"load {label}: server peak RSS",
            server.peak_rss / 2**20,
            target="<= 256 MB",
            max_ms=256.0,
            extra=extra,
            unit="MB",
        ),
    ]


# --- round trip on a kept-alive connection ----------------------------------------------------------


TRIVIAL = {"name": "get_run", "arguments": {"run_id": "run_x"}}


async def kept_alive_rtts(root: Path, n: int) -> dict[str, list[float]]:
    """Round trips of a trivial call, one kept-alive connection per transport, interleaved: the three
    servers run at once and each round calls them in a fresh random order, so a busy moment of the
    shared machine falls on all of them alike. Also each server's CPU over the same rounds."""
    kinds = ("ws", "http", "http-modern")
    servers: dict[str, ServerProcess] = {}
    clients: dict[str, Any] = {}
    out: dict[str, list[float]] = {kind: [] for kind in kinds}
    try:
        for kind in kinds:  # every server first: a client left idle past http_idle_timeout_s is closed
            servers[kind] = await ServerProcess.start(root, OPENERS[kind][0])
        for kind in kinds:
            clients[kind] = await OPENERS[kind][1](servers[kind].url)
            for _ in range(20):
                await clients[kind].request("tools/call", TRIVIAL)
        cpu_before = {kind: process_cpu_s(servers[kind].proc.pid) for kind in kinds}
        order = list(kinds)
        shuffle = random.Random(0).shuffle
        for _ in range(n):
            shuffle(order)
            for kind in order:
                started = time.perf_counter()
                reply = await clients[kind].request("tools/call", TRIVIAL)
                out[kind].append(time.perf_counter() - started)
                assert reply.get("result", {}).get("isError"), reply
        for kind in kinds:
            out[f"{kind}-server-cpu"] = [(process_cpu_s(servers[kind].proc.pid) - cpu_before[kind]) / n]
        for client in clients.values():
            await client.close()
        out["http-modern-two-segments"] = await asyncio.to_thread(
            nagle_client_rtts, servers["http-modern"].url, max(10, n // 10)
        )
    finally:
        for server in servers.values():
            await server.stop()
    return out


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def nagle_client_rtts(url: str, n: int) -> list[float]:
    """A blocking client without TCP_NODELAY that sends a request's head and body in two writes."""
    found = re.match(r"http://([^:/]+):(\d+)(/\S*)", url)
    assert found
    host, port, path = found.group(1), int(found.group(2)), found.group(3)
    body = json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {**TRIVIAL, "_meta": MODERN_META}}
    ).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: application/json, text/event-stream\r\n"
        f"Content-Type: application/json\r\nMCP-Protocol-Version: {MODERN}\r\nMcp-Method: tools/call\r\n"
        f"Mcp-Name: get_run\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    samples = []
    with socket.create_connection((host, port), timeout=WAIT_S) as sock:
        for i in range(n + 3):
            started = time.perf_counter()
            sock.sendall(head)
            sock.sendall(body)
            buf = b""
            while b"\r\n\r\n" not in buf:
                buf += sock.recv(65536)
            head_part, _, rest = buf.partition(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head_part, re.I).group(1))  # type: ignore[union-attr]
            while len(rest) < length:
                rest += sock.recv(65536)
            if i >= 3:
                samples.append(time.perf_counter() - started)
    return samples


def rtt_results(rtts: dict[str, list[float]]) -> list[Result]:
    ws = statistics.median(rtts["ws"]) * 1000
    results = []
    for kind, label in (("http", LEGACY), ("http-modern", MODERN)):
        results.append(
            Result(
                f"HTTP {label} round trip, kept-alive connection",
                statistics.median(rtts[kind]) * 1000,
                baseline_ms=ws,
                baseline="WebSocket",
                target="<= 2x",
                max_ratio=2.0,
            )
        )
    if "ws-server-cpu" in rtts:
        ws_cpu = rtts["ws-server-cpu"][0] * 1000
        for kind, label in (("http", LEGACY), ("http-modern", MODERN)):
            results.append(
                Result(
                    f"HTTP {label}: server CPU per trivial call, kept-alive connection",
                    rtts[f"{kind}-server-cpu"][0] * 1000,
                    baseline_ms=ws_cpu,
                    baseline="WebSocket",
                    target="(where the round trip goes: see notes)",
                )
            )
    if "http-modern-two-segments" in rtts:
        results.append(
            Result(
                f"HTTP {MODERN} round trip, client writing head and body apart without TCP_NODELAY",
                statistics.median(rtts["http-modern-two-segments"]) * 1000,
                baseline_ms=ws,
                baseline="WebSocket",
                target="(the 44 ms cause: measured, see notes)",
            )
        )
    return results


# --- entry points -----------------------------------------------------------------------------------


def sample_root(opts: Options) -> Path:
    root = opts.workdir / "load" / "sample_project"
    if root.exists():
        shutil.rmtree(root)
    shutil.copytree(SAMPLE, root)
    return root


async def run(
    opts: Options,
    *,
    clients: int | None = None,
    calls: int | None = None,
    kinds: tuple[str, ...] = ("ws", "http", "http-modern"),
) -> list[Result]:
    clients = clients or opts.n(50, 8)
    calls = calls or opts.n(100, 10)
    root = sample_root(opts)
    results = rtt_results(await kept_alive_rtts(root, opts.n(600, 200)))
    for kind in kinds:
        figures, server = await load(root, kind, clients, calls)
        results += load_results(kind, figures, server, clients, calls)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int)
    parser.add_argument("--calls", type=int)
    parser.add_argument("--transports", default="ws,http,http-modern")
    args = parser.parse_args()
    opts = Options(quick=args.quick)
    opts.workdir.mkdir(parents=True, exist_ok=True)
    kinds = tuple(k for k in args.transports.split(",") if k)
    results = asyncio.run(run(opts, clients=args.clients, calls=args.calls, kinds=kinds))
    for r in results:
        print(json.dumps(r.as_dict(), default=str))


if __name__ == "__main__":
    main()
