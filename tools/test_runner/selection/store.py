"""The affected-test tables in the root's test database (`testdb.py`), and their reads and writes.

- `aff_tests`: one row per test: its file, last outcome and duration, the fingerprint it was
  recorded under, and its dependency set (shared by the tests that executed the same blocks);
- `aff_blocks`: each (file, block checksum) ever depended on, by id;
- `aff_deps`: dependency sets, deduplicated by hash: the block ids as a packed array (decoded in
  microseconds: every run reads them all; as JSON lists of checksums they cost ~0.2 s a run on
  python-dateutil), and the files they cover (JSON, for the test history);
- `aff_collected`: per test module, the node ids collected from it last time (a module is only
  skipped when every one of them is known and unaffected);
- `aff_files`: a parse cache, file -> (stat signature, blocks);
- `aff_state`: the last snapshot of configuration files and non-Python files (to name what changed);
- `aff_graph`: one row: the caller -> callee edges between blocks that runs recorded (the union
  over runs under one environment fingerprint, packed and sorted by callee, `plan.pack_edge`),
  and the blocks that were a leaf (called no project code) in some test. Edges and leaves
  touching a changed block are dropped once every test whose record that change made stale has
  been recorded again (until then a test that only hit a cache may still need them), and with
  the blocks they touch.

A run's records are written in one transaction (`save`). Blocking: call from a worker thread.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.test_runner.selection.blocks import FileBlocks
from tools.test_runner.selection.plan import EDGE_MASK, EDGE_SHIFT, TestRecord, pack_edge, real_file
from tools.test_runner.testdb import TestDB, register_schema

ID_TYPE = "I" if array("I").itemsize == 4 else "L"
EDGE_TYPE = "Q"
MAX_BLOCKS = 50_000
"""Past this many block rows, the ones no dependency set refers to any more are dropped."""

SCHEMA = """
DROP TABLE IF EXISTS aff_depsets;
CREATE TABLE IF NOT EXISTS aff_blocks (
    id INTEGER PRIMARY KEY, file TEXT NOT NULL, checksum TEXT NOT NULL, UNIQUE (file, checksum)
);
CREATE TABLE IF NOT EXISTS aff_deps (
    id INTEGER PRIMARY KEY, hash TEXT UNIQUE NOT NULL, blocks BLOB NOT NULL, files TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS aff_tests (
    nodeid TEXT PRIMARY KEY, file TEXT NOT NULL, outcome TEXT NOT NULL, duration REAL NOT NULL,
    env TEXT NOT NULL, depset INTEGER
);
CREATE TABLE IF NOT EXISTS aff_collected (file TEXT PRIMARY KEY, nodeids TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS aff_files (path TEXT PRIMARY KEY, sig TEXT NOT NULL, blocks TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS aff_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
DROP TABLE IF EXISTS aff_edges;
CREATE TABLE IF NOT EXISTS aff_graph (
    id INTEGER PRIMARY KEY CHECK (id = 0), env TEXT NOT NULL, edges BLOB NOT NULL, leaves BLOB NOT NULL
);
"""
register_schema("affected", SCHEMA)


@dataclass
class Stored:
    records: dict[str, TestRecord] = field(default_factory=dict)
    depsets: dict[int, Sequence[int]] = field(default_factory=dict)
    """Dependency set id -> the ids of the blocks it holds."""
    blocks: dict[int, tuple[str, str]] = field(default_factory=dict)
    """Block id -> (file, checksum)."""
    collected: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, tuple[str, FileBlocks]] = field(default_factory=dict)
    state: dict[str, dict[str, Any]] = field(default_factory=dict)
    edges: Sequence[int] = field(default_factory=lambda: array(EDGE_TYPE))
    """Caller -> callee edges between block ids (`plan.pack_edge`), sorted."""
    leaves: set[int] = field(default_factory=set)
    """Blocks that called no project code in some test."""


def _packed(blob: object, kind: str = EDGE_TYPE) -> array[int]:
    packed = array(kind)
    if isinstance(blob, bytes) and len(blob) % packed.itemsize == 0:
        packed.frombytes(blob)
    return packed


def load(db: TestDB) -> Stored:
    """Everything, in one read transaction. Rows that do not decode are skipped (no record:
    those tests run)."""
    stored = Stored()
    conn = db.conn
    conn.execute("BEGIN")
    try:
        for nodeid, file, outcome, duration, env, depset in conn.execute(
            "SELECT nodeid, file, outcome, duration, env, depset FROM aff_tests"
        ):
            stored.records[nodeid] = TestRecord(nodeid, file, outcome, float(duration), env, depset)
        for block_id, file, checksum in conn.execute("SELECT id, file, checksum FROM aff_blocks"):
            stored.blocks[int(block_id)] = (str(file), str(checksum))
        for depset_id, blob in conn.execute("SELECT id, blocks FROM aff_deps"):
            ids = array(ID_TYPE)
            if isinstance(blob, bytes) and len(blob) % ids.itemsize == 0:
                ids.frombytes(blob)
                stored.depsets[int(depset_id)] = ids
        for file, nodeids in conn.execute("SELECT file, nodeids FROM aff_collected"):
            try:
                stored.collected[file] = [str(n) for n in json.loads(nodeids)]
            except ValueError:
                continue
        for path, sig, blocks in conn.execute("SELECT path, sig, blocks FROM aff_files"):
            try:
                stored.files[path] = (sig, FileBlocks.from_json(json.loads(blocks)))
            except (ValueError, TypeError, IndexError):
                continue
        for key, value in conn.execute("SELECT key, value FROM aff_state"):
            try:
                stored.state[key] = dict(json.loads(value))
            except (ValueError, TypeError):
                continue
        for edges, leaves in conn.execute("SELECT edges, leaves FROM aff_graph"):
            stored.edges = _packed(edges)
            stored.leaves = set(_packed(leaves, ID_TYPE))
    finally:
        conn.execute("COMMIT")
    return stored


@dataclass
class TestWrite:
    __test__ = False

    nodeid: str
    file: str
    outcome: str
    duration: float
    deps: dict[str, list[str]] | None
    keep: bool = False
    """Ran untraced (its record was still valid): only the outcome and duration change."""


class _Ids:
    """Block ids in one write transaction: the known ones read once, new ones inserted."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.known = {(str(f), str(c)): int(i) for i, f, c in conn.execute("SELECT id, file, checksum FROM aff_blocks")}

    def of(self, file: str, checksum: str) -> int:
        key = (file, checksum)
        found = self.known.get(key)
        if found is None:
            cursor = self.conn.execute("INSERT INTO aff_blocks (file, checksum) VALUES (?, ?)", key)
            found = self.known[key] = int(cursor.lastrowid or 0)
        return found


def _depset_id(conn: sqlite3.Connection, ids: _Ids, deps: Mapping[str, list[str]]) -> int:
    blob = array(ID_TYPE, sorted({ids.of(f, c) for f, checksums in deps.items() for c in checksums})).tobytes()
    digest = hashlib.blake2b(blob, digest_size=16).hexdigest()
    row = conn.execute("SELECT id FROM aff_deps WHERE hash = ?", (digest,)).fetchone()
    if row is not None:
        return int(row[0])
    files = json.dumps({f: [] for f in sorted({real_file(f) for f in deps})}, separators=(",", ":"))
    cursor = conn.execute("INSERT INTO aff_deps (hash, blocks, files) VALUES (?, ?, ?)", (digest, blob, files))
    return int(cursor.lastrowid or 0)


def _drop_unused_blocks(conn: sqlite3.Connection, ids: _Ids) -> set[int]:
    """Drops the blocks no dependency set refers to (past `MAX_BLOCKS` rows); returns their ids."""
    if len(ids.known) <= MAX_BLOCKS:
        return set()
    used: set[int] = set()
    for (blob,) in conn.execute("SELECT blocks FROM aff_deps"):
        part = array(ID_TYPE)
        if isinstance(blob, bytes) and len(blob) % part.itemsize == 0:
            part.frombytes(blob)
            used.update(part)
    dropped = {i for i in ids.known.values() if i not in used}
    conn.executemany("DELETE FROM aff_blocks WHERE id = ?", [(i,) for i in dropped])
    return dropped


@dataclass
class EdgeWrite:
    """A run's edges, and how to tell which stored ones are stale."""

    found: Iterable[tuple[tuple[str, str], tuple[str, str]]] = ()
    """(caller (file, checksum), callee (file, checksum)) pairs this run recorded."""
    prune: bool = False
    """Every test made stale by a change has been recorded again: edges touching a block that is
    no longer in its file are dropped."""
    current: Callable[[str], frozenset[str] | None] = lambda file: None
    """A file's block checksums now (None: gone)."""
    leaves: Iterable[tuple[str, str]] = ()
    """Blocks (file, checksum) that called no project code in some test of this run."""


def _save_edges(conn: sqlite3.Connection, ids: _Ids, env: str, write: EdgeWrite, dropped: set[int]) -> None:
    row = conn.execute("SELECT env, edges, leaves FROM aff_graph WHERE id = 0").fetchone()
    same = row is not None and row[0] == env
    old = _packed(row[1]) if same else array(EDGE_TYPE)
    old_leaves = set(_packed(row[2], ID_TYPE)) if same else set()
    edges = set(old)
    for caller, callee in write.found:
        a, b = ids.of(*caller), ids.of(*callee)
        if a != b and max(a, b) <= EDGE_MASK:
            edges.add(pack_edge(a, b))
    leaves = old_leaves | {ids.of(*block) for block in write.leaves}
    stale = set(dropped)
    if write.prune and (edges or leaves):
        by_id = {i: key for key, i in ids.known.items()}
        files: dict[str, frozenset[str] | None] = {}
        for block in {e & EDGE_MASK for e in edges} | {e >> EDGE_SHIFT for e in edges} | leaves:
            key = by_id.get(block)
            if key is None:
                stale.add(block)
                continue
            if key[0] not in files:
                files[key[0]] = write.current(key[0])
            present = files[key[0]]
            if present is None or key[1] not in present:
                stale.add(block)
    if stale:
        edges = {e for e in edges if (e & EDGE_MASK) not in stale and (e >> EDGE_SHIFT) not in stale}
        leaves -= stale
    if same and len(edges) == len(old) and edges.issuperset(old) and leaves == old_leaves:
        return  # nothing new, nothing dropped
    blobs = array(EDGE_TYPE, sorted(edges)).tobytes(), array(ID_TYPE, sorted(leaves)).tobytes()
    conn.execute("INSERT OR REPLACE INTO aff_graph (id, env, edges, leaves) VALUES (0, ?, ?, ?)", (env, *blobs))


def save(
    db: TestDB,
    *,
    env: str,
    tests: Iterable[TestWrite],
    collected: Mapping[str, list[str]],
    files: Mapping[str, tuple[str, FileBlocks]],
    state: Mapping[str, dict[str, Any]],
    edges: EdgeWrite | None = None,
    also: Callable[[sqlite3.Connection], None] = lambda conn: None,
) -> None:
    """One transaction: the tests that ran, what was collected, the parse cache, the snapshots,
    the edges. Dependency sets no test refers to any more are dropped (and blocks, past
    `MAX_BLOCKS`)."""
    with db.transaction() as conn:
        ids = _Ids(conn)
        depset_ids: dict[str, int] = {}
        for test in tests:
            if test.keep:
                conn.execute(
                    "UPDATE aff_tests SET outcome = ?, duration = ? WHERE nodeid = ?",
                    (test.outcome, test.duration, test.nodeid),
                )
                continue
            depset: int | None = None
            if test.deps is not None:
                key = json.dumps(test.deps, sort_keys=True)
                if key not in depset_ids:
                    depset_ids[key] = _depset_id(conn, ids, test.deps)
                depset = depset_ids[key]
            conn.execute(
                "INSERT OR REPLACE INTO aff_tests (nodeid, file, outcome, duration, env, depset) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (test.nodeid, test.file, test.outcome, test.duration, env, depset),
            )
        for file, nodeids in collected.items():
            conn.execute(
                "INSERT OR REPLACE INTO aff_collected (file, nodeids) VALUES (?, ?)", (file, json.dumps(nodeids))
            )
            known = set(nodeids)
            stale = [
                (n,) for (n,) in conn.execute("SELECT nodeid FROM aff_tests WHERE file = ?", (file,)) if n not in known
            ]
            conn.executemany("DELETE FROM aff_tests WHERE nodeid = ?", stale)
        conn.executemany(
            "INSERT OR REPLACE INTO aff_files (path, sig, blocks) VALUES (?, ?, ?)",
            [(path, sig, json.dumps(blocks.to_json())) for path, (sig, blocks) in files.items()],
        )
        conn.executemany(
            "INSERT OR REPLACE INTO aff_state (key, value) VALUES (?, ?)",
            [(key, json.dumps(value)) for key, value in state.items()],
        )
        conn.execute("DELETE FROM aff_deps WHERE id NOT IN (SELECT depset FROM aff_tests WHERE depset IS NOT NULL)")
        dropped = _drop_unused_blocks(conn, ids)
        _save_edges(conn, ids, env, edges or EdgeWrite(), dropped)
        also(conn)  # what else the run taught (learned pre-imports), in the same transaction
