"""stdio exits soon after end of input, whatever is in flight (issue 11 item 6: target <= 1 s).

A real `python -m mcp_server` on pipes: initialize, then one of these in flight, then stdin closed;
the time is from the close to the process's exit (stdout read to its end). Cases: nothing in flight
(the baseline: interpreter teardown), a background `run_tests` on a hanging test, the same plus a
waiting `run_tests` (answered with an error after `stdio_eof_grace_s`), and a waiting run the client
cancelled (never answered, so nothing waits for it). Medians; each case interleaved with the baseline.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import IO, Any

import anyio

from benchmarks.common import PYTHON, Options, Result, interleave, median_ms, server_env

INITIALIZE = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}
CASES = ("background", "waiting", "cancelled")


def _send(stdin: IO[bytes], message: dict[str, Any]) -> None:
    stdin.write((json.dumps(message) + "\n").encode())
    stdin.flush()


def _answer(stdout: IO[bytes], request_id: int) -> dict[str, Any]:
    while True:
        message = json.loads(stdout.readline())
        if message.get("id") == request_id and "method" not in message:
            return dict(message)


def _started(root: Path, count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(root.glob("started-*"))) < count and time.monotonic() < deadline:
        time.sleep(0.01)


def exit_after_eof(root: Path, env: dict[str, str], case: str) -> float:
    for old in root.glob("started-*"):
        old.unlink()
    proc = subprocess.Popen(
        [PYTHON, "-m", "mcp_server"],
        cwd=root,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        _send(proc.stdin, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INITIALIZE})
        _answer(proc.stdout, 1)
        _send(proc.stdin, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        if case != "idle":
            call = {"name": "run_tests", "arguments": {"wait": False}}
            _send(proc.stdin, {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call})
            _answer(proc.stdout, 2)
            _started(root, 1)
        if case in ("waiting", "cancelled"):
            call = {"name": "run_tests", "arguments": {}}
            _send(proc.stdin, {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": call})
            _started(root, 2)
        if case == "cancelled":
            _send(proc.stdin, {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 3}})
        started = time.perf_counter()
        proc.stdin.close()
        proc.stdout.read()
        proc.wait(timeout=60)
        return time.perf_counter() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()


async def run(opts: Options) -> list[Result]:
    root = opts.workdir / "stdio-exit"
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n")
    (root / "test_hang.py").write_text(
        "import os, pathlib, time\n\n"
        "def test_hangs():\n"
        "    pathlib.Path(f'started-{os.getpid()}').write_text('')\n"
        "    time.sleep(600)\n"
    )
    env = server_env(
        roots=str(root),
        audit_log=str(opts.workdir / "stdio-exit-audit.jsonl"),
        cache_dir=str(opts.workdir / "cache"),
        max_concurrent_runs="2",
    )
    n = opts.n(7, 2)
    results = []
    for case in CASES:

        async def ours(case: str = case) -> float:
            return await anyio.to_thread.run_sync(exit_after_eof, root, env, case)

        async def idle() -> float:
            return await anyio.to_thread.run_sync(exit_after_eof, root, env, "idle")

        mine, baseline = await interleave(n, ours, idle)
        results.append(
            Result(
                name=f"stdio exit after EOF, {case} run in flight",
                ours_ms=median_ms(mine),
                baseline_ms=median_ms(baseline),
                baseline="nothing in flight",
                target="<= 1000 ms",
                max_ms=1000.0,
            )
        )
    return results
