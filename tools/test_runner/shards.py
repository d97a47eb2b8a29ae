"""A sharded run: one zygote forks several children, each runs a share of the tests.

When the root's records know its test files (a run recorded them), each child collects only its
share of them (`file_shares`): files are dealt out by their recorded durations, heaviest first to
the least loaded share, and a child is told to ignore every other file under the root
(`pytest_ignore_collect`, the recorder's `skip_files`). The first share also takes whatever the
records do not know (a new test file), so every test is collected by exactly one child. With no
usable records, a node-id selection, or files too few or too uneven to share, every child
collects everything and keeps its share of the tests (`recorder.ShardFilter`). Either way the
children's events merge into one result with the counts, failures and progress of a serial run.
A child that dies while running a test is, like a pytest-xdist worker, reported as a failure of
that test and replaced (a bounded number of times) by one that runs the rest of its share.
Session- and module-scoped fixtures run once per child, as with pytest-xdist.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Mapping
from typing import Any

import anyio

from tools.test_runner.affected import Selection, merge_records
from tools.test_runner.pool import get_pool
from tools.test_runner.reports import PartsSummary, RunState, TestFinished, worst_exit
from tools.test_runner.runner import RunBase, TestRun
from tools.test_runner.zygote import Zygote

MAX_REPLACEMENTS = 4
"""Per run: children started again after a crash (a suite that crashes everywhere stops)."""
PER_TEST_S = 0.0003
"""What pytest and the reporting spend on a test beyond its recorded duration (for balancing)."""
BALANCE_SLACK = 1.25
"""Files are shared only if the busiest share stays within this of an even split of the tests."""
MAX_IGNORED = 20_000
"""More files under the root than this (each share ignores the others'): every child collects all."""
NEVER_IGNORED = frozenset({"conftest.py", "__init__.py"})
"""Files every child sees as a serial run would (configuration, packages)."""


def effective_workers(requested: int) -> int:
    """At most one child per CPU."""
    return max(1, min(requested, os.cpu_count() or 1))


def deal_files(weights: Mapping[str, float], count: int) -> list[list[str]]:
    """Files into `count` shares: heaviest first to the least loaded (ties: the lower index, then
    the file name), so that equal inputs always give equal shares."""
    loads = [0.0] * count
    shares: list[list[str]] = [[] for _ in range(count)]
    for rel in sorted(weights, key=lambda rel: (-weights[rel], rel)):
        target = min(range(count), key=lambda k: (loads[k], k))
        shares[target].append(rel)
        loads[target] += weights[rel]
    return shares


def file_shares(selection: Selection | None, workers: int, explicit: bool) -> list[list[str]] | None:
    """Per child, the root-relative files it ignores (beside the selection's own `skip_files`);
    None: every child collects everything (item shares). `explicit`: the call named paths or
    node ids (pytest collects those whatever a plugin says)."""
    if selection is None or selection.db is None or explicit or not selection.snapshot.complete:
        return None
    collected = selection.stored.collected
    present = selection.snapshot.python.keys() | selection.snapshot.others.keys()
    if not collected or len(present) > MAX_IGNORED:
        return None
    plan = selection.plan
    skipped_files = set(plan.skip_files) if plan is not None else set()
    skipped_tests = plan.skip_nodeids if plan is not None else set()
    records = selection.stored.records
    known = sorted(float(r.duration) for r in records.values())
    default = known[len(known) // 2] if known else 0.01
    weights: dict[str, float] = {}
    for rel, nodeids in collected.items():
        if rel not in present or rel in skipped_files:
            continue
        running = [n for n in nodeids if n not in skipped_tests]
        if running:
            weights[rel] = sum(records[n].duration if n in records else default for n in running)
            weights[rel] += PER_TEST_S * len(running)
    if len(weights) < workers:
        return None
    shares = deal_files(weights, workers)
    busiest = max(sum(weights[rel] for rel in share) for share in shares)
    if busiest > BALANCE_SLACK * sum(weights.values()) / workers:
        return None
    others = {rel for rel in present if os.path.basename(rel) not in NEVER_IGNORED}
    ignored = [sorted(rel for share in shares[1:] for rel in share)]  # the first share: the rest
    ignored += [sorted(others - set(share)) for share in shares[1:]]
    return ignored


class ShardedRun(RunBase):
    """The interface of `TestRun` (execute, state, outcome, finish_log, extra) over N children."""

    def _init(self) -> None:
        self.workers = self.request.workers
        self._kw: dict[str, Any] = {"tool": self.tool, "connection": self.connection, "write_log": self._write_log}
        self.attempts: list[list[TestRun]] = [[] for _ in range(self.workers)]
        self.replacements = 0
        self.crashes: list[str] = []
        self.ignored: list[list[str]] | None = None
        """Per child, the files it does not collect (file shares); None: item shares."""
        self._done = 0

    @property
    def started(self) -> bool:
        return any(run.started for runs in self.attempts for run in runs)

    # --- the run ---------------------------------------------------------------------------------

    async def execute(self) -> None:
        try:
            async with self.ticket or self.app.executor.slots.reserve() as queued_s:
                self.queued_s = queued_s
                pool = await get_pool(self.app)
                async with self.lease(pool) as zygote:
                    await self._prepare_selection(zygote)
                    if self.selection is not None and self.selection.plan is not None:
                        self.selection.plan.widen()  # each child would check the import state on its own
                    self.ignored = file_shares(self.selection, self.workers, "--" in self.request.args)
                    started = time.monotonic()
                    try:
                        async with anyio.create_task_group() as tg:
                            for index in range(self.workers):
                                tg.start_soon(self._shard, zygote, pool.rendezvous, index)
                    finally:
                        self.duration_s = time.monotonic() - started
                        self.state = self._merge()
            runs = [run for attempts in self.attempts for run in attempts]
            await self._finish_selection(self._merge_records(), all(run.ending == "exited" for run in runs))
        finally:
            self.close_selection()

    def _select(self, index: int, skip: set[str]) -> dict[str, Any]:
        base: dict[str, Any] = self.selection.command() if self.selection is not None else {"record": False}
        if self.ignored is not None:  # file shares: ignore the others' files; skip what already ran
            skip_files = [*base.get("skip_files", []), *self.ignored[index]]
            return {**base, "skip_files": skip_files, "skip_nodeids": [*base.get("skip_nodeids", []), *sorted(skip)]}
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
                on_update=lambda state: self._on_update(self._summary()),
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

    def _parts(self) -> list[tuple[RunState, bool]]:
        return [(run.state, i == 0) for runs in self.attempts for i, run in enumerate(runs)]

    def _summary(self) -> PartsSummary:
        """For `get_run` while the run goes: counts added up on each finished test (no merge)."""
        return PartsSummary(self._parts(), self.app.redactor.redact, shared_collection=self.ignored is None)

    def _merge(self) -> RunState:
        parts = self._parts()
        merged = RunState.merged(
            parts, self.request.root, self.app.redactor.redact, shared_collection=self.ignored is None
        )
        finals = [runs[-1].state.exit_code for runs in self.attempts if runs]
        codes = [code for code in finals if code is not None]
        merged.exit_code = worst_exit(codes) if codes and len(codes) == len(finals) else None
        if self.crashes and merged.exit_code is None and codes:
            merged.exit_code = worst_exit(codes)
        return merged

    def _merge_records(self) -> dict[str, Any] | None:
        """The children's `record` events as one, with what any of them imported (learned
        pre-imports). With file shares each first child collected its own files: their
        collections add up, and only the selection's own skips count as skipped (not the files a
        child left to the others, nor what a replacement skipped as done)."""
        events = [run.state.record for runs in self.attempts for run in runs]
        merged = merge_records(events)
        if merged is None:
            return None
        merged["imported"] = sorted({str(m) for e in events if e is not None for m in e.get("imported", [])})
        if self.ignored is None:
            return merged
        firsts = [runs[0].state.record for runs in self.attempts if runs and runs[0].state.record is not None]
        plan = self.selection.plan if self.selection is not None else None
        own_skips = set(plan.skip_files) if plan is not None else set()
        merged["collected"] = {rel: ids for event in firsts for rel, ids in dict(event.get("collected", {})).items()}
        merged["ignored"] = sorted({str(f) for e in firsts for f in e.get("ignored", []) if str(f) in own_skips})
        merged["unaffected"] = sum(int(event.get("unaffected", 0)) for event in firsts)
        return merged

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
        extra = {**super().extra(), "workers": self.workers}
        if self.replacements:
            extra["replaced_workers"] = self.replacements
        return extra
