"""Test history: what past runs of each test say (last outcome, counts, duration, flakiness).

Per root, in the test database of the operator's `cache_dir` (`TestDB`, shared with the
affected-test data; these tables are ours). One row per test, updated in O(1) per report and
written in one transaction per run, off the event loop. A test is *flaky* when it both passed
and failed while the content of its own file and of the code it ran was unchanged: its
fingerprint hashes its file and the files it executed (from the affected-test records of the
same database, accumulated over runs so a failure that takes another path compares alike), and
the pass/fail counts since the fingerprint last changed decide. The least recently run tests
beyond `test_history_max_tests` are dropped after each run, and the file is vacuumed when most
of it is free pages.

It feeds `run_tests(failed_first=true)` (last failures first, then fastest first), the `flaky`
list of a run's result, and the `test_history` tool.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import sqlite3
import stat
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
from pydantic import Field

from mcp_server.api import AppState, CacheDirUnavailable, ToolArgs, ToolContext, ToolOutput, ToolSpec
from tools.test_runner.runner import RunRequest, TestRun
from tools.test_runner.testdb import TestDB, register_schema

logger = logging.getLogger("mcp_server.test_runner")

SERVICE = "test_history"
EMA_ALPHA = 0.3
RECENT = 20
"""Outcomes kept per test, newest last, one letter each (P pass, F fail, S skip)."""
MAX_OPEN_ROOTS = 16
VACUUM_FREE_SHARE = 0.5
MAX_HASHED_BYTES = 8 * 1024 * 1024
MAX_KNOWN_HASHES = 20_000
SETTLE_NS = 2_000_000_000

PASS, FAIL, SKIP = "P", "F", "S"
_LETTER = {"passed": PASS, "xfailed": PASS, "xpassed": PASS, "failed": FAIL, "error": FAIL, "skipped": SKIP}

register_schema(
    "history",
    """
    CREATE TABLE IF NOT EXISTS history_tests (
        nodeid TEXT PRIMARY KEY,
        last_outcome TEXT NOT NULL,
        last_seen REAL NOT NULL,
        last_failed REAL,
        passes INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0,
        skips INTEGER NOT NULL DEFAULT 0,
        ema_s REAL,
        file_hash TEXT,
        passes_same INTEGER NOT NULL DEFAULT 0,
        failures_same INTEGER NOT NULL DEFAULT 0,
        flaky_count INTEGER NOT NULL DEFAULT 0,
        flaky_last REAL,
        recent TEXT NOT NULL DEFAULT '',
        code_files TEXT NOT NULL DEFAULT '[]'
    );
    CREATE INDEX IF NOT EXISTS history_tests_seen ON history_tests(last_seen);
    """,
)

_COLUMNS = (
    "nodeid, last_outcome, last_seen, last_failed, passes, failures, skips, ema_s, file_hash, "
    "passes_same, failures_same, flaky_count, flaky_last, recent, code_files"
)
_NAMES = _COLUMNS.split(", ")
MAX_CODE_FILES = 64
"""Files of the project a test ran (besides its own) that its fingerprint covers."""


@dataclass(frozen=True, slots=True)
class Report:
    """One finished test of a run."""

    nodeid: str
    outcome: str
    duration_s: float


@dataclass
class Recorded:
    """What recording a run adds to its result."""

    flaky: list[str] = field(default_factory=list)
    note: str | None = None

    def apply(self, result: dict[str, Any], redact: Callable[[str], str] = lambda text: text) -> None:
        """`flaky: [nodeid]` among the failures, each failure marked; a note when history is off."""
        if self.note:
            result["history_note"] = self.note
        if not self.flaky:
            return
        flaky = {redact(nodeid) for nodeid in self.flaky}  # as the failures show them
        result["flaky"] = sorted(flaky)
        for failure in result.get("failures") or []:
            if failure.get("nodeid") in flaky:
                failure["flaky"] = True


# --- the pure part: one row's update ----------------------------------------------------------------


def update_row(row: dict[str, Any] | None, report: Report, file_hash: str | None, now: float) -> dict[str, Any]:
    """The row after `report` (O(1)). `row` is None for a test never seen before. `file_hash` is
    the test's fingerprint (its file and the code it ran); None when unknown (no flakiness claim)."""
    new: dict[str, Any] = (
        dict(row)
        if row is not None
        else {
            "nodeid": report.nodeid,
            "last_failed": None,
            "passes": 0,
            "failures": 0,
            "skips": 0,
            "ema_s": None,
            "file_hash": file_hash,
            "passes_same": 0,
            "failures_same": 0,
            "flaky_count": 0,
            "flaky_last": None,
            "recent": "",
            "code_files": "[]",
        }
    )
    letter = _LETTER.get(report.outcome, SKIP)
    new["last_outcome"] = report.outcome
    new["last_seen"] = now
    previous = _last_letter(new["recent"])
    if file_hash is None or new["file_hash"] != file_hash:  # its code changed: a new history of flakiness
        new["file_hash"] = file_hash
        new["passes_same"] = new["failures_same"] = 0
        previous = ""
    if letter == PASS:
        new["passes"] += 1
        new["passes_same"] += 1 if file_hash is not None else 0
    elif letter == FAIL:
        new["failures"] += 1
        new["failures_same"] += 1 if file_hash is not None else 0
        new["last_failed"] = now
    else:
        new["skips"] += 1
    if letter != SKIP and report.duration_s > 0:
        ema = new["ema_s"]
        new["ema_s"] = report.duration_s if ema is None else ema + EMA_ALPHA * (report.duration_s - ema)
    if letter != SKIP and previous and previous != letter:  # a flip with the same file content
        new["flaky_count"] += 1
        new["flaky_last"] = now
    new["recent"] = (new["recent"] + letter)[-RECENT:]
    return new


def _last_letter(recent: str) -> str:
    stripped = recent.replace(SKIP, "")
    return stripped[-1] if stripped else ""


def is_flaky(row: dict[str, Any]) -> bool:
    """Passed and failed with its file's content unchanged."""
    return bool(row["passes_same"] > 0 and row["failures_same"] > 0)


def failed_first_order(nodeids: Sequence[str], rows: dict[str, dict[str, Any]]) -> list[str]:
    """Tests that failed last time first (most recent failure first), then the rest fastest first
    (a test with no history counts as fastest: it is new, and probably what is being worked on)."""
    position = {n: i for i, n in enumerate(nodeids)}

    def key(nodeid: str) -> tuple[int, float, float, int]:
        row = rows.get(nodeid)
        if row is not None and _LETTER.get(row["last_outcome"]) == FAIL:
            return (0, -(row["last_failed"] or 0.0), 0.0, position[nodeid])
        ema = row["ema_s"] if row is not None and row["ema_s"] is not None else 0.0
        return (1, 0.0, ema, position[nodeid])

    return sorted(dict.fromkeys(nodeids), key=key)


# --- the database (blocking: worker threads) ------------------------------------------------------


def _file_hash(root: Path, rel: str, known: FileHashes | None = None) -> str | None:
    path = (root / rel).resolve()
    if not path.is_relative_to(root):
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    signature = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
    if known is not None and (cached := known.get(path, signature)) is not None:
        return cached
    h = hashlib.blake2b(digest_size=12)
    try:
        with path.open("rb") as f:
            h.update(f.read(MAX_HASHED_BYTES))
    except OSError:
        return None
    if known is not None:
        known.put(path, signature, h.hexdigest())
    return h.hexdigest()


class FileHashes:
    """Content hashes of a root's files kept from run to run, each with the signature (mtime,
    ctime, size, inode) the file had when it was hashed: a file whose signature is unchanged is not
    read again. Only a file that had settled when hashed (its times `SETTLE_NS` older than the
    hashing) is kept: a write in the same clock tick as the hashing could leave its times as they
    were. Bounded (`MAX_KNOWN_HASHES`: cleared when full)."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._known: dict[Path, tuple[tuple[int, int, int, int], str]] = {}

    def __len__(self) -> int:
        return len(self._known)

    def get(self, path: Path, signature: tuple[int, int, int, int]) -> str | None:
        found = self._known.get(path)
        return found[1] if found is not None and found[0] == signature else None

    def put(self, path: Path, signature: tuple[int, int, int, int], value: str) -> None:
        settled = self._clock() - SETTLE_NS
        if signature[0] >= settled or signature[1] >= settled:
            self._known.pop(path, None)
            return
        if len(self._known) >= MAX_KNOWN_HASHES:
            self._known.clear()
        self._known[path] = (signature, value)


def _rows(db: TestDB, nodeids: Iterable[str]) -> dict[str, dict[str, Any]]:
    names = _COLUMNS.split(", ")
    found: dict[str, dict[str, Any]] = {}
    batch: list[str] = []

    def flush() -> None:
        marks = ",".join("?" * len(batch))
        sql = f"SELECT {_COLUMNS} FROM history_tests WHERE nodeid IN ({marks})"
        for values in db.conn.execute(sql, batch):
            found[values[0]] = dict(zip(names, values, strict=True))
        batch.clear()

    for nodeid in nodeids:
        batch.append(nodeid)
        if len(batch) >= 500:
            flush()
    if batch:
        flush()
    return found


def _code_files(db: TestDB, nodeids: Sequence[str]) -> dict[str, list[str]]:
    """The files each test ran, from the affected-test records of the root (written for this run
    just before): their `{file: [block checksums]}`. Empty where there is no record (or no such
    table yet): the fingerprint then covers the test's own file only."""
    found: dict[str, list[str]] = {}
    try:
        for start in range(0, len(nodeids), 500):
            batch = list(nodeids[start : start + 500])
            sql = (
                "SELECT t.nodeid, d.files FROM aff_tests t JOIN aff_deps d ON d.id = t.depset "
                f"WHERE t.nodeid IN ({','.join('?' * len(batch))})"
            )
            for nodeid, deps in db.conn.execute(sql, batch):
                try:
                    files = json.loads(deps)
                except ValueError:
                    continue
                if isinstance(files, dict):
                    found[nodeid] = [str(f) for f in files]
    except sqlite3.Error:
        return {}
    return found


def _fingerprint(root: Path, rel: str, files: Sequence[str], hashes: Callable[[str], str | None]) -> str | None:
    """A hash of the content of the test's own file and of the files it ran (`files`; None:
    unknown). `hashes` gives a file's content hash."""
    own = hashes(rel)
    if own is None:
        return None
    h = hashlib.blake2b(own.encode(), digest_size=12)
    for path in files:
        h.update(f"\0{path}\0{hashes(path) or '-'}".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def ensure_columns(db: TestDB) -> None:
    """Columns added since a root's database was made (CREATE TABLE IF NOT EXISTS keeps old tables)."""
    have = {row[1] for row in db.conn.execute("PRAGMA table_info(history_tests)")}
    if "code_files" not in have:
        db.conn.execute("ALTER TABLE history_tests ADD COLUMN code_files TEXT NOT NULL DEFAULT '[]'")


def record_reports(
    db: TestDB, root: Path, reports: Sequence[Report], max_tests: int, now: float, known: FileHashes | None = None
) -> list[str]:
    """Write a run's reports in one transaction; returns the failing tests that are flaky. `known`:
    the root's file hashes of earlier runs (files unchanged since are not read again)."""
    ensure_columns(db)
    latest: dict[str, Report] = {}
    for report in reports:
        latest[report.nodeid] = report  # a test reported twice (reruns): its last report counts
    nodeids = list(latest)
    rows = _rows(db, nodeids)
    ran = _code_files(db, nodeids)
    hashes: dict[str, str | None] = {}
    # Tests of one module mostly share their lists of files: each distinct one is decoded,
    # fingerprinted and encoded once per run.
    decoded: dict[str, list[str]] = {}
    fingerprints: dict[tuple[str, tuple[str, ...]], tuple[str | None, str]] = {}

    def content(path: str) -> str | None:
        if path not in hashes:
            hashes[path] = _file_hash(root, path, known)
        return hashes[path]

    def before(text: str) -> list[str]:
        if text not in decoded:
            try:
                files = json.loads(text)
            except ValueError:
                files = []
            decoded[text] = [str(f) for f in files] if isinstance(files, list) else []
        return decoded[text]

    updated: list[dict[str, Any]] = []
    flaky: list[str] = []
    for nodeid, report in latest.items():
        rel = nodeid.split("::", 1)[0]
        row = rows.get(nodeid)
        # The union over runs: a failure that runs other code than a pass still compares alike.
        union = {*(before(row["code_files"]) if row is not None else []), *ran.get(nodeid, [])}
        union.discard(rel)
        files = tuple(sorted(union)[:MAX_CODE_FILES])
        if (rel, files) not in fingerprints:
            fingerprints[rel, files] = (_fingerprint(root, rel, files, content), json.dumps(list(files)))
        fingerprint, covered = fingerprints[rel, files]
        new = update_row(row, report, fingerprint, now)
        new["code_files"] = covered
        updated.append(new)
        if _LETTER.get(report.outcome) == FAIL and is_flaky(new):
            flaky.append(nodeid)
    with db.transaction() as conn:
        conn.executemany(
            f"INSERT OR REPLACE INTO history_tests ({_COLUMNS}) VALUES ({','.join('?' * len(_NAMES))})",
            [[new[c] for c in _NAMES] for new in updated],
        )
        conn.execute(
            "DELETE FROM history_tests WHERE nodeid IN (SELECT nodeid FROM history_tests ORDER BY last_seen DESC "
            "LIMIT -1 OFFSET ?)",
            (max_tests,),
        )
    _maybe_vacuum(db)
    return flaky


def _maybe_vacuum(db: TestDB) -> None:
    (pages,) = db.conn.execute("PRAGMA page_count").fetchone()
    (free,) = db.conn.execute("PRAGMA freelist_count").fetchone()
    if pages > 64 and free > pages * VACUUM_FREE_SHARE:
        db.conn.execute("VACUUM")


def load_rows(db: TestDB, nodeids: Iterable[str]) -> dict[str, dict[str, Any]]:
    return _rows(db, nodeids)


def _public(row: dict[str, Any]) -> dict[str, Any]:
    ran = row["passes"] + row["failures"]
    return {
        "nodeid": row["nodeid"],
        "last_outcome": row["last_outcome"],
        "last_run": _iso(row["last_seen"]),
        "last_failed": _iso(row["last_failed"]),
        "passes": row["passes"],
        "failures": row["failures"],
        "skips": row["skips"],
        "failure_rate": round(row["failures"] / ran, 4) if ran else None,
        "mean_duration_s": round(row["ema_s"], 4) if row["ema_s"] is not None else None,
        "flaky": is_flaky(row),
        "flaky_count": row["flaky_count"],
        "recent": row["recent"],
    }


def _iso(ts: float | None) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts is not None else None


def query(db: TestDB, nodeid: str | None, limit: int) -> dict[str, Any]:
    names = _COLUMNS.split(", ")

    def rows(where: str, order: str) -> list[dict[str, Any]]:
        sql = f"SELECT {_COLUMNS} FROM history_tests WHERE {where} ORDER BY {order} LIMIT ?"
        return [_public(dict(zip(names, v, strict=True))) for v in db.conn.execute(sql, (limit,))]

    (total,) = db.conn.execute("SELECT count(*) FROM history_tests").fetchone()
    if nodeid is not None:
        found = _rows(db, [nodeid]).get(nodeid)
        return {"tests_known": total, "test": _public(found) if found is not None else None}
    return {
        "tests_known": total,
        "slowest": rows("ema_s IS NOT NULL", "ema_s DESC, nodeid"),
        "flakiest": rows("flaky_count > 0", "flaky_count DESC, flaky_last DESC, nodeid"),
        "recently_failing": rows("last_failed IS NOT NULL", "last_failed DESC, nodeid"),
    }


# --- the service: one open database per root, one user at a time -----------------------------------


class TestHistory:
    """Open databases by root (a few, least recently used closed first); each used under its lock."""

    __test__ = False

    def __init__(self) -> None:
        self._dbs: OrderedDict[Path, tuple[TestDB, anyio.Lock]] = OrderedDict()
        self._hashes: dict[Path, FileHashes] = {}
        """Per root with an open database: its file hashes (`FileHashes`), used under its lock."""

    async def aclose(self) -> None:
        dbs, self._dbs = list(self._dbs.values()), OrderedDict()
        for db, lock in dbs:
            async with lock:
                db.close()

    def status(self) -> dict[str, Any]:
        return {"test_history": {"open_roots": len(self._dbs)}}

    async def _db(self, ctx: ToolContext, root: Path) -> tuple[TestDB, anyio.Lock, str | None]:
        """The root's database, opened on first use. Raises CacheDirUnavailable."""
        entry = self._dbs.get(root)
        if entry is not None:
            self._dbs.move_to_end(root)
            return entry[0], entry[1], None

        def open_db() -> TestDB:
            db = TestDB(ctx.cache_path(root))
            ensure_columns(db)
            return db

        db = await anyio.to_thread.run_sync(open_db)
        entry = self._dbs.get(root)  # opened meanwhile by another call: keep that one
        if entry is not None:
            db.close()
            return entry[0], entry[1], None
        self._dbs[root] = (db, anyio.Lock())
        while len(self._dbs) > MAX_OPEN_ROOTS:
            old_root, (old, old_lock) = self._dbs.popitem(last=False)
            self._hashes.pop(old_root, None)
            async with old_lock:
                await anyio.to_thread.run_sync(old.close)
        return db, self._dbs[root][1], db.warning

    async def record(self, ctx: ToolContext, root: Path, reports: Sequence[Report]) -> Recorded:
        """Record a run. Never raises: a history that cannot be kept is a note in the result."""
        if not reports:
            return Recorded()
        try:
            db, lock, warning = await self._db(ctx, root)
            max_tests = ctx.settings.test_history_max_tests
            known = self._hashes.setdefault(root, FileHashes())
            async with lock:
                call = functools.partial(record_reports, db, root, reports, max_tests, time.time(), known)
                flaky = await anyio.to_thread.run_sync(call)
            return Recorded(flaky, warning)
        except CacheDirUnavailable as exc:
            return Recorded(note=f"test history is off: {exc}")
        except Exception as exc:
            logger.warning("test history for %s not recorded: %s", root, exc)
            return Recorded(note=f"test history not recorded: {type(exc).__name__}: {exc}")

    async def rows(self, ctx: ToolContext, root: Path, nodeids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Known rows of `nodeids` (empty when there is no history, or it cannot be read)."""
        try:
            db, lock, _ = await self._db(ctx, root)
            async with lock:
                return await anyio.to_thread.run_sync(load_rows, db, nodeids)
        except Exception as exc:
            logger.info("test history for %s not read: %s", root, exc)
            return {}

    async def query(self, ctx: ToolContext, root: Path, nodeid: str | None, limit: int) -> dict[str, Any]:
        db, lock, warning = await self._db(ctx, root)
        async with lock:
            result = await anyio.to_thread.run_sync(query, db, nodeid, limit)
        if warning:
            result["warning"] = warning
        return result


async def get_history(app: AppState) -> TestHistory:
    async def factory() -> TestHistory:
        return TestHistory()

    return await app.services.get(SERVICE, factory)


async def failed_first_request(ctx: ToolContext, request: RunRequest) -> RunRequest:
    """`request` reordered by history: last failures first, then fastest first. The selection is
    collected first (same -k/-m/node ids), then passed as node ids in that order (pytest keeps the
    order of node ids given). Without history (or if collection fails) the request stays as it is:
    pytest's own `--ff`."""
    head, sep, tail = _split(request.args)
    collect_args = [a for a in head if a != "--ff" and not a.startswith("--maxfail=")]
    collect = dataclasses.replace(request, args=[*collect_args, *sep, *tail], mode="collect")
    history = await get_history(ctx.app)
    collecting = TestRun(ctx.app, collect, tool=ctx.tool, connection=ctx.connection_id)
    await collecting.execute()
    status, _ = collecting.outcome()
    nodeids = collecting.state.nodeids
    if status != "passed" or not nodeids:
        return request
    rows = await history.rows(ctx, request.root, nodeids)
    if not rows:
        return request
    ordered = failed_first_order(nodeids, rows)
    return dataclasses.replace(request, args=[*(a for a in head if a != "--ff"), "--", *ordered])


def _split(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(options, ["--"] or [], data): what follows `--` is data (node ids, paths), never options."""
    if "--" in args:
        i = args.index("--")
        return args[:i], ["--"], args[i + 1 :]
    return list(args), [], []


# --- the test_history tool ----------------------------------------------------------------------------


class TestHistoryArgs(ToolArgs):
    __test__ = False

    root: str | None = Field(default=None, description="Workspace root (default: the first allowed root).")
    nodeid: str | None = Field(
        default=None, min_length=1, max_length=4096, description="One test's history instead of the overview."
    )
    limit: int = Field(default=10, ge=1, le=200, description="Tests per list of the overview.")


async def test_history(ctx: ToolContext, args: TestHistoryArgs) -> ToolOutput:
    root = ctx.root(args.root)
    history = await get_history(ctx.app)
    try:
        result = await history.query(ctx, root, args.nodeid, args.limit)
    except CacheDirUnavailable as exc:
        return ToolOutput({"tests_known": 0, "history_note": f"test history is off: {exc}"})
    return ToolOutput(result)


def load_history_tools() -> list[ToolSpec[Any]]:
    return [
        ToolSpec(
            name="test_history",
            title="Test history",
            description="What past run_tests calls on this root say: the slowest tests (moving average of "
            "duration), the flakiest (passed and failed with their file unchanged), the most recently failing; "
            "or, with `nodeid`, one test's counts, last outcome, flakiness and its recent outcomes "
            "(P pass, F fail, S skip; newest last). Kept in the server's cache_dir, never in the repository.",
            args=TestHistoryArgs,
            handler=test_history,
        )
    ]
