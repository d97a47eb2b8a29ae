"""Learned pre-imports: the zygote imports, before it forks, what the project's runs imported.

After each run the child reports the modules it imported from outside the root (third-party
packages, the standard library; `preload.imported_modules`). They are kept per root and per
environment fingerprint in the test database, and the next run asks its zygote to import the
ones it has not (`preload.py`, in the zygote). Every later fork finds them in `sys.modules`.

A module is never pre-imported, and is remembered as blocked, when importing it fails, pulls in
code from under the root, or leaves a thread running (`fork()` would copy a process whose other
threads' locks stay held). The last two make the zygote unsafe: it forks nothing more and is
replaced (the run leases a fresh one, which gets the list without the blocked module).
"""

from __future__ import annotations

import logging
import sqlite3
import weakref
from collections.abc import Iterable
from pathlib import Path

import anyio
import anyio.to_thread

from tools.test_runner.testdb import TestDB, register_schema
from tools.test_runner.zygote import Zygote

logger = logging.getLogger("mcp_server.test_runner")

PREIMPORT_TIMEOUT_S = 60.0
MAX_MODULES = 3000

register_schema(
    "preimports",
    """
    CREATE TABLE IF NOT EXISTS pre_modules (
        env TEXT NOT NULL, module TEXT NOT NULL, blocked TEXT, PRIMARY KEY (env, module)
    );
    """,
)

_locks: weakref.WeakKeyDictionary[Zygote, anyio.Lock] = weakref.WeakKeyDictionary()


def learn(conn: sqlite3.Connection, env: str, modules: Iterable[str]) -> None:
    """Inside a run's transaction: remember what it imported (blocked ones stay blocked)."""
    conn.executemany(
        "INSERT OR IGNORE INTO pre_modules (env, module, blocked) VALUES (?, ?, NULL)",
        [(env, str(m)) for m in list(modules)[:MAX_MODULES]],
    )


def wanted(folder: Path, env: str) -> tuple[list[str], str | None]:
    """Blocking: the modules to pre-import for this environment, and the database's warning (it
    was unreadable, and rebuilt)."""
    db = TestDB(folder)
    try:
        rows = db.conn.execute(
            "SELECT module FROM pre_modules WHERE env = ? AND blocked IS NULL ORDER BY module LIMIT ?",
            (env, MAX_MODULES),
        )
        return [str(m) for (m,) in rows], db.warning
    finally:
        db.close()


def block(folder: Path, env: str, dropped: dict[str, str]) -> None:
    """Blocking: never offer these modules again for this environment."""
    db = TestDB(folder)
    try:
        with db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO pre_modules (env, module, blocked) VALUES (?, ?, ?)",
                [(env, name, why[:500]) for name, why in dropped.items() if name != "*"],
            )
    finally:
        db.close()


async def ensure(zygote: Zygote, folder: Path, root: Path) -> str | None:
    """Have `zygote` import the learned modules it lacks. Returns a warning for the result when
    a module made it unsafe (it is then stopped: the caller's next lease gets a fresh one), or
    when the database was unreadable (moved aside and rebuilt)."""
    lock = _locks.setdefault(zygote, anyio.Lock())
    async with lock:
        env = zygote.env_fingerprint
        try:
            modules, warning = await anyio.to_thread.run_sync(wanted, folder, env)
        except (sqlite3.Error, OSError) as exc:
            logger.warning("learned pre-imports of %s unreadable: %s", root, exc)
            return None
        missing = [m for m in modules if m not in zygote.preimported]
        if warning is not None or not missing or not zygote.alive:
            return warning  # a rebuilt database has nothing to pre-import
        command = {"cmd": "preimport", "modules": missing, "root": str(root)}
        answer = await zygote.ask(command, "preimported", PREIMPORT_TIMEOUT_S)
        if answer is None:
            zygote.stop()
            return "pre-importing the learned modules took too long: the test worker was replaced"
        dropped = {str(k): str(v) for k, v in dict(answer.get("dropped") or {}).items()}
        zygote.preimported |= {str(m) for m in answer.get("ok") or ()} | set(dropped)
        if dropped:
            try:
                await anyio.to_thread.run_sync(block, folder, env, dropped)
            except (sqlite3.Error, OSError) as exc:
                logger.warning("could not block pre-imports of %s: %s", root, exc)
        if answer.get("unsafe"):
            zygote.stop()
            reasons = "; ".join(f"{name}: {why}" for name, why in sorted(dropped.items()))
            return f"a learned pre-import was dropped ({reasons}); the test worker was restarted without it"
        return None
