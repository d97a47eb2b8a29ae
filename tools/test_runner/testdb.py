"""The per-root SQLite database of the test runner: affected-test data and test history share it.

It lives in the operator's `cache_dir` (`ToolContext.cache_path(root)`), never in the repository.
Each feature declares its own tables with `CREATE TABLE IF NOT EXISTS` in `SCHEMAS` order. A file
that is not a readable database (truncated, garbage, another program's) is moved aside and rebuilt;
`TestDB.warning` then says so, for the result (the check reads the whole file: it is skipped when
the file is unchanged since it last passed in this process). All calls are blocking: use them from a worker thread.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("mcp_server")

DB_NAME = "tests.sqlite3"

SCHEMAS: dict[str, str] = {}
"""Feature name -> DDL (idempotent). A feature registers its tables at import time."""


_checked: dict[Path, tuple[int, int, int, int]] = {}
"""Database file -> its (device, inode, size, mtime) when it last passed `quick_check` in this
process: opened again unchanged (a run opens it three times), it is not read through again. A
file changed since (truncated, replaced, checkpointed) is checked again."""


def register_schema(feature: str, ddl: str) -> None:
    SCHEMAS[feature] = ddl


class TestDB:
    """One connection to a root's database; not thread-safe (one user at a time, a worker thread)."""

    __test__ = False  # not a pytest test class

    def __init__(self, folder: Path) -> None:
        self.path = folder / DB_NAME
        self.warning: str | None = None
        self.conn = self._open()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=5.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        for ddl in SCHEMAS.values():
            conn.executescript(ddl)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn

    def _signature(self) -> tuple[int, int, int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def _open(self) -> sqlite3.Connection:
        try:
            before = self._signature()
            conn = self._connect()
            if before is None or _checked.get(self.path) != before:
                (ok,) = conn.execute("PRAGMA quick_check").fetchone()  # reads the whole file
                if ok != "ok":
                    conn.close()
                    raise sqlite3.DatabaseError(f"quick_check: {ok}")
                signature = self._signature()
                if signature is not None:
                    _checked[self.path] = signature
            return conn
        except sqlite3.DatabaseError as exc:
            aside = self.path.with_name(f"{DB_NAME}.corrupt-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    Path(str(self.path) + suffix).replace(str(aside) + suffix)
            self.warning = f"the test database was unreadable ({exc}); moved aside to {aside.name} and rebuilt"
            logger.warning("%s", self.warning)
            return self._connect()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One transaction (a run's records are written in one, never one per test)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()
