"""One run's affected-test work: before the run, the plan (what to skip); after it, the records.

`prepare()` opens the root's test database, snapshots the root and computes the plan (with
`affected`), `Selection.command()` is what the child's `Recorder` gets, and `finish()` maps what
each test executed to block checksums and writes the run's records in one transaction. Both are
blocking (file walks, parsing, SQLite): call them through `anyio.to_thread`.

The fingerprint a record is valid under joins the zygote's environment fingerprint (interpreter
and installed packages), pytest's configuration files (every `conftest.py`, the ini files) and
the non-Python files under the root: a change to any of them selects every test recorded before.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tools.test_runner import preimports
from tools.test_runner.environment import config_files, digest
from tools.test_runner.selection import store
from tools.test_runner.selection.blocks import VERSION as BLOCKS_VERSION
from tools.test_runner.selection.blocks import FileBlocks, parse_blocks
from tools.test_runner.selection.plan import IMPORT_PREFIX, LAZY_PREFIX, STATE_PREFIX, Plan, make_plan
from tools.test_runner.selection.snapshot import Snapshot, signature, take
from tools.test_runner.testdb import TestDB

logger = logging.getLogger("mcp_server.test_runner")

MAX_PARSE_BYTES = 4 * 1024 * 1024
MAX_KEPT_BYTES = 32 * 1024 * 1024


@dataclass
class Selection:
    root: Path
    affected: bool
    record: bool
    env_fp: str
    db: TestDB | None = None
    warning: str | None = None
    stored: store.Stored = field(default_factory=store.Stored)
    snapshot: Snapshot = field(default_factory=Snapshot)
    config: dict[str, str] = field(default_factory=dict)
    plan: Plan | None = None
    basis: Plan | None = None
    """The plan computed before the run (also for a full run): which records were stale."""
    unaffected: set[str] = field(default_factory=set)
    """A full run's tests whose record is still valid: they run, untraced (their dependencies
    cannot have changed; only their outcome is updated)."""
    parsed: dict[str, tuple[str, FileBlocks]] = field(default_factory=dict)
    sources: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """Files the run executed, read as it ended (`keep_sources`, before the answer): the records
    are written after it, and a file an agent edits in between is parsed from these bytes."""
    all_unaffected: bool = False
    """A full run in which every test collected last time is unaffected: nothing is traced, not
    even collection (a test that was not there last time gets no record, and runs next time)."""

    def env(self, others_digest: str) -> str:
        config = digest(f"{path} {sig}" for path, sig in sorted(self.config.items()))
        return f"{self.env_fp}|{config}|{others_digest}|blocks{BLOCKS_VERSION}"

    def import_modules(self) -> list[list[str]]:
        """The project modules (name, file) the child imports before collecting, whose state it
        digests (`recorder.Recorder`): those the runs before had imported by then."""
        imports: dict[str, Any] = dict(self.stored.state.get("imports", {}))
        modules = imports.get("modules") if imports.get("env") == self.env(self.snapshot.others_digest()) else None
        try:
            return [[str(name), str(file)] for name, file in modules or []]
        except (TypeError, ValueError):
            return []

    def command(self) -> dict[str, Any]:
        command: dict[str, Any] = {"record": self.record and self.db is not None}
        if command["record"] or (self.plan is not None and self.plan.verify is not None):
            command["import_modules"] = self.import_modules()
        if self.plan is not None:
            command.update(self.plan.command())
        if self.unaffected and command["record"]:
            command["no_trace"] = sorted(self.unaffected)
            command["trace_collection"] = not self.all_unaffected
        return command

    def blocks(self, rel: str, sig: str | None = None) -> FileBlocks | None:
        """The blocks of `rel` as it was when its stat signature was `sig` (default: the snapshot's;
        parse cache by signature); None if unreadable, or edited since (its bytes then are gone)."""
        if sig is None:
            sig = self.snapshot.python.get(rel) or signature(str(self.root / rel))
        if sig == "-":
            return None
        cached = self._cached(rel, sig)
        if cached is not None:
            return cached
        kept = self.sources.pop(rel, None)
        source = kept[1] if kept is not None and kept[0] == sig else self._read(rel, sig)
        if source is None:
            return None
        blocks = parse_blocks(source)
        self.parsed[rel] = (sig, blocks)
        return blocks

    def _cached(self, rel: str, sig: str) -> FileBlocks | None:
        for cache in (self.parsed, self.stored.files):
            cached = cache.get(rel)
            if cached is not None and cached[0] == sig:
                return cached[1]
        return None

    def _read(self, rel: str, sig: str) -> bytes | None:
        """The bytes of `rel` if it still has the signature `sig` once read, else None."""
        try:
            with open(self.root / rel, "rb") as f:
                source = f.read(MAX_PARSE_BYTES + 1)
        except OSError:
            return None
        if signature(str(self.root / rel)) != sig:
            return None  # edited since `sig` was taken: these bytes may not be what ran (or runs)
        return source

    def keep_sources(self, event: dict[str, Any] | None, after: Snapshot) -> None:
        """Read now (the run has ended, its answer not yet sent) the files it executed whose blocks
        are not known at their present signature, so that the records written after the answer
        parse what ran even if an agent edits a file first. Bounded (`MAX_KEPT_BYTES`); a file
        not kept is read at write time, and a record it cannot check is not written (the test
        then runs next time)."""
        budget = MAX_KEPT_BYTES
        for rel in (event or {}).get("files", []):
            rel = str(rel)
            sig = after.python.get(rel)
            before = self.snapshot.python.get(rel)
            if sig is None or sig == "-" or (before is not None and before != sig):
                continue  # not a file of the tree, or edited during the run (no record either way)
            if self._cached(rel, sig) is not None:
                continue
            source = self._read(rel, sig)
            if source is None:
                continue
            budget -= len(source)
            if budget < 0:
                return
            self.sources[rel] = (sig, source)

    def close(self) -> None:
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None


def _diff(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


def _known(stored: Any) -> dict[str, tuple[str, str]]:
    """The non-Python files of the last state as (signature, content key); an entry of an older
    format (a signature alone) has no key, so it counts as changed once."""
    if not isinstance(stored, dict):
        return {}
    return {
        str(rel): (str(value[0]), str(value[1]))
        for rel, value in stored.items()
        if isinstance(value, list) and len(value) == 2
    }


def prepare(folder: Path | None, root: Path, env_fp: str, *, affected: bool, record: bool) -> Selection:
    sel = Selection(root=root, affected=affected, record=record, env_fp=env_fp)
    if folder is None:
        if affected:
            sel.plan = Plan(mode="all")
        return sel
    try:
        sel.db = TestDB(folder)
        sel.warning = sel.db.warning
        sel.stored = store.load(sel.db)
    except (sqlite3.Error, OSError) as exc:
        sel.close()
        sel.warning = f"the test database cannot be used ({exc}): nothing recorded, every test runs"
        logger.warning("%s", sel.warning)
        if affected:
            sel.plan = Plan(mode="all")
        return sel
    sel.snapshot = take(root, _known(sel.stored.state.get("others")))
    sel.config = {path: signature(path) for path in config_files(root)}
    if not affected and not record:
        return sel
    stored = sel.stored
    changes: list[str] = []
    last_config = stored.state.get("config")
    if last_config is not None:
        changes += [_relative(root, p) for p in _diff(last_config, sel.config)]
    last_others = stored.state.get("others")
    if last_others is not None:
        last = {rel: key for rel, (_, key) in _known(last_others).items()}
        changes += _diff(last, sel.snapshot.keys)

    def current(rel: str) -> frozenset[str] | None:
        blocks = sel.blocks(rel)
        return blocks.checksums if blocks is not None else None

    def marks(rel: str) -> tuple[frozenset[str], frozenset[str]]:
        blocks = sel.blocks(rel)
        return (blocks.stateful, blocks.cached) if blocks is not None else (frozenset(), frozenset())

    plan = make_plan(
        stored.records,
        stored.depsets,
        stored.blocks,
        current,
        sel.env(sel.snapshot.others_digest()),
        stored.collected,
        changes,
        stored.edges,
        stored.leaves,
        marks,
    )
    sel.basis = plan
    if affected:
        sel.plan = plan
    else:  # a full run traces the tests whose record depends on the import state (unchecked)
        sel.unaffected = plan.valid - plan.pending
        known = [nodeid for nodeids in stored.collected.values() for nodeid in nodeids]
        sel.all_unaffected = plan.mode == "affected" and bool(known) and plan.valid.issuperset(known)
    return sel


def _relative(root: Path, path: str) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return path


def finish(
    sel: Selection,
    event: dict[str, Any] | None,
    outcomes: dict[str, tuple[str, float]],
    *,
    partial: bool,
    after: Snapshot | None = None,
) -> None:
    """Write what the run recorded (one transaction). `partial`: the run selected node ids, so
    what it collected is not each module's full list. `after`: the root as the run ended (taken
    now if None; written later, the records must not take an edit made since for what ran)."""
    if sel.db is None or not sel.record or event is None:
        return
    if after is None:
        after = take(sel.root, sel.snapshot.known())
    files = [str(f) for f in event.get("files", [])]
    pairs = event.get("pairs", [])

    def blocks_for(rel: str) -> FileBlocks | None:
        now = after.python.get(rel) or signature(str(sel.root / rel))
        before = sel.snapshot.python.get(rel)
        if before is not None and before != now:
            return None  # edited during the run: what ran is not what is there now
        return sel.blocks(rel, now)

    file_blocks = {rel: blocks_for(rel) for rel in files}
    checksums: list[tuple[str, str | None]] = []
    for index, line in pairs:
        rel = files[int(index)]
        blocks = file_blocks.get(rel)
        checksums.append((rel, blocks.checksum_at(int(line)) if blocks is not None else None))

    def add(deps: dict[str, set[str]], keys: list[int], prefix: str = "") -> bool:
        for key in keys:
            if key < 0:
                return False
            rel, checksum = checksums[key]
            if checksum is None:
                return False
            deps[prefix + rel].add(checksum)
        return True

    file_of = {nodeid: rel for rel, ids in event.get("collected", {}).items() for nodeid in ids}
    modules: dict[str, list[int]] = event.get("modules", {})
    refs: dict[str, list[int]] = event.get("refs", {})
    fixtures: dict[str, list[int]] = event.get("fixtures", {})
    uses: dict[str, list[str]] = event.get("uses", {})
    shared: list[int] = event.get("shared", [-1])
    lazy: list[int] = event.get("lazy", [])
    digests = event.get("digests")
    state: dict[str, set[str]] = {}
    if isinstance(digests, dict) and digests and all(isinstance(d, str) for d in digests.values()):
        state = {STATE_PREFIX + str(name): {str(d)} for name, d in digests.items()}
    writes: list[store.TestWrite] = []
    for nodeid, keys in event.get("tests", {}).items():
        if nodeid not in outcomes:
            continue
        outcome, duration = outcomes[nodeid]
        rel = file_of.get(nodeid, nodeid.split("::")[0])
        deps: dict[str, set[str]] = defaultdict(set)
        ok = add(deps, keys) and add(deps, modules.get(rel, []))
        ok = ok and add(deps, shared, IMPORT_PREFIX) and add(deps, lazy, LAZY_PREFIX)
        deps.update(state)
        for name in uses.get(nodeid, []):
            ok = ok and add(deps, fixtures.get(name, []))
        own = file_blocks.get(rel) if rel in file_blocks else blocks_for(rel)
        ok = ok and own is not None
        if own is not None:
            deps[rel].add(own.file_checksum)
        for index in refs.get(rel, []):
            ref = file_blocks.get(files[int(index)])
            if ref is None:
                ok = False
            else:
                deps[files[int(index)]].add(ref.module)
        frozen = {f: sorted(c) for f, c in deps.items()} if ok else None
        writes.append(store.TestWrite(nodeid, rel, outcome, duration, frozen))
    fresh = {w.nodeid for w in writes}
    for nodeid in event.get("untraced", []):
        if nodeid in outcomes:
            rel = file_of.get(nodeid, nodeid.split("::")[0])
            writes.append(store.TestWrite(nodeid, rel, outcomes[nodeid][0], outcomes[nodeid][1], None, keep=True))
    for nodeid in event.get("lost", []):
        if nodeid in outcomes:
            rel = file_of.get(nodeid, nodeid.split("::")[0])
            writes.append(store.TestWrite(nodeid, rel, outcomes[nodeid][0], outcomes[nodeid][1], None))
    env = sel.env(after.others_digest())
    if state and event.get("digests_at") == "import":
        writes = _rebased(sel, writes, state, env)
    store.save(
        sel.db,
        env=env,
        tests=writes,
        collected={} if partial else event.get("collected", {}),
        files=sel.parsed,
        state={"config": sel.config, "others": after.known(), **_import_state(sel, event, after)},
        edges=_edge_write(sel, event, checksums, fresh, after),
        also=lambda conn: preimports.learn(conn, sel.env_fp, event.get("imported", [])),
    )


def _rebased(
    sel: Selection, writes: list[store.TestWrite], state: dict[str, set[str]], env: str
) -> list[store.TestWrite]:
    """`writes`, plus the records that still hold but name another state than this run found
    (taken at the end of the first run's collection, or in another zygote whose hash seed differs:
    attrs' generated `__hash__` holds a string's hash) with this one: none of what ran at import
    changed for them, so the state is the same, measured differently. Without this, their next
    import-time check would fail once, and run every test."""
    basis = sel.basis
    if basis is None or basis.mode != "affected" or basis.env != env:
        return writes
    stored = sel.stored
    states = {block: where for block, where in stored.blocks.items() if where[0].startswith(STATE_PREFIX)}
    moved: dict[int, dict[str, list[str]] | None] = {}
    """Dependency set -> its dependencies with this run's state, or None if it needs none (one
    pass per set, not per test: most of a full run's tests share theirs)."""

    def rebase(depset: int) -> dict[str, list[str]] | None:
        if depset not in moved:
            ids = stored.depsets.get(depset)
            old: dict[str, set[str]] = defaultdict(set)
            for block in ids if ids is not None else ():
                if (where := states.get(block)) is not None:
                    old[where[0]].add(where[1])
            frozen = None
            if ids is not None and old and old != state:
                deps: dict[str, set[str]] = defaultdict(set)
                for block in ids:
                    where = stored.blocks.get(block)
                    if where is not None and block not in states:
                        deps[where[0]].add(where[1])
                frozen = {f: sorted(c) for f, c in deps.items()}
                frozen.update((f, sorted(c)) for f, c in state.items())
            moved[depset] = frozen
        return moved[depset]

    kept = {w.nodeid: w for w in writes if w.keep}
    written = {w.nodeid for w in writes if not w.keep}
    out = [w for w in writes if not w.keep]
    for nodeid in basis.valid - basis.pending - written:
        record = stored.records.get(nodeid)
        if record is None or record.depset is None or record.env != env:
            continue
        frozen = rebase(record.depset)
        if frozen is None:
            continue
        run = kept.pop(nodeid, None)
        outcome, duration = (run.outcome, run.duration) if run is not None else (record.outcome, record.duration)
        out.append(store.TestWrite(nodeid, record.file, outcome, duration, frozen))
    return out + list(kept.values())


def _import_state(sel: Selection, event: dict[str, Any], after: Snapshot) -> dict[str, dict[str, Any]]:
    """The project modules to import (and digest) before collecting next time: this run's, then
    the earlier ones it did not import (a run that collected less), while their file is there."""
    if not isinstance(event.get("digests"), dict):
        return {}  # the child did not import them (nothing recorded)
    now = [[str(n), str(f)] for n, f in event.get("import_modules", [])]
    names = {n for n, _ in now}
    now += [[n, f] for n, f in sel.import_modules() if n not in names and f in after.python]
    return {"imports": {"env": sel.env(after.others_digest()), "modules": now}}


def _edge_write(
    sel: Selection, event: dict[str, Any], checksums: list[tuple[str, str | None]], fresh: set[str], after: Snapshot
) -> store.EdgeWrite:
    """The run's edges as blocks; stale ones may go when every test that was stale before the run
    has been recorded again (with the same environment: another one starts the edges afresh)."""
    found: list[tuple[tuple[str, str], tuple[str, str]]] = []
    for caller, callee in event.get("edges", []):
        (a, x), (b, y) = checksums[int(caller)], checksums[int(callee)]
        if x is not None and y is not None and (a, x) != (b, y):
            found.append(((a, x), (b, y)))
    leaves = [(rel, checksum) for rel, checksum in (checksums[int(k)] for k in event.get("leaves", [])) if checksum]
    basis = sel.basis
    prune = basis is not None and basis.mode == "affected" and not (basis.stale() - fresh)

    def current(rel: str) -> frozenset[str] | None:
        blocks = sel.blocks(rel, after.python.get(rel) or signature(str(sel.root / rel)))
        return blocks.checksums if blocks is not None else None

    return store.EdgeWrite(found, prune, current, leaves)


def selection_result(sel: Selection, event: dict[str, Any] | None, selected: list[str]) -> dict[str, Any] | None:
    """The `selection` field of an affected run's result."""
    plan = sel.plan
    if plan is None:
        return None
    if event is not None:
        selected = [str(n) for n in event.get("selected", selected)]
    ignored = [str(f) for f in event.get("ignored", [])] if event is not None else []
    unaffected = int(event.get("unaffected", 0)) if event is not None else 0
    reasons = plan.reasons(selected)
    if plan.verify is not None:  # tests depending on a changed import-time function: was the state the same?
        reasons["import_state"] = "changed" if event is None or event.get("widened") else "same"
    return {
        "mode": plan.mode,
        "selected": len(selected),
        "skipped_unaffected": plan.skipped_count(ignored, unaffected),
        "reasons": reasons,
    }


class _Tables:
    """One file table and one (file, line) table for the merged record."""

    def __init__(self) -> None:
        self.files: list[str] = []
        self._files: dict[str, int] = {}
        self.pairs: list[list[int]] = []
        self._pairs: dict[tuple[int, int], int] = {}

    def file(self, rel: str) -> int:
        if rel not in self._files:
            self._files[rel] = len(self.files)
            self.files.append(rel)
        return self._files[rel]

    def pair(self, rel: str, line: int) -> int:
        key = (self.file(rel), line)
        if key not in self._pairs:
            self._pairs[key] = len(self.pairs)
            self.pairs.append([key[0], line])
        return self._pairs[key]


def merge_records(events: list[dict[str, Any] | None]) -> dict[str, Any] | None:
    """The `record` events of a sharded run's children as one (their file and line tables are
    each child's own: re-indexed here). Collection data comes from the first; selected tests,
    tests and fixtures from all."""
    present = [e for e in events if e is not None]
    if not present:
        return None
    tables = _Tables()
    first = present[0]
    merged: dict[str, Any] = {
        "e": "record",
        "tests": {},
        "lost": [],
        "untraced": [],
        "fixtures": {},
        "uses": {},
        "modules": {},
        "shared": [],
        "lazy": [],
        "traced_startup": all(e.get("traced_startup", False) for e in present),
        "digests": first.get("digests"),
        "import_modules": first.get("import_modules", []),
        "widened": any(e.get("widened") for e in present),
        "edges": [],
        "leaves": [],
        "refs": {},
        "collected": first.get("collected", {}),
        "selected": [],
        "ignored": first.get("ignored", []),
        "unaffected": first.get("unaffected", 0),
    }
    for event in present:
        files = [str(f) for f in event.get("files", [])]
        pairs = event.get("pairs", [])

        def keys(ks: list[int], files: list[str] = files, pairs: list[list[int]] = pairs) -> list[int]:
            out = []
            for k in ks:
                k = int(k)
                out.append(k if k < 0 else tables.pair(files[int(pairs[k][0])], int(pairs[k][1])))
            return out

        for nodeid, ks in event.get("tests", {}).items():
            merged["tests"][nodeid] = keys(ks)
        merged["lost"] += list(event.get("lost", []))
        merged["untraced"] += list(event.get("untraced", []))
        for name, ks in event.get("fixtures", {}).items():
            merged["fixtures"][name] = sorted(set(merged["fixtures"].get(name, [])) | set(keys(ks)))
        merged["uses"].update(event.get("uses", {}))
        for rel, ks in event.get("modules", {}).items():
            merged["modules"].setdefault(rel, keys(ks))
        merged["shared"] = sorted(set(merged["shared"]) | set(keys(event.get("shared", [-1]))))
        merged["lazy"] = sorted(set(merged["lazy"]) | set(keys(event.get("lazy", []))))
        merged["edges"] += [keys([int(a), int(b)]) for a, b in event.get("edges", [])]
        merged["leaves"] = sorted(set(merged["leaves"]) | set(keys(event.get("leaves", []))))
        for rel, ks in event.get("refs", {}).items():
            merged["refs"].setdefault(rel, [tables.file(files[int(k)]) for k in ks])
        merged["selected"] += list(event.get("selected", []))
    merged["files"] = tables.files
    merged["pairs"] = tables.pairs
    return merged
