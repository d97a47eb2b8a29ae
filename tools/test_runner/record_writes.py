"""Affected-test records written after the answer, in order, per root.

A run's records (`affected.finish`: a second walk of the root, block checksums, one SQLite
transaction: 15-40 ms on python-dateutil) are not part of its result, so the run answers first
and writes them in the server's task group. What reads them waits: a later run of the same root
(its lease, its plan and its test history) starts with `settled(folder)`, and the writes of one
root run one after the other, in the order the runs ended. A write is shielded from cancellation
(a server shutting down finishes it: a lost record only makes the next run select more).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio

from mcp_server.api import AppState

logger = logging.getLogger("mcp_server.test_runner")

RECORD_WRITES = "test_runner_record_writes"
CLOSE_WAIT_S = 30.0


class RecordWrites:
    def __init__(self, app: AppState) -> None:
        self.app = app
        self._pending: dict[Path, anyio.Event] = {}
        """Per root folder, the event set when its latest write (and so every earlier one) is done."""

    async def settled(self, folder: Path | None) -> None:
        """Wait until every write submitted for `folder` is done."""
        if folder is not None and (pending := self._pending.get(folder)) is not None:
            await pending.wait()

    async def submit(self, folder: Path, write: Callable[[], Awaitable[None]]) -> None:
        """Run `write` after the writes submitted before it for `folder`: in the server's task
        group (the caller goes on at once), else here."""
        before = self._pending.get(folder)
        done = self._pending[folder] = anyio.Event()

        async def run() -> None:
            try:
                with anyio.CancelScope(shield=True):
                    if before is not None:
                        await before.wait()
                    await write()
            except Exception:
                logger.exception("writing the affected-test records of %s failed", folder)
            finally:
                done.set()
                if self._pending.get(folder) is done:
                    del self._pending[folder]

        if self.app.task_group is None:
            await run()
        else:
            self.app.task_group.start_soon(run)

    async def aclose(self) -> None:
        """Services close as the server stops: the writes still pending finish first (bounded)."""
        with anyio.move_on_after(CLOSE_WAIT_S):
            for pending in list(self._pending.values()):
                await pending.wait()


async def record_writes(app: AppState) -> RecordWrites:
    async def factory() -> RecordWrites:
        return RecordWrites(app)

    return await app.services.get(RECORD_WRITES, factory)
