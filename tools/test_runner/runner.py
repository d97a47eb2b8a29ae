"""One forked pytest session, from its place in the run queue to its last byte of output.

`TestRun.execute()` takes a run slot (FIFO, `Busy` past the queue limit), leases the zygote of
(root, interpreter), forks a child, reads its events and output as they stream, and waits for it
under the run's timeout. A timeout or a cancel kills the child's whole process group and waits
for it (bounded, shielded); what was reported until then stays in `state`. Every run is audited.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shlex
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.to_thread
from anyio.streams.memory import MemoryObjectReceiveStream

from mcp_server.api import (
    AppState,
    AuditRecord,
    OutputCollector,
    SlotTicket,
    kill_group,
    past_span,
    trace_env,
    trace_span,
)
from tools.test_runner import preimports
from tools.test_runner.affected import Selection, finish, prepare, selection_result
from tools.test_runner.pool import get_pool
from tools.test_runner.progress import ProgressBuffer
from tools.test_runner.record_writes import record_writes
from tools.test_runner.rendezvous import Arrival, Rendezvous
from tools.test_runner.reports import RunState, Summary, TestFinished
from tools.test_runner.selection.snapshot import Snapshot, take
from tools.test_runner.zygote import FORK_TIMEOUT_S, ChildHandle, Zygote

logger = logging.getLogger("mcp_server.test_runner")

KILL_WAIT_S = 5.0
DRAIN_S = 2.0
MAX_EVENT_LINE = 16 * 1024 * 1024
READ_SIZE = 1024 * 1024
COALESCE_S = 0.002

Ending = Literal["exited", "timeout", "cancelled"]


@dataclass(frozen=True, slots=True)
class RunRequest:
    root: Path
    interpreter: Path
    args: list[str]
    mode: Literal["run", "collect"]
    timeout_s: float
    affected: bool = False
    """Run (or list) only the tests a change since their last run can affect."""
    cache: Path | None = None
    """The root's server-owned folder (the test database); None: nothing is recorded."""
    partial: bool = False
    """Node ids were selected: what is collected is not each module's full list."""
    workers: int = 1
    """Children that share the tests (`shards.ShardedRun`); 1: this one child."""
    record: bool = True
    """Record what each test executes (setting `record_tests`)."""
    learn: bool = True
    """Have the zygote pre-import what this root's runs imported (setting `learn_imports`)."""

    def command_line(self) -> str:
        return shlex.join([str(self.interpreter), "-m", "pytest", *self.args])


async def _ignore_test(finished: TestFinished) -> None:
    return None


LEARNED_IMPORTS = "test_runner_learned_imports"


class LearnedImports:
    """Per root folder, what its runs reported importing from outside the root (their records
    learn it as pre-imports): a zygote whose pre-imports were checked with all of it has nothing
    new to import, and its next run skips reading the list (`RunBase.lease`)."""

    def __init__(self) -> None:
        self._imported: dict[Path, set[str]] = {}

    async def aclose(self) -> None:
        return None

    def of(self, folder: Path) -> set[str]:
        return self._imported.setdefault(folder, set())


async def learned_imports(app: AppState) -> LearnedImports:
    async def factory() -> LearnedImports:
        return LearnedImports()

    return await app.services.get(LEARNED_IMPORTS, factory)


def _write_records(
    selection: Selection, event: dict[str, Any] | None, outcomes: Any, partial: bool, root: Path, after: Snapshot
) -> bool:
    """Write a run's affected-test records (blocking: a worker thread); False if that failed (the
    selection's warning says so). Never raises: the run's result matters more than its record."""
    try:
        finish(selection, event, outcomes, partial=partial, after=after)
    except Exception as exc:
        logger.exception("recording the affected-test data of %s failed", root)
        selection.warning = selection.warning or f"the affected-test data was not recorded: {exc}"
        return False
    return True


def _write_learned(selection: Selection, event: dict[str, Any] | None) -> bool:
    """Recording off (`record_tests = false`): write only what the run imported from outside the
    root (learned pre-imports do not depend on recording). Blocking: a worker thread."""
    imported = (event or {}).get("imported") or []
    if selection.db is None or not imported:
        return False
    try:
        with selection.db.transaction() as conn:
            preimports.learn(conn, selection.env_fp, [str(m) for m in imported])
    except (sqlite3.Error, OSError) as exc:
        logger.warning("the learned pre-imports of %s were not written: %s", selection.root, exc)
        return False
    return True


class RunBase:
    """What a run and a sharded run (`shards.ShardedRun`) share: the zygote lease with learned
    pre-imports, the affected-test selection (planned before, recorded after) and the result's
    extra fields."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(
        self,
        app: AppState,
        request: RunRequest,
        *,
        tool: str,
        connection: str,
        write_log: Callable[[str], None] = lambda text: None,
        on_test: Callable[[TestFinished], Awaitable[None]] = _ignore_test,
        on_update: Callable[[Summary], None] = lambda state: None,
    ) -> None:
        self.app = app
        self.request = request
        self.tool = tool
        self.connection = connection
        self.state = RunState(request.root, app.redactor.redact)
        self._write_log = write_log
        self._on_test = on_test
        self._on_update = on_update
        self.queued_s = 0.0
        self.duration_s = 0.0
        self.selection: Selection | None = None
        self.ticket: SlotTicket | None = None
        """A place in the run queue taken when the call was accepted (wait=false); else one is
        taken when the run starts."""
        self.selection_info: dict[str, Any] | None = None
        self.warnings: list[str] = []
        self.on_ran: Callable[[RunState], Awaitable[None]] | None = None
        """Called once the children are done: the test history's write (before the answer; the
        affected-test records are written after it)."""
        self._init()

    def _init(self) -> None:
        """A kind of run's own state."""

    @contextlib.asynccontextmanager
    async def lease(self, pool: Any) -> AsyncIterator[Zygote]:
        """The zygote of (root, interpreter), once it has imported what this project's runs
        imported last time (`preimports.py`). A module that made it unsafe had it stopped: the
        run then leases a fresh one (which gets the list without that module)."""
        request = self.request
        await (await record_writes(self.app)).settled(request.cache)  # an earlier run's records first
        learn = request.cache is not None and request.mode == "run" and request.learn
        for attempt in range(2):
            async with pool.lease(request.root, request.interpreter) as zygote:
                if learn and attempt == 0 and request.cache is not None:
                    imported = set((await learned_imports(self.app)).of(request.cache))
                    if zygote.imports_checked is None or not imported <= zygote.imports_checked:
                        warning = await preimports.ensure(zygote, request.cache, request.root)
                        if warning is not None:
                            self.warnings.append(warning)
                        if not zygote.alive:
                            continue
                        zygote.imports_checked = imported | zygote.preimported
                yield zygote
                return

    async def _prepare_selection(self, zygote: Zygote) -> None:
        request = self.request
        if request.cache is None and not request.affected:
            return
        self.selection = await anyio.to_thread.run_sync(
            functools.partial(
                prepare,
                request.cache,
                request.root,
                zygote.env_fingerprint,
                affected=request.affected,
                record=request.mode == "run" and request.record,
            )
        )

    async def _finish_selection(self, event: dict[str, Any] | None, complete: bool) -> None:
        """Say what was selected, and have the run's records (`event`, when the run ran to its
        end: `complete`) written after the answer (`record_writes.py`: one transaction, in a
        thread, after the root's earlier writes). The test history (`on_ran`) is written first,
        once the root's earlier record writes are done: the writes to the root's database never
        meet."""
        selection = self.selection
        state = self.state
        writes = await record_writes(self.app)
        await writes.settled(self.request.cache)
        if self.on_ran is not None:
            await self.on_ran(self.state)
        if selection is None:
            return
        self.selection_info = selection_result(selection, event, state.nodeids or list(state.outcomes))
        folder = self.request.cache
        learns = selection.record or self.request.mode == "run"  # recording off: only the imports
        if not (complete and selection.db is not None and folder is not None and learns):
            self.close_selection()
            return
        self.selection = None  # the write owns it now (and closes it)
        self._take_warning(selection)
        write: Callable[[], bool]
        if selection.record:
            after = await anyio.to_thread.run_sync(self._ended, selection, event)
            write = functools.partial(
                _write_records, selection, event, state.outcomes, self.request.partial, self.request.root, after
            )
        else:
            write = functools.partial(_write_learned, selection, event)

        async def write_then_learn() -> None:
            try:
                written = await anyio.to_thread.run_sync(write)
            finally:
                await anyio.to_thread.run_sync(selection.close)
            if written:
                imported = (await learned_imports(self.app)).of(folder)
                imported.update(str(m) for m in (event or {}).get("imported", []))

        await writes.submit(folder, write_then_learn)

    def _ended(self, selection: Selection, event: dict[str, Any] | None) -> Snapshot:
        """The tree as the run ended, and the bytes of what it executed (blocking: a thread)."""
        after = take(self.request.root, selection.snapshot.known())
        selection.keep_sources(event, after)
        return after

    def close_selection(self) -> None:
        """Close the selection's database; its warning stays for the result."""
        selection, self.selection = self.selection, None
        if selection is not None:
            selection.close()
            self._take_warning(selection)

    def _take_warning(self, selection: Selection) -> None:
        if selection.warning and selection.warning not in self.warnings:
            self.warnings.append(selection.warning)

    def extra(self) -> dict[str, Any]:
        """Beyond the pinned fields: time spent queued, the child's own run time, what was selected."""
        extra: dict[str, Any] = {"queued_s": round(self.queued_s, 4)}
        if self.state.elapsed is not None:
            extra["worker_s"] = round(self.state.elapsed, 4)
        if self.selection_info is not None:
            extra["selection"] = self.selection_info
        if self.warnings:
            extra["warnings"] = list(self.warnings)
        return extra


class TestRun(RunBase):
    def _init(self) -> None:
        self._progress = ProgressBuffer(self._on_test)  # bounded, coalescing: a slow client never stalls the parser
        self.started = False
        self.ending: Ending | None = None
        self.handle: ChildHandle | None = None
        self._eofs = 0
        self._drained = anyio.Event()
        self._wrapping_up = anyio.Event()
        """The child said its last word (or is gone): no more spacing of reads."""
        self._finished = anyio.Event()
        """The child is gone, or finished pytest and closed its streams (it is reaped meanwhile)."""
        self._event_bytes = 0
        self.select: dict[str, Any] | None = None
        """What the child's recorder gets, when set by a sharded run (its share, what to skip)."""

    # --- the run ---------------------------------------------------------------------------------

    async def execute(self) -> None:
        """Run to the end. Raises `ToolError` if no child could be started (busy, no pytest, ...);
        when cancelled, kills the child and re-raises once it is gone."""
        try:
            async with self.ticket or self.app.executor.slots.reserve() as queued_s:
                self.queued_s = queued_s
                past_span("queue wait", queued_s)
                pool = await get_pool(self.app)
                leasing = time.monotonic()  # a cold (root, interpreter) starts its zygote in the lease
                async with self.lease(pool) as zygote, pool.rendezvous.expect() as (token, arrivals):
                    past_span("zygote lease", time.monotonic() - leasing, {"zygote.pid": zygote.pid or 0})
                    await self._prepare_selection(zygote)
                    await self._run_child(zygote, token, pool.rendezvous.path, arrivals)
            state = self.state
            await self._finish_selection(state.record, self.ending == "exited" and state.exit_code is not None)
        finally:
            self.close_selection()

    async def run_on(self, zygote: Zygote, rendezvous: Rendezvous) -> None:
        """Run one child on a zygote the caller leased (one shard of a sharded run)."""
        async with rendezvous.expect() as (token, arrivals):
            await self._run_child(zygote, token, rendezvous.path, arrivals)

    async def _run_child(
        self, zygote: Zygote, token: str, sock: str, arrivals: MemoryObjectReceiveStream[Arrival]
    ) -> None:
        request = self.request
        handle = self.handle = zygote.new_child()
        output = OutputCollector(None, 0, self._output)  # raw: the run log redacts what it keeps
        command: dict[str, Any] = {
            "token": token,
            "sock": sock,
            "root": str(request.root),
            "args": request.args,
            "mode": request.mode,
        }
        if self.selection is not None:
            command["select"] = self.selection.command()
        if self.select is not None:
            command["select"] = self.select
        if traceparent := trace_env():  # the project's own instrumentation joins the request's trace
            command["env"] = traceparent
        self._write_log(self.app.redactor.redact(f"$ {request.command_line()}\n"))
        started = time.monotonic()
        self.started = True
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._take, arrivals, output, tg)
                tg.start_soon(self._watch, handle)
                tg.start_soon(self._progress.pump)
                with trace_span("zygote fork"):
                    await zygote.fork(handle, command)
                with anyio.move_on_after(request.timeout_s) as deadline:
                    await self._finished.wait()
                if deadline.cancelled_caught:
                    self.ending = "timeout"
                    await self._stop_child(zygote, handle)
                else:
                    self.ending = "exited"
                with anyio.move_on_after(DRAIN_S):
                    await self._drained.wait()
                await self._progress.drain()
                tg.cancel_scope.cancel()
        except anyio.get_cancelled_exc_class():
            self.ending = "cancelled"
            await self._stop_child(zygote, handle)
            raise
        finally:
            output.finish()
            self.duration_s = time.monotonic() - started
            self._audit(handle, output.bytes + self._event_bytes)

    async def _stop_child(self, zygote: Zygote, handle: ChildHandle) -> None:
        """Kill the child's process group and wait until it is reaped. Shielded and bounded."""
        with anyio.CancelScope(shield=True):
            if handle.sent:
                with anyio.move_on_after(FORK_TIMEOUT_S):
                    await handle.forked.wait()
            await zygote.kill(handle)
            with anyio.move_on_after(KILL_WAIT_S):
                await handle.exited.wait()
            if not handle.exited.is_set() and handle.pid is not None:
                logger.error("test worker %s did not reap child %s; stopping it", zygote.pid, handle.pid)
                kill_group(handle.pid)
                zygote.stop()

    # --- streams ---------------------------------------------------------------------------------

    async def _take(
        self, arrivals: MemoryObjectReceiveStream[Arrival], output: OutputCollector, tg: anyio.abc.TaskGroup
    ) -> None:
        taken: set[str] = set()
        async for arrival in arrivals:
            if arrival.kind in taken:
                await arrival.stream.aclose()
                continue
            taken.add(arrival.kind)
            if arrival.kind == "ev":
                tg.start_soon(self._read_events, arrival)
            else:
                tg.start_soon(self._read_output, arrival, output)

    async def _watch(self, handle: ChildHandle) -> None:
        await handle.exited.wait()
        self._wrapping_up.set()
        self._finished.set()

    def _eof(self) -> None:
        self._eofs += 1
        if self._eofs >= 2:
            self._drained.set()
            self._check_finished()

    def _check_finished(self) -> None:
        # pytest is done and every holder of the streams closed them: the run is over, whether
        # or not the zygote has reported reaping the child yet.
        if self.state.exit_code is not None and self._drained.is_set():
            self._finished.set()

    def _output(self, text: str) -> None:
        self._write_log(text)
        self.state.note_output(text)

    async def _pump(self, stream: anyio.abc.ByteReceiveStream, feed: Callable[[bytes], Awaitable[None]]) -> None:
        """Feed what `stream` sends until EOF. While the child runs, reads are spaced by up to
        COALESCE_S: a test a millisecond would otherwise wake the server several times a
        millisecond. The child's exit ends the spacing at once (its last words are waiting)."""
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            while True:
                await feed(await stream.receive(READ_SIZE))
                if not self._wrapping_up.is_set():
                    with anyio.move_on_after(COALESCE_S):
                        await self._wrapping_up.wait()

    async def _read_output(self, arrival: Arrival, output: OutputCollector) -> None:
        async def feed(chunk: bytes) -> None:
            output.feed(chunk)

        async with arrival.stream:
            try:
                output.feed(arrival.leftover)
                await self._pump(arrival.stream, feed)
            finally:
                self._eof()

    async def _read_events(self, arrival: Arrival) -> None:
        buffer = bytearray(arrival.leftover)

        async def feed(chunk: bytes) -> None:
            self._event_bytes += len(chunk)
            buffer.extend(chunk)
            await self._parse(buffer)
            if len(buffer) > MAX_EVENT_LINE:
                self.state.internal.append("an oversized event from the test process was dropped")
                buffer.clear()

        async with arrival.stream:
            try:
                await self._parse(buffer)
                await self._pump(arrival.stream, feed)
            finally:
                self._eof()

    async def _parse(self, buffer: bytearray) -> None:
        while True:
            end = buffer.find(b"\n")
            if end < 0:
                return
            line = bytes(buffer[:end])
            del buffer[: end + 1]
            try:
                event = json.loads(line)
            except ValueError:
                self.state.internal.append("an unreadable event from the test process was dropped")
                continue
            try:
                finished = self.state.feed(event)  # a test can write into the fd too: trust nothing
            except (TypeError, ValueError, KeyError, AttributeError):
                self.state.internal.append("a malformed event from the test process was dropped")
                continue
            if event.get("e") in ("finish", "exit"):  # the session is over: read the rest at once
                self._wrapping_up.set()
                self._check_finished()
            if finished is not None:
                self._on_update(self.state)
                self._progress.put(finished)
            elif event.get("e") == "collected":
                self._on_update(self.state)

    # --- the end ---------------------------------------------------------------------------------

    def outcome(self) -> tuple[str, str | None]:
        """(status, message) of a run that started."""
        state = self.state
        if self.ending == "timeout":
            return "timeout", state.stopped("timeout", f"timed out after {self.request.timeout_s:g}s")
        if self.ending == "cancelled":
            return "cancelled", state.stopped("cancelled", "cancelled")
        if state.exit_code is None:
            handle = self.handle
            if handle is not None and handle.error is not None:
                state.crashed(None)
                return "crashed", handle.error
            return "crashed", state.crashed(handle.status if handle is not None else None)
        return state.status_and_message()

    def finish_log(self, status: str) -> None:
        """For a session that did not end by itself, the full text of its failures (pytest's own
        summary never came), and a closing line."""
        if not self.state.session_finished and self.state.full_texts:
            self._write_log(f"\n===== failures before the run ended ({status}) =====\n")
            for text in self.state.full_texts:
                self._write_log(self.app.redactor.redact(text) + "\n\n")
        self._write_log(f"\n[run ended: {status} after {self.duration_s:.2f}s]\n")

    def _audit(self, handle: ChildHandle, output_bytes: int) -> None:
        """One audit line per run, written off the answer's path (in the server's task group)."""
        outcome: str = self.ending or "exited"
        if outcome == "exited" and self.state.exit_code is None:
            outcome = "crashed"
        redact = self.app.redactor.redact
        argv = [str(self.request.interpreter), "-m", "pytest", *self.request.args]
        record = AuditRecord(
            time=AuditRecord.now(),
            connection=self.connection,
            tool=self.tool,
            argv=[redact(a) for a in argv],
            cwd=str(self.request.root),
            exit_status=handle.status if handle.status is not None else self.state.exit_code,
            duration_s=round(self.duration_s, 4),
            output_bytes=output_bytes,
            outcome=outcome,
        )
        self.app.audit_soon(record)
