"""A sharded run: one zygote forks several children, each runs a share of the tests.

Every child collects the same tests (the same selection, `-k`/`-m` and affected skip included)
and keeps its own share (`recorder.ShardFilter`): longest recorded tests first, each to the least
loaded shard. Their events merge into one result with the counts, failures and progress of a
serial run. A child that dies while running a test is, like a pytest-xdist worker, reported as
a failure of that test and replaced (a bounded number of times) by one that runs the rest of its
share. Session- and module-scoped fixtures run once per child, as with pytest-xdist.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_thread

from mcp_server.api import AppState, SlotTicket
from tools.test_runner.affected import Selection, finish, merge_records, prepare, selection_result
from tools.test_runner.pool import get_pool
from tools.test_runner.reports import RunState, TestFinished, worst_exit
from tools.test_runner.runner import RunRequest, TestRun, _ignore_test
from tools.test_runner.zygote import Zygote

MAX_REPLACEMENTS = 4
"""Per run: children started again after a crash (a suite that crashes everywhere stops)."""


def effective_workers(requested: int) -> int:
    """At most one child per CPU."""
    return max(1, min(requested, os.cpu_count() or 1))


class ShardedRun:
    """The interface of `TestRun` (execute, state, outcome, finish_log, extra) over N children."""

    __test__ = False

    def __init__(
        self,
        app: AppState,
        request: RunRequest,
        workers: int,
        *,
        tool: str,
        connection: str,
        write_log: Callable[[str], None] = lambda text: None,
        on_test: Callable[[TestFinished], Awaitable[None]] = _ignore_test,
        on_update: Callable[[RunState], None] = lambda state: None,
    ) -> None:
        self.app = app
        self.request = request
        self.workers = workers
        self._kw: dict[str, Any] = {"tool": tool, "connection": connection, "write_log": write_log}
        self._write_log = write_log
        self._on_test = on_test
        self._on_update = on_update
        self.ticket: SlotTicket | None = None  # as TestRun.ticket
        self.attempts: list[list[TestRun]] = [[] for _ in range(workers)]
        self.state = RunState(request.root, app.redactor.redact)
        self.selection: Selection | None = None
        self.selection_info: dict[str, Any] | None = None
        self.queued_s = 0.0
        self.duration_s = 0.0
        self.replacements = 0
        self.crashes: list[str] = []
        self._done = 0
        self.warnings: list[str] = []

    @property
    def started(self) -> bool:
        return any(run.started for runs in self.attempts for run in runs)

    # --- the run ---------------------------------------------------------------------------------

    async def execute(self) -> None:
        try:
            async with self.ticket or self.app.executor.slots.reserve() as queued_s:
                self.queued_s = queued_s
                pool = await get_pool(self.app)
                warm = TestRun(self.app, self.request, **self._kw)
                await warm.preimport(pool)
                self.warnings = warm.warnings
                async with pool.lease(self.request.root, self.request.interpreter) as zygote:
                    await self._prepare(zygote)
                    started = time.monotonic()
                    try:
                        async with anyio.create_task_group() as tg:
                            for index in range(self.workers):
                                tg.start_soon(self._shard, zygote, pool.rendezvous, index)
                    finally:
                        self.duration_s = time.monotonic() - started
                        self.state = self._merge()
            await self._finish()
        finally:
            if self.selection is not None:
                self.selection.close()

    async def _prepare(self, zygote: Zygote) -> None:
        request = self.request
        self.selection = await anyio.to_thread.run_sync(
            functools.partial(
                prepare,
                request.cache,
                request.root,
                zygote.env_fingerprint,
                affected=request.affected,
                record=request.record,
            )
        )

    def _select(self, index: int, skip: set[str]) -> dict[str, Any]:
        base: dict[str, Any] = self.selection.command() if self.selection is not None else {"record": False}
        records = self.selection.stored.records if self.selection is not None else {}
        durations = {n: r.duration for n, r in records.items()}
        shard = {"index": index, "count": self.workers, "durations": durations, "done": sorted(skip)}
        return {**base, "shard": shard}

    async def _shard(self, zygote: Zygote, rendezvous: Any, index: int) -> None:
        skip: set[str] = set()
        deadline = time.monotonic() + self.request.timeout_s
        while True:
            remaining = max(0.001, deadline - time.monotonic())
            run = TestRun(
                self.app,
                dataclasses.replace(self.request, timeout_s=remaining),
                **self._kw,
                on_test=self._progress,
                on_update=lambda state: self._on_update(self._merge()),
            )
            run.select = self._select(index, skip)
            self.attempts[index].append(run)
            await run.run_on(zygote, rendezvous)
            state = run.state
            died = run.ending == "exited" and state.exit_code is None
            if not died:
                return
            crashed = state.current
            status, message = run.outcome()  # the crash becomes a failure of the test it was in
            self.crashes.append(message or status)
            if crashed is None or self.replacements >= MAX_REPLACEMENTS:
                return
            self.replacements += 1
            state.outcomes[crashed] = ("crashed", 0.0)
            skip |= set(state.outcomes)

    async def _progress(self, finished: TestFinished) -> None:
        self._done += 1
        total = sum(runs[0].state.total or 0 for runs in self.attempts if runs)
        known = all(runs and runs[0].state.total is not None for runs in self.attempts)
        await self._on_test(dataclasses.replace(finished, done=self._done, total=total if known else None))

    def _merge(self) -> RunState:
        parts = [(run.state, i == 0) for runs in self.attempts for i, run in enumerate(runs)]
        merged = RunState.merged(parts, self.request.root, self.app.redactor.redact)
        finals = [runs[-1].state.exit_code for runs in self.attempts if runs]
        codes = [code for code in finals if code is not None]
        merged.exit_code = worst_exit(codes) if codes and len(codes) == len(finals) else None
        if self.crashes and merged.exit_code is None and codes:
            merged.exit_code = worst_exit(codes)
        return merged

    async def _finish(self) -> None:
        selection = self.selection
        if selection is None:
            return
        runs = [run for attempts in self.attempts for run in attempts]
        if all(run.ending == "exited" for run in runs):
            event = merge_records([run.state.record for run in runs])
            call = functools.partial(finish, selection, event, self.state.outcomes, partial=self.request.partial)
            try:
                await anyio.to_thread.run_sync(call)
            except Exception as exc:  # the run's result matters more than its record
                selection.warning = selection.warning or f"the affected-test data was not recorded: {exc}"
            self.selection_info = selection_result(selection, event, list(self.state.outcomes))

    # --- the end ---------------------------------------------------------------------------------

    def outcome(self) -> tuple[str, str | None]:
        runs = [run for attempts in self.attempts for run in attempts]
        for ending in ("cancelled", "timeout"):
            for run in runs:
                if run.ending == ending:
                    return run.outcome()
        if self.crashes:
            return "crashed", "; ".join(self.crashes)
        if self.state.exit_code is None:
            return "crashed", "a test process died"
        return self.state.status_and_message()

    def finish_log(self, status: str) -> None:
        self._write_log(f"\n[run ended: {status} after {self.duration_s:.2f}s on {self.workers} workers]\n")

    def extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"queued_s": round(self.queued_s, 4), "workers": self.workers}
        if self.state.elapsed is not None:
            extra["worker_s"] = round(self.state.elapsed, 4)
        if self.replacements:
            extra["replaced_workers"] = self.replacements
        if self.selection_info is not None:
            extra["selection"] = self.selection_info
        warnings = [*self.warnings, *([self.selection.warning] if self.selection and self.selection.warning else [])]
        if warnings:
            extra["warnings"] = warnings
        return extra
