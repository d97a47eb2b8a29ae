"""Helpers for the test-runner tests: temporary projects, "the test has started" signals, process checks,
and a project interpreter on CPython 3.12+ (`project_python`).

Temporary projects are written under `tmp_path` (outside our own `testpaths`), each with its own
`pytest.ini` so pytest's rootdir is the project and nothing of ours is configured into it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from mcp.client import Client

from tests import py312_venv
from tests.conftest import open_memory
from tests.setup_lock import wait_for_setup

HANG = """
import os, pathlib, socket, subprocess, sys, time

def _signal(note):
    path = pathlib.Path("signal_path.txt").read_text()
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    sock.sendall(note.encode())
    return sock

ESCAPE = (
    "import os, pathlib, subprocess, sys, time\\n"
    "inner = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'], start_new_session=True)\\n"
    "pathlib.Path('escaped.tmp').write_text(f'{os.getpid()} {inner.pid}')\\n"
    "os.replace('escaped.tmp', 'escaped.txt')\\n"
    "time.sleep(600)\\n"
)

def _hang():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    # One that leaves the run's process group (its own session), with a child in yet another.
    subprocess.Popen([sys.executable, "-c", ESCAPE], start_new_session=True)
    deadline = time.monotonic() + 30
    while not pathlib.Path("escaped.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    pathlib.Path("pids.txt").write_text(f"{os.getpgid(0)} {os.getpid()} {child.pid}")
    sock = _signal("started")
    time.sleep(600)
"""


def write_project(root: Path, files: dict[str, str], ini: str = "[pytest]\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text(ini)
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip())
    return root


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with one test of each outcome."""
    return write_project(
        tmp_path / "proj",
        {
            "tests/test_mixed.py": """
                import json
                import pytest

                @pytest.fixture
                def broken():
                    raise RuntimeError("fixture broke")

                def test_pass():
                    print("hello from a test")

                def test_fail():
                    assert [1, 2] == [1, 3]

                def test_library_frames():
                    json.loads("{bad")

                @pytest.mark.skip(reason="not today")
                def test_skip():
                    pass

                @pytest.mark.xfail
                def test_xfail():
                    assert 0

                @pytest.mark.xfail
                def test_xpass():
                    pass

                def test_error(broken):
                    pass
            """,
        },
    )


@pytest.fixture(scope="session")
def py312() -> Path:
    """The Python of a venv on CPython 3.12+ with pytest (tests/py312_venv.py; scripts/setup builds it
    beside the main install). Skipped where the machine has no CPython 3.12+ to build it from (it
    cannot be installed here); under CI, a failed build fails."""
    reason = wait_for_setup() or py312_venv.build()
    if reason == py312_venv.NONE_FOUND:
        pytest.skip(reason)
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"the 3.12+ project venv must build in CI: {reason}")
        pytest.skip(reason)
    return py312_venv.venv_python()


@pytest.fixture(params=["own", "3.12+"])
def project_python(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings for the project's interpreter: the server's own (3.11 here: the recorder traces with
    cProfile), or a 3.12+ venv's (it traces with `sys.monitoring`)."""
    if request.param == "own":
        return {}
    return {"python": str(request.getfixturevalue("py312"))}


@pytest.fixture
def memory_client(tmp_path: Path) -> Any:
    """`async with memory_client(root, **settings) as client:` in-process (for the many edge cases)."""

    def factory(root: Path | None = None, **overrides: Any) -> AbstractAsyncContextManager[Client]:
        return open_memory(root or tmp_path, tmp_path, "legacy", **overrides)

    return factory


class Signals:
    """A Unix socket that tests in a temporary project connect to when they reach a point."""

    def __init__(self, listener: anyio.abc.SocketListener, path: str) -> None:
        self.listener = listener
        self.path = path
        self.streams: list[anyio.abc.SocketStream] = []

    def install(self, project: Path) -> None:
        (project / "signal_path.txt").write_text(self.path)

    async def wait(self) -> anyio.abc.SocketStream:
        """The next connection: a test reached its point. Callers bound the wait."""
        stream = await self.listener.accept()  # type: ignore[attr-defined]
        self.streams.append(stream)
        return stream


@pytest.fixture
async def signals() -> AsyncIterator[Signals]:
    directory = tempfile.mkdtemp(prefix="sig-")  # short: Unix socket paths are limited to ~100 bytes
    path = os.path.join(directory, "s")
    listener = await anyio.create_unix_listener(path)
    signals = Signals(listener, path)
    try:
        yield signals
    finally:
        for stream in signals.streams:
            await stream.aclose()
        await listener.aclose()
        shutil.rmtree(directory, ignore_errors=True)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rfind(")") + 2 :].split()


def live_in_group(pgid: int) -> list[int]:
    """Live (not zombie) processes in the process group `pgid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None and int(fields[2]) == pgid and fields[0] != "Z":
                found.append(int(entry))
    return found


def alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def hung_pids(project: Path) -> tuple[int, int, int]:
    """(process group, test process, its subprocess) written by the `HANG` helper."""
    pgid, pid, child = (int(p) for p in (project / "pids.txt").read_text().split())
    return pgid, pid, child


async def wait_dead(pid: int) -> None:
    """Wait (bounded) until `pid` has exited: a SIGKILL is sent at once but acted on a moment later."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with anyio.fail_after(10):
            await anyio.wait_readable(fd)
    finally:
        os.close(fd)


async def assert_gone(project: Path, *, escaped: bool = True) -> None:
    """The hung test's process, its subprocess and its whole process group are gone; with `escaped`,
    also the processes that `HANG` started outside the group (`escaped.txt`)."""
    pgid, pid, child = hung_pids(project)
    assert pgid == pid, "the test process leads its own process group"
    await wait_dead(pid)
    await wait_dead(child)
    assert not alive(pid) and not alive(child)
    assert live_in_group(pgid) == []
    if escaped:
        others = [int(p) for p in (project / "escaped.txt").read_text().split()]
        assert len(others) == 2
        for other in others:
            await wait_dead(other)
            assert not alive(other), f"{other} left the run's process group and survived it"
