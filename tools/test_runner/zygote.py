"""The server side of one zygote: a `worker.py` process in a project's interpreter that forks runs.

`serve()` is the host task (in the pool's task group): it starts the process through the
executor, reads its events (ready, forked, exited, ...), and stops it on `stop()` or when it
dies. `fork()` asks for a child and returns its `ChildHandle`; `kill()` kills a child's whole
process group (the zygote does it, because it knows whether the child is reaped yet).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from mcp_server.api import Executor, ToolError, kill_group
from tools.test_runner.config_watch import ConfigSnapshot

logger = logging.getLogger("mcp_server.test_runner")

WORKER = Path(__file__).with_name("worker.py")
START_TIMEOUT_S = 60.0
FORK_TIMEOUT_S = 10.0
SEND_TIMEOUT_S = 5.0
MAX_EVENT_LINE = 1024 * 1024
STDERR_TAIL = 4000


class WorkerGone(ToolError):
    """The zygote is not running (it failed to start, or died)."""


@dataclass(eq=False)
class ChildHandle:
    """One forked run, as the zygote reports it."""

    id: int
    pid: int | None = None
    status: int | None = None
    """The wait status as an exit code (negative: killed by that signal); None if unknown."""
    error: str | None = None
    sent: bool = False
    """The run command reached the zygote (it will fork, or say why not)."""
    forked: anyio.Event = field(default_factory=anyio.Event)
    exited: anyio.Event = field(default_factory=anyio.Event)


class Zygote:
    def __init__(self, *, root: Path, interpreter: Path, executor: Executor) -> None:
        self.root = root
        self.interpreter = interpreter
        self._executor = executor
        self.ready = anyio.Event()
        """Set once it is ready to fork (after any restart without a threaded warm-up), or failed."""
        self._up = anyio.Event()
        """This process said ready (or failed)."""
        self.stopped = anyio.Event()
        self._stop = anyio.Event()
        self._stdin: anyio.abc.ByteSendStream | None = None
        self._send_lock = anyio.Lock()
        self._ids = itertools.count(1)
        self._children: dict[int, ChildHandle] = {}
        self._stderr_tail = ""
        self._stderr_done = anyio.Event()
        self.error: str | None = None
        self.info: dict[str, Any] = {}
        self.pid: int | None = None
        self.env_fingerprint = ""
        self.config_fingerprint = ""
        self.config: ConfigSnapshot | None = None
        """The walk of the root's pytest configuration that the last check saw (the pool's)."""
        self.runs = 0
        self.warm_without: list[str] = []
        """Plugins left out of the warm-up because they started a thread (["*"]: no warm-up)."""
        self.preimported: set[str] = set()
        """Modules imported here on request (learned pre-imports, `preimports.py`)."""
        self.imports_checked: set[str] | None = None
        """What its runs had imported when its learned pre-imports were last checked
        (`RunBase.lease`); None: never checked."""
        self._asked: dict[str, anyio.Event] = {}
        self._answers: dict[str, dict[str, Any]] = {}

    @property
    def alive(self) -> bool:
        return self.ready.is_set() and self.error is None and not self._stop.is_set()

    @property
    def site_dirs(self) -> list[str]:
        return [str(d) for d in self.info.get("site_dirs", []) if isinstance(d, str)]

    def stop(self) -> None:
        """Ask the host task to end the zygote (its children are killed with it). Idempotent."""
        self._stop.set()

    async def serve(self) -> None:
        """Run the zygote until `stop()` or its death. Sets `ready` once it is (or failed).

        A zygote must be single-threaded when it forks (a child gets only the forking thread, and
        any lock another thread held stays held for ever). If the warm-up left a thread running,
        the zygote is restarted without the plugin that started it (or without a warm-up)."""
        options: list[str] = []
        try:
            while True:
                retry = await self._serve_process(options)
                if retry is None:
                    break
                options = retry
        except Exception as exc:  # a host task must not take the server down with it
            self.error = self.error or f"the test worker in {self.interpreter} failed: {exc}"
        finally:
            self._stop.set()
            self._abandon_children()
            self.ready.set()
            with anyio.CancelScope(shield=True):
                # What its runs left behind was re-parented to the server (a subreaper): kill it.
                await self._executor.reap_adopted(sessions=[self.pid] if self.pid is not None else [])
            self.stopped.set()

    async def _serve_process(self, options: list[str]) -> list[str] | None:
        """One worker process, until `stop()` or its death; returns the options to restart it
        with when its warm-up left threads behind, else None."""
        self._up = anyio.Event()
        self._stderr_done = anyio.Event()
        self._stderr_tail = ""
        retry: list[str] | None = None
        async with self._executor.open(
            [str(self.interpreter), str(WORKER), *options],
            cwd=self.root,
            tool="run_tests zygote",
            connection="test-pool",
            project_env=True,
        ) as proc:
            self.pid = proc.pid
            self._stdin = proc.stdin
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read_stderr, proc.stderr)
                tg.start_soon(self._read_events, proc.stdout, tg.cancel_scope)
                with anyio.move_on_after(START_TIMEOUT_S):
                    await self._up.wait()
                if not self._up.is_set():
                    self.error = f"the test worker in {self.interpreter} did not start in {START_TIMEOUT_S:.0f}s"
                if self.error is None:
                    retry = self._threaded(options)
                if self.error is None and retry is None:
                    self.ready.set()
                    await self._stop.wait()
                tg.cancel_scope.cancel()
        return retry

    def _threaded(self, options: list[str]) -> list[str] | None:
        """The options to restart with if the warm-up left more than one thread, else None."""
        threads = int(self.info.get("threads", 1) or 1)
        if threads <= 1:
            return None
        if "--no-warm" in options:
            logger.error("the test worker %s has %d threads even without a warm-up; forking anyway", self.pid, threads)
            return None
        plugins = [str(p) for p in self.info.get("thread_plugins", []) if isinstance(p, str)]
        new = [p for p in plugins if p not in self.warm_without]
        retry = [*options, *(a for p in new for a in ("--warm-without", p))] if new else ["--no-warm"]
        self.warm_without = [*self.warm_without, *new] if new else ["*"]
        logger.warning(
            "the pytest warm-up of the test worker in %s left %d threads running (started by %s); restarting it %s",
            self.interpreter,
            threads,
            f"the plugin(s) {', '.join(plugins)}" if plugins else "an unknown plugin",
            f"without {', '.join(new)} in the warm-up" if new else "without a warm-up",
        )
        return retry

    async def _read_events(self, stdout: anyio.abc.ByteReceiveStream | None, scope: anyio.CancelScope) -> None:
        buffer = b""
        if stdout is not None:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                async for chunk in stdout:
                    buffer += chunk
                    while b"\n" in buffer:
                        line, buffer = buffer.split(b"\n", 1)
                        self._on_event(line)
                    if len(buffer) > MAX_EVENT_LINE:
                        self.error = "the test worker sent an oversized message"
                        break
        # End of output: the zygote is gone. Its last words are on stderr.
        with anyio.move_on_after(1.0):
            await self._stderr_done.wait()
        if self.error is None:
            tail = self._stderr_tail.strip()
            what = "exited before it was ready" if not self.ready.is_set() else "died"
            self.error = f"the test worker in {self.interpreter} {what}" + (f": {tail[-1500:]}" if tail else "")
        self._up.set()
        scope.cancel()

    def _on_event(self, line: bytes) -> None:
        try:
            event = json.loads(line)
            kind = event["e"]
        except (ValueError, KeyError, TypeError):
            logger.warning("test worker %s: unreadable event %r", self.pid, line[:200])
            return
        if kind == "ready":
            self.info = event
            self._up.set()
        elif kind == "error":
            self.error = (
                f"pytest cannot be imported by the interpreter {self.interpreter} "
                f"({event.get('message', 'unknown error')}); install pytest there, or set the "
                f"`python` setting (MCP_CODE_TOOLS_PYTHON) to an interpreter that has it"
            )
            self._up.set()
        elif kind in self._asked:
            self._answers[kind] = event
            self._asked.pop(kind).set()
        elif kind in ("forked", "exited", "fork_failed"):
            handle = self._children.get(int(event.get("id", -1)))
            if handle is None:
                return
            if kind == "forked":
                handle.pid = int(event["pid"])
                handle.forked.set()
            elif kind == "exited":
                handle.status = int(event.get("status", 0))
                self._children.pop(handle.id, None)
                handle.forked.set()
                handle.exited.set()
            else:
                handle.error = f"the test worker could not fork: {event.get('message')}"
                self._children.pop(handle.id, None)
                handle.forked.set()
                handle.exited.set()

    async def _read_stderr(self, stderr: anyio.abc.ByteReceiveStream | None) -> None:
        try:
            if stderr is None:
                return
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
                async for chunk in stderr:
                    text = chunk.decode("utf-8", "replace")
                    self._stderr_tail = (self._stderr_tail + text)[-STDERR_TAIL:]
                    logger.debug("test worker %s: %s", self.pid, text.rstrip())
        finally:
            self._stderr_done.set()

    def _abandon_children(self) -> None:
        """The zygote is gone: its children's runs end, and whatever is left of their groups dies."""
        for handle in self._children.values():
            if handle.pid is not None:
                kill_group(handle.pid)
            handle.error = handle.error or (self.error or "the test worker stopped")
            handle.forked.set()
            handle.exited.set()
        self._children.clear()

    async def _send(self, command: dict[str, Any], handle: ChildHandle | None = None) -> None:
        """Write one command. The write itself is shielded (a command is never half sent, and
        `handle.sent` is exact) and bounded (a zygote that does not read is wedged: stopped)."""
        if self._stdin is None or not self.alive:
            raise WorkerGone(self.error or "the test worker is not running")
        data = json.dumps(command).encode("utf-8") + b"\n"
        async with self._send_lock:
            try:
                with anyio.CancelScope(shield=True), anyio.fail_after(SEND_TIMEOUT_S):
                    await self._stdin.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError, TimeoutError):
                self.stop()
                raise WorkerGone(self.error or "the test worker went away") from None
            if handle is not None:
                handle.sent = True

    def new_child(self) -> ChildHandle:
        handle = ChildHandle(id=next(self._ids))
        self._children[handle.id] = handle
        return handle

    async def fork(self, handle: ChildHandle, command: dict[str, Any]) -> None:
        """Ask for `handle`'s child to run `command`; returns once it is forked (bounded).

        If this is cancelled, the child may still be forked: the caller waits for `handle.forked`
        (bounded) and kills it.
        """
        self.runs += 1
        try:
            await self._send({**command, "cmd": "run", "id": handle.id}, handle)
        except WorkerGone as exc:
            self._children.pop(handle.id, None)
            handle.error = str(exc)
            handle.forked.set()
            handle.exited.set()
            raise
        with anyio.move_on_after(FORK_TIMEOUT_S):
            await handle.forked.wait()
        if handle.error is not None or handle.pid is None:
            if not handle.forked.is_set():
                self.stop()  # wedged: the pool replaces it, and its host task ends this handle
            raise WorkerGone(handle.error or "the test worker did not fork in time")

    async def ask(self, command: dict[str, Any], answer: str, timeout_s: float) -> dict[str, Any] | None:
        """Send `command` and wait (bounded) for the event named `answer`; None without one in time.
        One asker per kind of answer at a time (the caller serializes)."""
        done = self._asked[answer] = anyio.Event()
        await self._send(command)
        with anyio.move_on_after(timeout_s):
            await done.wait()
        self._asked.pop(answer, None)
        return self._answers.pop(answer, None)

    async def kill(self, handle: ChildHandle) -> None:
        """SIGKILL the child's process group (no-op if it has exited). Safe to call when cancelled."""
        if handle.pid is None or handle.exited.is_set():
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._send({"cmd": "kill", "pid": handle.pid})
            except WorkerGone:
                kill_group(handle.pid)  # the zygote died: its host task reaps nothing any more

    def status(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "python": str(self.interpreter),
            "pytest": self.info.get("pytest"),
            "pid": self.pid,
            "alive": self.alive,
            "runs": self.runs,
            "threads": self.info.get("threads"),
            "warm_without": self.warm_without,
        }
