"""Which recorded tests a run can skip: pure logic over the records and the current blocks.

A recorded test is unaffected when it passed (or skipped) last time, under the same environment
fingerprint (interpreter and packages, pytest configuration, non-Python files), and no block it
depends on is changed or reaches a changed block through the recorded call edges. A block is
changed ("gone") when its checksum is no longer in its file (a missing file counts as changed).
The edges matter for state cached across tests: a test that only hit a cache (`tz.gettz`'s
instances) did not run what filled it, but it ran the function that called the filler (the
cache lookup), and an edge leads from there to the edited function. Every block reaching a
changed one is too wide (a test that called `parse()` would be selected for any helper `parse`
can reach through a branch it did not take), so a block that reaches a changed one selects its
tests only where a cache can be: it stores into state outliving the call (`blocks.is_stateful`)
and was a leaf (called no project code) in some test, as a cache lookup that hits is; or it
calls a function behind a caching decorator (`lru_cache`) that reaches the changed block. A test module is not
collected at all when every test it had last time is unaffected. Everything else runs:
failures, tests with no record, tests whose record has no usable data.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

FAILING = frozenset({"failed", "error", "crashed", "timeout"})
IMPORT_PREFIX = "/import/"
"""Before a block's file in a test's dependencies: the block ran while the project imported itself
(start-up and collection), not in the test; the test depends on it through the state it left."""
LAZY_PREFIX = "/lazy/"
"""The same for a module imported later, during some test (its state is not digested)."""
STATE_PREFIX = "/state/"
"""Before a module's name, with the digest of its state after the project's import as the
"checksum" (`statedigest.py`): the state the test ran with."""
PREFIXES = (IMPORT_PREFIX, LAZY_PREFIX)


def real_file(file: str) -> str:
    """A dependency's file without its prefix (relative paths never start with a slash)."""
    for prefix in PREFIXES:
        if file.startswith(prefix):
            return file[len(prefix) :]
    return file


MAX_CHANGED_LISTED = 100
EDGE_SHIFT = 32
EDGE_MASK = (1 << EDGE_SHIFT) - 1


def pack_edge(caller: int, callee: int) -> int:
    """An edge as one integer, ordered by callee (the callers of a block are one range)."""
    return (callee << EDGE_SHIFT) | caller


def reaching(gone: Iterable[int], edges: Sequence[int]) -> dict[int, int]:
    """Every block from which a gone block is reachable through `edges` (sorted packed edges),
    the gone blocks included, each with one gone block it reaches (for the reason's file)."""
    origin = {block: block for block in gone}
    if not edges:
        return origin
    todo = list(origin)
    while todo:
        block = todo.pop()
        start = bisect_left(edges, block << EDGE_SHIFT)
        stop = bisect_left(edges, (block + 1) << EDGE_SHIFT, start)
        for i in range(start, stop):
            caller = edges[i] & EDGE_MASK
            if caller not in origin:
                origin[caller] = origin[block]
                todo.append(caller)
    return origin


def _callers(block: int, edges: Sequence[int]) -> Iterable[int]:
    start = bisect_left(edges, block << EDGE_SHIFT)
    stop = bisect_left(edges, (block + 1) << EDGE_SHIFT, start)
    return (edges[i] & EDGE_MASK for i in range(start, stop))


Marks = Callable[[str], tuple[frozenset[str], frozenset[str]]]
"""A file's (stateful, cached) block checksums now (`blocks.FileBlocks`)."""


def cache_points(
    origin: Mapping[int, int],
    gone: Collection[int],
    edges: Sequence[int],
    leaves: Collection[int],
    blocks: Mapping[int, tuple[str, str]],
    marks: Marks | None,
) -> dict[int, int]:
    """The blocks whose tests a change reaches (each with the changed block it leads to): the
    changed blocks, and those reaching one (`origin`) where a cache can be (see the module's
    text); every reaching block when `marks` is None."""
    if marks is None:
        return dict(origin)
    points = {block: block for block in gone}
    cache: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for block, target in origin.items():
        where = blocks.get(block)
        if where is None:
            continue
        if where[0] not in cache:
            cache[where[0]] = marks(where[0])
        stateful, cached = cache[where[0]]
        if block in leaves and where[1] in stateful:
            points.setdefault(block, target)
        if where[1] in cached:
            for caller in _callers(block, edges):
                points.setdefault(caller, target)
    return points


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
    pending: set[str] = field(default_factory=set)
    """Tests in `valid` that depend on a changed block only through the state the project's
    import left (`IMPORT_PREFIX`): unaffected if that state is the same as when they ran
    (`STATE_PREFIX`). The child checks (`verify`: module -> digest) before collecting, and runs
    everything if it is not."""
    verify: dict[str, str] | None = None
    records: dict[str, TestRecord] = field(default_factory=dict)
    collected: dict[str, list[str]] = field(default_factory=dict)
    env: str = ""

    def stale(self) -> set[str]:
        """The tests recorded under this environment whose record no longer holds: until each has
        been recorded again, the edges into changed blocks are still needed."""
        return {n for n, r in self.records.items() if r.env == self.env and n not in self.valid}

    def command(self) -> dict[str, Any]:
        """For the child's recorder: the files not to collect, the unaffected tests of the others,
        and `keep`: in a module with unaffected tests, the ones that run (its other classes and
        functions are then not even collected)."""
        skipped = set(self.skip_files)
        nodeids = sorted(n for n in self.skip_nodeids if self.records[n].file not in skipped)
        partial = {self.records[n].file for n in nodeids}
        keep = sorted(n for f in partial for n in self.collected.get(f, ()) if n not in self.skip_nodeids)
        command: dict[str, Any] = {"skip_files": self.skip_files, "skip_nodeids": nodeids, "keep": keep}
        if self.verify is not None:
            command["verify"] = self.verify
        return command

    def widen(self) -> None:
        """Run the `pending` tests too, unchecked (a sharded run: every child must decide alike)."""
        if self.verify is None:
            return
        self.valid -= self.pending
        self.skip_nodeids -= self.pending
        self.skip_files = [f for f in self.skip_files if all(n in self.skip_nodeids for n in self.collected[f])]
        self.pending = set()
        self.verify = None

    def reasons(self, selected: Iterable[str]) -> dict[str, Any]:
        """Why each selected test runs, counted: no record, failing last time, no usable data (none
        recorded, or recorded under another environment than this run's); the rest ran because a
        file they depend on changed (`changed_files`)."""
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
            elif record.depset is None or record.env != self.env:
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
    edges: Sequence[int] = (),
    leaves: Collection[int] = (),
    marks: Marks | None = None,
) -> Plan:
    """`depsets` maps a dependency set to its block ids, `blocks` a block id to its (file,
    checksum); `current(file)` gives the file's block checksums now (None if it is gone or
    unreadable); `global_changes` names what changed in the environment (configuration files,
    non-Python files) for the `changed_files` reason; `edges` are the recorded caller -> callee
    edges between blocks (`pack_edge`, sorted), `leaves` the blocks that were a leaf in some
    test, `marks` the stateful and cached blocks of a file (None: every block reaching a
    changed one selects its tests). A test that depends on a changed block only through the
    state the project's import left is `pending` (see `Plan.pending`)."""
    changed: set[str] = set(global_changes)
    usable = [r for r in records.values() if r.env == env]
    if not usable:
        return Plan(
            mode="all", changed_files=sorted(changed), records=dict(records), collected=dict(collected), env=env
        )
    cache: dict[str, frozenset[str] | None] = {}
    gone: set[int] = set()
    """The recorded blocks that are no longer there (edited, or their file is gone)."""
    imported: set[int] = set()
    """Gone blocks that ran while the project imported itself (`IMPORT_PREFIX`)."""
    states: dict[int, tuple[str, str]] = {}
    """State blocks (`STATE_PREFIX`): id -> (module, digest)."""
    for block_id, (file, checksum) in blocks.items():
        if file.startswith(STATE_PREFIX):
            states[block_id] = (file[len(STATE_PREFIX) :], checksum)
            continue
        real = real_file(file)
        if real not in cache:
            cache[real] = current(real)
        present = cache[real]
        if present is None or checksum not in present:
            if file.startswith(IMPORT_PREFIX):
                imported.add(block_id)
            else:
                gone.add(block_id)  # a lazy import's block included: its state is not digested
    own = {b for b in gone if not blocks[b][0].startswith(LAZY_PREFIX)}
    origin = cache_points(reaching(own, edges), own, edges, leaves, blocks, marks) if own else {}
    for block in gone - own:
        origin[block] = block
    verdicts: dict[int, int] = {}
    """Dependency set -> 0 affected, 1 unaffected, 2 unaffected if the import state is the same."""
    expected: dict[int, dict[str, str]] = {}
    """Dependency set (verdict 2) -> the state it ran with (module -> digest)."""

    def verdict_of(depset: int) -> int:
        verdict = verdicts.get(depset)
        if verdict is None:
            ids = depsets.get(depset)
            if ids is None:
                verdict = 0  # its row is missing or unreadable
            elif origin and not origin.keys().isdisjoint(ids):
                verdict = 0
                changed.update(real_file(blocks[origin[i]][0]) for i in origin.keys() & set(ids))
            elif imported.isdisjoint(ids):
                verdict = 1
            else:
                state = dict(states[i] for i in ids if i in states)
                verdict = 2 if state else 0  # no state recorded: nothing to compare
                if state:
                    expected[depset] = state
                changed.update(real_file(blocks[i][0]) for i in imported.intersection(ids))
            verdicts[depset] = verdict
        return verdict

    valid: set[str] = set()
    pending: dict[str, int] = {}
    for record in usable:
        if record.depset is not None:
            verdict = verdict_of(record.depset)
            if verdict:
                valid.add(record.nodeid)
            if verdict == 2:
                pending[record.nodeid] = record.depset
    verify: dict[str, str] | None = None
    if pending:
        states_seen = {tuple(sorted(expected[d].items())) for d in set(pending.values())}
        if len(states_seen) == 1:  # one state to compare the present one with
            verify = dict(next(iter(states_seen)))
        else:  # tests that ran with different states: at most some could be right
            valid -= pending.keys()
            pending = {}
    skip = {nodeid for nodeid in valid if records[nodeid].outcome not in FAILING}
    skip_files = sorted(f for f, ids in collected.items() if ids and all(i in skip for i in ids))
    return Plan(
        mode="affected",
        skip_files=skip_files,
        skip_nodeids=skip,
        valid=valid,
        changed_files=sorted(c for c in changed if c),
        pending=set(pending),
        verify=verify,
        records=dict(records),
        collected=dict(collected),
        env=env,
    )
