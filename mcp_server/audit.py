"""The audit log: one JSON line per executed command, appended with size-based rotation."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread

logger = logging.getLogger("mcp_server.audit")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Field order here is the order in the file."""

    time: str
    connection: str
    tool: str
    argv: list[str]
    cwd: str
    exit_status: int | None
    duration_s: float
    output_bytes: int
    outcome: str = "exited"

    @staticmethod
    def now() -> str:
        return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class AuditLog:
    """Appends `AuditRecord`s to `path`; rotates to `path.1` ... `path.N` past `max_bytes`."""

    def __init__(self, path: Path | None, *, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._warned = False

    async def record(self, record: AuditRecord) -> None:
        if self.path is None:
            return
        line = json.dumps(asdict(record), ensure_ascii=False, separators=(",", ":")) + "\n"
        with anyio.CancelScope(shield=True):  # a cancelled run is still audited
            await anyio.to_thread.run_sync(self._append, line)

    def _append(self, line: str) -> None:
        assert self.path is not None
        data = line.encode("utf-8")
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    size = self.path.stat().st_size
                except FileNotFoundError:
                    size = 0
                if size and size + len(data) > self.max_bytes:
                    self._rotate()
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                try:
                    os.write(fd, data)
                finally:
                    os.close(fd)
            except OSError as exc:
                if not self._warned:
                    logger.warning("audit log %s cannot be written: %s", self.path, exc)
                    self._warned = True

    def _rotate(self) -> None:
        assert self.path is not None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
