"""The secure executor: the one place that starts processes.

No shell, ever: an argument vector of strings, with user values passed only as data (after `--`,
or on stdin). A scrubbed environment (an allow-list). Each child leads its own process group, so a
timeout or a cancel kills everything it spawned (process_runner.py: spawn, kill the group, reap;
process_output.py: `OutputCollector`; run_queue.py: the run slots). Output is collected raw by default: tools parse
it (ruff's JSON, formatted source, the LSP stream), and a machine-readable channel is never
rewritten. Redaction happens where text leaves the server: the result pipeline (results.py), the
run log, the audit log (which redacts every record itself) and error messages. `redact=True`
redacts a stream as it arrives, for output shown as is. Every command is audited. Runs that
execute project code take a slot from `RunSlots` (run_queue.py): a bounded number at once and a
FIFO queue behind them (backpressure), refused only past the queue limit.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream  # noqa: F401  (re-exported for typing users)

from mcp_server.audit import AuditLog, AuditRecord
from mcp_server.errors import ToolError
from mcp_server.process_output import OutputCollector as OutputCollector  # re-exported: it lived here
from mcp_server.process_runner import KILL_GRACE_S as KILL_GRACE_S
from mcp_server.process_runner import ProcessRunner
from mcp_server.process_runner import kill_group as kill_group
from mcp_server.reaper import become_subreaper, reap_adopted
from mcp_server.redact import Redactor
from mcp_server.run_queue import RunSlots as RunSlots  # re-exported: the queue lived here
from mcp_server.run_queue import SlotTicket as SlotTicket

logger = logging.getLogger("mcp_server.executor")

ENV_ALLOW = (
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LANGUAGE",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "TEMP",
    "TMP",
    "TERM",
    "SYSTEMROOT",
    "XDG_CACHE_HOME",
)
RUN_TAG_VAR = "CODE_TOOLS_RUN_TAG"
"""Set in the environment of project code (and so inherited by what it starts): marks the
processes the server may kill and reap when they are orphaned and re-parented to it."""


@dataclass(frozen=True, slots=True)
class ProcessResult:
    argv: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool
    output_bytes: int
    truncated: bool


class Executor:
    def __init__(
        self,
        *,
        audit: AuditLog,
        redactor: Redactor,
        slots: RunSlots,
        pass_env: Sequence[str] = (),
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.audit = audit
        self.redactor = redactor
        self.slots = slots
        self.pass_env = tuple(pass_env)
        self._environ = os.environ if environ is None else environ
        self.processes = ProcessRunner()
        self.run_tag = f"{os.getpid()}-{secrets.token_hex(8)}"
        self.subreaper = False

    @property
    def live(self) -> set[int]:
        """Pids of the children this executor started that are not reaped yet."""
        return self.processes.live

    def environment(self, *, extra: Mapping[str, str] | None = None, project: bool = False) -> dict[str, str]:
        """The scrubbed environment: the allow-list, `pass_env` for project code, then `extra`."""
        names = ENV_ALLOW + (self.pass_env if project else ())
        env = {k: self._environ[k] for k in names if k in self._environ}
        env.update({k: v for k, v in self._environ.items() if k.startswith("LC_")})
        if project:
            env[RUN_TAG_VAR] = self.run_tag
        if extra:
            env.update(extra)
        return env

    @staticmethod
    def _check_argv(argv: Sequence[str]) -> list[str]:
        if not argv or not all(isinstance(a, str) for a in argv):
            raise ToolError("internal: an argument vector must be a non-empty list of strings")
        if any("\x00" in a for a in argv):
            raise ToolError("an argument contains a NUL byte")
        return list(argv)

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        tool: str,
        connection: str,
        timeout_s: float,
        stdin: bytes | None = None,
        env_extra: Mapping[str, str] | None = None,
        project_env: bool = False,
        max_output: int = 16 * 1024 * 1024,
        on_output: Callable[[str], None] | None = None,
        redact: bool = False,
    ) -> ProcessResult:
        """Run to completion (or timeout), collecting stdout/stderr up to `max_output` each, raw
        (what leaves the server is redacted at egress); `redact=True` redacts as it streams.

        On timeout the group is killed and what it wrote until then is kept. Cancelling kills the
        group too; the command is audited either way.
        """
        argv = self._check_argv(argv)
        env = self.environment(extra=env_extra, project=project_env)
        started = time.monotonic()
        proc = await self.processes.spawn(argv, cwd, env, subprocess.PIPE if stdin is not None else subprocess.DEVNULL)
        redactor = self.redactor if redact else None
        out = OutputCollector(redactor, max_output, on_output)
        err = OutputCollector(redactor, max_output)
        timed_out = False
        outcome = "exited"

        async def pump_both() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(out.pump, proc.stdout)
                tg.start_soon(err.pump, proc.stderr)

        try:
            with anyio.move_on_after(timeout_s) as deadline:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(pump_both)
                    if stdin is not None and proc.stdin is not None:
                        with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                            await proc.stdin.send(stdin)
                        await proc.stdin.aclose()
                    await proc.wait()
            if deadline.cancelled_caught:
                timed_out = True
                outcome = "timeout"
                await self.processes.kill(proc)
                with anyio.move_on_after(KILL_GRACE_S):
                    await pump_both()  # what the killed group left in the pipes
        except BaseException:
            outcome = "cancelled"
            raise
        finally:
            await self.processes.reap(proc)
            out.finish()
            err.finish()
            duration = time.monotonic() - started
            await self.audit.record(
                AuditRecord(
                    time=AuditRecord.now(),
                    connection=connection,
                    tool=tool,
                    argv=list(argv),  # the audit log redacts every record
                    cwd=str(cwd),
                    exit_status=proc.returncode,
                    duration_s=round(duration, 4),
                    output_bytes=out.bytes + err.bytes,
                    outcome=outcome,
                )
            )
        return ProcessResult(
            argv=argv,
            returncode=None if timed_out else proc.returncode,
            stdout=out.text(),
            stderr=err.text(),
            duration_s=duration,
            timed_out=timed_out,
            output_bytes=out.bytes + err.bytes,
            truncated=out.truncated or err.truncated,
        )

    @contextlib.asynccontextmanager
    async def open(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        tool: str,
        connection: str,
        env_extra: Mapping[str, str] | None = None,
        project_env: bool = False,
    ) -> AsyncIterator[anyio.abc.Process]:
        """A long-lived child (ruff server, zygote) with pipes; killed with its group on exit."""
        argv = self._check_argv(argv)
        env = self.environment(extra=env_extra, project=project_env)
        started = time.monotonic()
        proc = await self.processes.spawn(argv, cwd, env, subprocess.PIPE)
        try:
            yield proc
        finally:
            await self.processes.reap(proc)
            await self.audit.record(
                AuditRecord(
                    time=AuditRecord.now(),
                    connection=connection,
                    tool=tool,
                    argv=list(argv),  # the audit log redacts every record
                    cwd=str(cwd),
                    exit_status=proc.returncode,
                    duration_s=round(time.monotonic() - started, 4),
                    output_bytes=0,
                    outcome="closed",
                )
            )

    def adopt_orphans(self) -> bool:
        """Make the server a child subreaper (Linux): what project code orphans (a killed zygote's
        runs, double-forked daemons) is re-parented here, for `reap_adopted`. Idempotent."""
        if not self.subreaper:
            self.subreaper = become_subreaper()
        return self.subreaper

    async def reap_adopted(self, sessions: Sequence[int] = ()) -> int:
        """Kill and reap the orphans of project code re-parented to the server (those carrying the
        run tag, or in one of `sessions`, such as a dead zygote's). Bounded; safe to cancel (the
        work finishes in its thread, shielded). Returns how many were reaped."""
        if not self.subreaper:
            return 0
        tag = f"{RUN_TAG_VAR}={self.run_tag}"
        # No process is started while the scan runs: a zygote being started (it carries the tag)
        # must not be taken for an orphan of the dead one.
        with anyio.CancelScope(shield=True):
            async with self.processes.frozen() as known:
                work = functools.partial(reap_adopted, tag, sessions=tuple(sessions), known=known)
                reaped = await anyio.to_thread.run_sync(work)
        return reaped

    async def aclose(self) -> None:
        """Kill whatever is still running (the server is going away), wait until each is reaped
        (bounded, shielded), then reap what the server adopted."""
        await self.processes.kill_all()
        await self.reap_adopted()
