"""Which recorded tests a run can skip: pure logic over the records and the current blocks.

A recorded test is unaffected when it passed (or skipped) last time, under the same environment
fingerprint (interpreter and packages, pytest configuration, non-Python files), and every block
checksum it depends on is still present in its file (a missing file counts as changed). A test
module is not collected at all when every test it had last time is unaffected. Everything else
runs: failures, tests with no record, tests whose record has no usable data.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FAILING = frozenset({"failed", "error", "crashed", "timeout"})
MAX_CHANGED_LISTED = 100


@dataclass(frozen=True, slots=True)
class TestRecord:
    __test__ = False

    nodeid: str
    file: str
    outcome: str
    duration: float
    env: str
    depset: int | None
    """Id of the dependency set; None: no usable data (the tracer was disturbed, a file changed
    during the run)."""


@dataclass
class Plan:
    mode: str
    """"affected" (records were used) or "all" (no usable record: everything runs)."""
    skip_files: list[str] = field(default_factory=list)
    skip_nodeids: set[str] = field(default_factory=set)
    valid: set[str] = field(default_factory=set)
    """Tests whose record still holds (nothing they executed changed), failing ones included: a
    full run runs them untraced (only their outcome is new)."""
    changed_files: list[str] = field(default_factory=list)
    records: dict[str, TestRecord] = field(default_factory=dict)
    collected: dict[str, list[str]] = field(default_factory=dict)

    def command(self) -> dict[str, Any]:
        """For the child's recorder: the files not to collect, the unaffected tests of the others,
        and `keep`: in a module with unaffected tests, the ones that run (its other classes and
        functions are then not even collected)."""
        skipped = set(self.skip_files)
        nodeids = sorted(n for n in self.skip_nodeids if self.records[n].file not in skipped)
        partial = {self.records[n].file for n in nodeids}
        keep = sorted(n for f in partial for n in self.collected.get(f, ()) if n not in self.skip_nodeids)
        return {"skip_files": self.skip_files, "skip_nodeids": nodeids, "keep": keep}

    def reasons(self, selected: Iterable[str]) -> dict[str, Any]:
        """Why each selected test runs, counted: no record, failing last time, no usable data;
        the rest ran because a file they depend on changed (`changed_files`)."""
        new = failed = no_data = 0
        selected = list(selected)
        if self.mode == "all":  # nothing usable recorded for this environment
            no_data, selected = len(selected), []
        for nodeid in selected:
            record = self.records.get(nodeid)
            if record is None:
                new += 1
            elif record.outcome in FAILING:
                failed += 1
            elif record.depset is None:
                no_data += 1
        changed = self.changed_files[:MAX_CHANGED_LISTED]
        reasons: dict[str, Any] = {"changed_files": changed, "new_tests": new, "failed_last": failed}
        reasons["no_data"] = no_data
        if len(self.changed_files) > MAX_CHANGED_LISTED:
            reasons["changed_files_more"] = len(self.changed_files) - MAX_CHANGED_LISTED
        return reasons

    def skipped_count(self, ignored_files: Iterable[str], deselected: int) -> int:
        return deselected + sum(len(self.collected.get(f, ())) for f in ignored_files)


def make_plan(
    records: Mapping[str, TestRecord],
    depsets: Mapping[int, Collection[int]],
    blocks: Mapping[int, tuple[str, str]],
    current: Callable[[str], frozenset[str] | None],
    env: str,
    collected: Mapping[str, list[str]],
    global_changes: Iterable[str] = (),
) -> Plan:
    """`depsets` maps a dependency set to its block ids, `blocks` a block id to its (file,
    checksum); `current(file)` gives the file's block checksums now (None if it is gone or
    unreadable); `global_changes` names what changed in the environment (configuration files,
    non-Python files) for the `changed_files` reason."""
    changed: set[str] = set(global_changes)
    usable = [r for r in records.values() if r.env == env]
    if not usable:
        return Plan(mode="all", changed_files=sorted(changed), records=dict(records), collected=dict(collected))
    cache: dict[str, frozenset[str] | None] = {}
    gone: set[int] = set()
    """The recorded blocks that are no longer there (edited, or their file is gone)."""
    for block_id, (file, checksum) in blocks.items():
        if file not in cache:
            cache[file] = current(file)
        present = cache[file]
        if present is None or checksum not in present:
            gone.add(block_id)
    verdicts: dict[int, bool] = {}

    def unaffected(depset: int) -> bool:
        verdict = verdicts.get(depset)
        if verdict is None:
            ids = depsets.get(depset)
            if ids is None:
                verdict = False  # its row is missing or unreadable
            elif not gone or gone.isdisjoint(ids):
                verdict = True
            else:
                verdict = False
                changed.update(blocks[i][0] for i in gone.intersection(ids))
            verdicts[depset] = verdict
        return verdict

    valid: set[str] = set()
    for record in usable:
        if record.depset is not None and unaffected(record.depset):
            valid.add(record.nodeid)
    skip = {nodeid for nodeid in valid if records[nodeid].outcome not in FAILING}
    skip_files = sorted(f for f, ids in collected.items() if ids and all(i in skip for i in ids))
    return Plan(
        mode="affected",
        skip_files=skip_files,
        skip_nodeids=skip,
        valid=valid,
        changed_files=sorted(c for c in changed if c),
        records=dict(records),
        collected=dict(collected),
    )
