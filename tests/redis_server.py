"""A real redis-server for the tests of the shared rate-limit store (a session-scoped fixture).

`redis_url` starts `redis-server` on a free loopback port (no persistence) and stops it at the
end of the session (under pytest-xdist: one server per worker that runs a Redis test, each on a
port of its own); `MCP_CODE_TOOLS_TEST_REDIS_URL` points the tests at a server of your own
instead (then shared by every worker: the tests use key prefixes of their own). Without either
the tests are skipped with the reason, except under CI (`CI` or `MCP_CODE_TOOLS_REQUIRE_REDIS`
set), where a missing server is a failure: CI must run them.
`.ci/redis.sh` installs the Debian package.
"""

from __future__ import annotations

import os
import selectors
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.leakcheck import allow_long_lived, forget_long_lived
from tests.setup_lock import wait_for_setup

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
READY = b"Ready to accept connections"


def _required() -> bool:
    return any(
        os.environ.get(name, "").lower() not in ("", "0", "false") for name in ("CI", "MCP_CODE_TOOLS_REQUIRE_REDIS")
    )


def _unavailable(reason: str) -> None:
    if _required():
        pytest.fail(f"{reason}; CI must run the Redis tests (run: bash .ci/redis.sh)", pytrace=False)
    pytest.skip(f"{reason} (install it with: bash .ci/redis.sh, or set MCP_CODE_TOOLS_TEST_REDIS_URL)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes]) -> bytes:
    """Read redis-server's log until it is ready; returns what it printed. Bounded."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + START_TIMEOUT_S
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while READY not in seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"redis-server not ready after {START_TIMEOUT_S} s:\n{seen.decode(errors='replace')}"
                )
            if not sel.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError(f"redis-server exited:\n{seen.decode(errors='replace')}")
            seen += chunk
    return seen


def _drain(proc: subprocess.Popen[bytes]) -> None:
    """Keep reading the log so a full pipe never blocks the server."""
    assert proc.stdout is not None
    while os.read(proc.stdout.fileno(), 65536):
        pass


def stop_redis(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=STOP_TIMEOUT_S)


def start_redis(binary: str, workdir: Path, port: int | None = None) -> tuple[subprocess.Popen[bytes], int]:
    """Start redis-server on `port` or a free one (a free port taken meanwhile is retried with another)."""
    last_error: Exception | None = None
    for _ in range(3 if port is None else 1):
        port_now = port or free_port()
        argv = [binary, "--port", str(port_now), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(workdir), "--daemonize", "no", "--loglevel", "notice"]
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc)
        except (TimeoutError, RuntimeError) as exc:
            last_error = exc
            stop_redis(proc)
            if proc.stdout is not None:
                proc.stdout.close()
            continue
        return proc, port_now
    raise RuntimeError(f"redis-server did not start: {last_error}")


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a reachable redis-server (database 0 of a private server, or the one you gave)."""
    external = os.environ.get("MCP_CODE_TOOLS_TEST_REDIS_URL")
    if external:
        yield external
        return
    waited = wait_for_setup()  # scripts/setup --background may be installing it
    if waited:
        _unavailable(waited)
        return
    binary = shutil.which("redis-server")
    if binary is None:
        _unavailable("no redis-server binary on PATH")
        return
    try:
        proc, port = start_redis(binary, tmp_path_factory.mktemp("redis"))
    except RuntimeError as exc:
        _unavailable(str(exc))
        return
    allow_long_lived(proc.pid)
    drainer = threading.Thread(target=_drain, args=(proc,), name="redis-server-log", daemon=True)
    drainer.start()
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_redis(proc)
        drainer.join(timeout=STOP_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()
        forget_long_lived(proc.pid)
