"""Orphans the server adopts: it is a child subreaper (Linux), and kills and reaps what it inherits.

A test that kills its zygote (or double-forks a daemon, or starts a process in a session of its
own) leaves processes whose parent is gone. With `PR_SET_CHILD_SUBREAPER` they are re-parented to
the server instead of to init, and `reap_adopted` finds them among the server's children, kills
them (with their process group) and reaps them, a bounded number of rounds (each kill may orphan
more). Only processes that are ours to kill are touched: those carrying the executor's run tag in
their environment (everything started with the project environment inherits it), or members of a
session that the caller names (a dead zygote's). A child of the server that asyncio started and
waits for is never reaped here: its pid is in `known`, and it carries no tag.

Everything here blocks (`/proc` reads, waits bounded by a deadline): call it in a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass

logger = logging.getLogger("mcp_server.executor")

PR_SET_CHILD_SUBREAPER = 36
MAX_ROUNDS = 64
REAP_WAIT_S = 2.0


def become_subreaper() -> bool:
    """Linux: orphaned descendants are re-parented to this process. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes  # here, not at start-up: ~3 ms of the server's cold start, for a call made at the first spawn

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True, slots=True)
class Child:
    pid: int
    state: str
    pgid: int
    sid: int


def _stat(pid: int) -> tuple[int, Child] | None:
    """(parent pid, the process) from /proc/<pid>/stat; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    try:
        return int(fields[1]), Child(pid=pid, state=fields[0], pgid=int(fields[2]), sid=int(fields[3]))
    except (IndexError, ValueError):
        return None


def children(parent: int) -> list[Child]:
    """The live and zombie children of `parent` (a scan of /proc; empty where there is none)."""
    found: list[Child] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit():
            got = _stat(int(entry))
            if got is not None and got[0] == parent:
                found.append(got[1])
    return found


def has_tag(pid: int, tag: str) -> bool:
    """`tag` (NAME=value) is in the process's initial environment (empty for a zombie)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return tag.encode("utf-8", "surrogateescape") in f.read().split(b"\0")
    except OSError:
        return False


def _wait(pid: int, deadline: float) -> bool:
    """Reap `pid` (our child, SIGKILLed), waiting until `deadline` at most. True when reaped."""
    fd = -1
    with contextlib.suppress(OSError):
        fd = os.pidfd_open(pid)
    try:
        while True:
            try:
                got, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                return True  # not ours (any more)
            if got == pid:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if fd >= 0:
                poller = select.poll()
                poller.register(fd, select.POLLIN)
                poller.poll(max(1, int(min(remaining, 0.5) * 1000)))
            else:
                time.sleep(min(remaining, 0.01))
    finally:
        if fd >= 0:
            os.close(fd)


def reap_adopted(
    tag: str, *, sessions: Collection[int] = (), known: Collection[int] = (), wait_s: float = REAP_WAIT_S
) -> int:
    """Kill and reap this process's children that carry `tag` or belong to one of `sessions`,
    except `known` ones (children someone else waits for). Returns how many were reaped."""
    me = os.getpid()
    own_group = os.getpgrp()
    reaped = 0
    deadline = time.monotonic() + wait_s
    for _ in range(MAX_ROUNDS):
        doomed = [
            c
            for c in children(me)
            if c.pid not in known and (c.sid in sessions or (c.state != "Z" and has_tag(c.pid, tag)))
        ]
        if not doomed:
            return reaped
        for child in doomed:
            if child.pgid not in (own_group, me) and child.pgid not in known:
                with contextlib.suppress(OSError):
                    os.killpg(child.pgid, signal.SIGKILL)  # what it left running in its group
            with contextlib.suppress(OSError):
                os.kill(child.pid, signal.SIGKILL)
        for child in doomed:
            if _wait(child.pid, deadline):
                reaped += 1
            else:
                logger.error("adopted process %s did not exit after SIGKILL", child.pid)
                return reaped
    return reaped
