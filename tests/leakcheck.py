"""Zero processes left behind: a pytest plugin that fails the test that leaked one.

Before each test it notes the descendants of the pytest process (those of higher-scoped fixtures
already exist then); after the test, any descendant that was not there before and is still there
after a short bounded wait (a process being reaped) is a leak: it is reported, killed, and the
test errors at teardown. At the end of the session, after every fixture is torn down, no
descendant may remain at all. Long-lived fixture processes (the session's redis-server) register
with `allow_long_lived(pid)` and are exempt, with their own descendants, until the session ends.

A process is known by (pid, start time) so a recycled pid is never mistaken for an old one.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REAP_WAIT_S = 5.0
_allowed: set[int] = set()


def allow_long_lived(pid: int) -> None:
    """Exempt a session-scoped fixture process (and its children) from the per-test check."""
    _allowed.add(pid)


def forget_long_lived(pid: int) -> None:
    _allowed.discard(pid)


@dataclass(frozen=True, slots=True)
class Proc:
    pid: int
    ppid: int
    start: int
    state: str
    cmdline: str

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.start)

    def __str__(self) -> str:
        zombie = " (zombie: exited, never reaped)" if self.state == "Z" else ""
        return f"pid {self.pid} (parent {self.ppid}){zombie}: {self.cmdline or '?'}"


def _read_proc(pid: int) -> Proc | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    rest = stat[stat.rfind(")") + 2 :].split()
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        cmdline = ""
    return Proc(pid=pid, ppid=int(rest[1]), start=int(rest[19]), state=rest[0], cmdline=cmdline[:200])


def descendants(root: int | None = None) -> dict[tuple[int, int], Proc]:
    """Every live or zombie descendant of `root` (default: this process)."""
    root = os.getpid() if root is None else root
    procs: list[Proc] = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read_proc(int(entry))
            if proc is not None:
                procs.append(proc)
    children: dict[int, list[Proc]] = {}
    for proc in procs:
        children.setdefault(proc.ppid, []).append(proc)
    found: dict[tuple[int, int], Proc] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found[child.key] = child
            stack.append(child.pid)
    return found


def _exempt(found: dict[tuple[int, int], Proc]) -> set[tuple[int, int]]:
    """Registered long-lived processes and everything under them."""
    by_pid = {p.pid: p for p in found.values()}
    exempt: set[tuple[int, int]] = set()
    for proc in found.values():
        cursor: Proc | None = proc
        while cursor is not None:
            if cursor.pid in _allowed:
                exempt.add(proc.key)
                break
            cursor = by_pid.get(cursor.ppid)
    return exempt


def _wait_for_exit(pids: list[int], timeout: float) -> None:
    """Block until one of `pids` exits or `timeout` passes (pidfds: no polling of live processes)."""
    poller = select.poll()
    fds: list[int] = []
    try:
        for pid in pids:
            with contextlib.suppress(OSError):
                fd = os.pidfd_open(pid)
                fds.append(fd)
                poller.register(fd, select.POLLIN)
        if fds:
            poller.poll(max(1, int(timeout * 1000)))
        else:
            # Only zombies: another thread (the event loop's child watcher) is about to reap them.
            time.sleep(min(timeout, 0.01))
    finally:
        for fd in fds:
            os.close(fd)


def leftovers(before: set[tuple[int, int]], *, wait_s: float = REAP_WAIT_S) -> list[Proc]:
    """Descendants not in `before` and not exempt, after waiting up to `wait_s` for them to go."""
    deadline = time.monotonic() + wait_s
    while True:
        found = descendants()
        exempt = _exempt(found)
        left = [p for k, p in found.items() if k not in before and k not in exempt]
        remaining = deadline - time.monotonic()
        if not left or remaining <= 0:
            return left
        _wait_for_exit([p.pid for p in left if p.state != "Z"], min(remaining, 0.25))


def kill_and_reap(procs: list[Proc]) -> None:
    """Kill leaked processes so the next test starts clean; reap our own zombie children."""
    for proc in procs:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)
    me = os.getpid()
    own = [p.pid for p in procs if p.ppid == me]
    if own:
        _wait_for_exit(own, 1.0)
    for pid in own:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _report(procs: list[Proc]) -> str:
    return "\n".join(f"  {p}" for p in procs)


@pytest.fixture(autouse=True)
def no_leaked_processes(request: pytest.FixtureRequest) -> Iterator[None]:
    before = set(descendants())
    yield
    left = leftovers(before)
    if left:
        kill_and_reap(left)
        pytest.fail(f"{request.node.nodeid} left {len(left)} process(es) behind:\n{_report(left)}", pytrace=False)


@pytest.hookimpl(trylast=True)  # after the runner tore down fixtures left up by -x or Ctrl-C
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _allowed.clear()
    left = leftovers(set())
    if not left:
        return
    kill_and_reap(left)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    message = f"leakcheck: the test session left {len(left)} process(es) behind:\n{_report(left)}"
    if reporter is not None:
        reporter.write_line(message, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
