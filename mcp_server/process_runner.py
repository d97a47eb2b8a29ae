"""The process runner: starts children, kills their process groups, reaps them.

Each child leads its own process group (a new session), so a timeout, a cancel or the server's
shutdown kills everything it spawned. `ProcessRunner` keeps the children not yet reaped; a kill is
TERM, a grace period, then KILL, bounded and shielded from cancellation.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import anyio.abc

from mcp_server.errors import ToolError

logger = logging.getLogger("mcp_server.executor")

KILL_GRACE_S = 2.0


def kill_group(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal a whole process group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class ProcessRunner:
    """Children started in their own process group, tracked until reaped."""

    def __init__(self) -> None:
        self._procs: dict[int, anyio.abc.Process] = {}
        # Held from fork to registration, and by `frozen()`: a scan of the server's children never
        # sees a child started here that is not yet in `live` (it would take it for an orphan).
        self._registry = anyio.Lock()

    @property
    def live(self) -> set[int]:
        """Pids of the children started here that are not reaped yet."""
        return set(self._procs)

    async def spawn(self, argv: Sequence[str], cwd: Path, env: dict[str, str], stdin: int | None) -> anyio.abc.Process:
        """Start `argv` (no shell) leading a new process group, with stdout and stderr piped."""
        async with self._registry:
            try:
                proc = await anyio.open_process(
                    list(argv),
                    cwd=str(cwd),
                    env=env,
                    stdin=stdin,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    start_new_session=True,
                )
            except OSError as exc:
                raise ToolError(f"cannot start {argv[0]}: {exc.strerror or exc}") from None
            self._procs[proc.pid] = proc
        return proc

    @contextlib.asynccontextmanager
    async def frozen(self) -> AsyncIterator[frozenset[int]]:
        """The pids of the children started here, with no new one started until the block ends."""
        async with self._registry:
            yield frozenset(self._procs)

    async def kill(self, proc: anyio.abc.Process) -> None:
        """Kill the whole group (TERM, then KILL) and wait for the leader; bounded and shielded."""
        with anyio.CancelScope(shield=True):
            if proc.returncode is None:
                kill_group(proc.pid, signal.SIGTERM)
                with anyio.move_on_after(KILL_GRACE_S):
                    await proc.wait()
            kill_group(proc.pid)
            with anyio.move_on_after(KILL_GRACE_S):
                await proc.wait()
            if proc.returncode is None:
                logger.error("process %s did not exit after SIGKILL", proc.pid)
            if proc.returncode is not None:
                self._procs.pop(proc.pid, None)

    async def reap(self, proc: anyio.abc.Process) -> None:
        """Kill the whole group, wait for the leader and close the pipes."""
        await self.kill(proc)
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await proc.aclose()

    async def kill_all(self) -> None:
        """SIGKILL every group still running and wait until each leader is reaped (bounded, shielded)."""
        procs = list(self._procs.values())
        for proc in procs:
            kill_group(proc.pid)
        with anyio.CancelScope(shield=True), anyio.move_on_after(KILL_GRACE_S):
            for proc in procs:
                await proc.wait()
        for proc in procs:
            if proc.returncode is None:
                logger.error("process %s did not exit after SIGKILL", proc.pid)
            else:
                self._procs.pop(proc.pid, None)
