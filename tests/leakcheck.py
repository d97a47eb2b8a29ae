"""Zero processes left behind: a pytest plugin that fails the test that leaked one.

The pytest process makes itself a child subreaper, so a grandchild orphaned by its parent (the
`sleep 60 &` of a killed shell) is re-parented to pytest instead of escaping to init: every
process a test starts stays a descendant until it is gone. Before each test the plugin notes the
descendants (those of higher-scoped fixtures exist by then); after the test, a new descendant
that is still alive after a short bounded wait is a leak: it is reported, killed, and the test
errors at teardown. Dead orphans (zombies adopted by pytest) are reaped. At the end of the
session, after every fixture is torn down, no descendant may remain at all. Long-lived fixture
processes (the session's redis-server) register with `allow_long_lived(pid)` and are exempt,
with their own descendants, until the session ends.

A process is known by (pid, start time) so a recycled pid is never mistaken for an old one.

Under pytest-xdist (scripts/test) each worker is its own pytest process: it becomes a subreaper
and checks only its own descendants, so tests running at the same time in other workers are never
counted. The controlling process runs no test; at its session end (after its workers are gone)
it checks that nothing was left behind under it either.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import select
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass

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


def _read_file(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _read_proc(pid: int, with_cmdline: bool = True) -> Proc | None:
    try:
        stat = _read_file(f"/proc/{pid}/stat").decode(errors="replace")
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces and parentheses.
    rest = stat[stat.rfind(")") + 2 :].split()
    cmdline = ""
    if with_cmdline:
        with contextlib.suppress(OSError):
            cmdline = _read_file(f"/proc/{pid}/cmdline").replace(b"\0", b" ").decode(errors="replace").strip()
    return Proc(pid=pid, ppid=int(rest[1]), start=int(rest[19]), state=rest[0], cmdline=cmdline[:200])


def descendants(root: int | None = None) -> dict[tuple[int, int], Proc]:
    """Every live or zombie descendant of `root` (default: this process). Called twice per test: every
    process's `stat` is read to find the tree, and the command line only of those in it."""
    root = os.getpid() if root is None else root
    children: dict[int, list[Proc]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = _read_proc(int(entry), with_cmdline=False)
            if proc is not None:
                children.setdefault(proc.ppid, []).append(proc)
    found: dict[tuple[int, int], Proc] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found[child.key] = _with_cmdline(child)
            stack.append(child.pid)
    return found


def _with_cmdline(proc: Proc) -> Proc:
    try:
        raw = _read_file(f"/proc/{proc.pid}/cmdline")
    except OSError:
        return proc
    return dataclasses.replace(proc, cmdline=raw.replace(b"\0", b" ").decode(errors="replace").strip()[:200])


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
    finally:
        for fd in fds:
            os.close(fd)


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux `PR_SET_CHILD_SUBREAPER`); False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(36, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def pytest_configure(config: pytest.Config) -> None:
    become_subreaper()


def _reap_adopted_zombies(procs: list[Proc]) -> None:
    """Reap dead orphans re-parented to us; a zombie of another parent is that parent's business."""
    me = os.getpid()
    for proc in procs:
        if proc.state == "Z" and proc.ppid == me:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(proc.pid, os.WNOHANG)


def leftovers(before: set[tuple[int, int]], *, wait_s: float = REAP_WAIT_S) -> list[Proc]:
    """Live descendants not in `before` and not exempt, after waiting up to `wait_s` for them to go."""
    deadline = time.monotonic() + wait_s
    while True:
        found = descendants()
        exempt = _exempt(found)
        new = [p for k, p in found.items() if k not in before and k not in exempt]
        live = [p for p in new if p.state != "Z"]
        remaining = deadline - time.monotonic()
        if not live:
            _reap_adopted_zombies(new)
            return []
        if remaining <= 0:
            return live
        _wait_for_exit([p.pid for p in live], min(remaining, 0.25))


def kill_and_reap(procs: list[Proc]) -> None:
    """Kill leaked processes so the next test starts clean; reap the ones that were ours."""
    for proc in procs:
        with contextlib.suppress(OSError):
            os.kill(proc.pid, signal.SIGKILL)
    leftovers({p.key for p in descendants().values() if p.key not in {q.key for q in procs}}, wait_s=2.0)


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
