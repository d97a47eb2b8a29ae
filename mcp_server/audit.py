"""The audit log: one JSON line per executed command, appended with size-based rotation.

Every record is redacted here, as it is written (every string field, the argv's items too): the
one place no writer can bypass. A writer that redacted already loses nothing (redaction is
idempotent)."""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path

import anyio.to_thread

from mcp_server.redact import Redactor, process_redactor

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


class _PrivateRotatingFile(RotatingFileHandler):
    """The standard library's size rotation, with three differences the audit log needs: every file is
    created 0600, `backups=0` starts the file over instead of growing it for ever, and an empty file is
    never rotated (a single record larger than `max_bytes` must not push the backups out). The file is
    closed after each record, as an outside log rotator expects."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        super().__init__(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True)
        self.setFormatter(logging.Formatter("%(message)s"))
        self.rotator = self._rotate_private
        _create_private(path)

    @staticmethod
    def _rotate_private(source: str, dest: str) -> None:
        os.replace(source, dest)
        _create_private(Path(source))

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        try:
            if os.stat(self.baseFilename).st_size == 0:
                return False
        except FileNotFoundError:
            return False
        return bool(super().shouldRollover(record))

    def doRollover(self) -> None:
        if self.backupCount > 0:
            super().doRollover()
            return
        if self.stream is not None:
            self.stream.close()
            self.stream = None  # type: ignore[assignment]
        os.truncate(self.baseFilename, 0)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)
        finally:
            if self.stream is not None:
                self.stream.close()
                self.stream = None  # type: ignore[assignment]

    def handleError(self, record: logging.LogRecord) -> None:
        raise  # to `AuditLog._append`, which warns once; never a traceback on stderr


def _create_private(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))


class AuditLog:
    """Appends `AuditRecord`s to `path`, redacted (`redactor`); rotates to `path.1` ... `path.N`
    past `max_bytes` (`logging.handlers.RotatingFileHandler`)."""

    def __init__(self, path: Path | None, *, max_bytes: int, backups: int, redactor: Redactor | None = None) -> None:
        self.path = path
        self.redactor = redactor
        """None: the process's redactor (`redact.install`), looked up at each record."""
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._handler: _PrivateRotatingFile | None = None
        self._warned = False

    async def record(self, record: AuditRecord) -> None:
        if self.path is None:
            return
        redactor = self.redactor or process_redactor()
        fields = redactor.redact_value(asdict(record))  # every string, whoever wrote the record
        line = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
        with anyio.CancelScope(shield=True):  # a cancelled run is still audited
            await anyio.to_thread.run_sync(self._append, line)

    def _append(self, line: str) -> None:
        assert self.path is not None
        entry = logging.LogRecord("mcp_server.audit", logging.INFO, __file__, 0, line, None, None)
        with self._lock:
            try:
                if self._handler is None:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._handler = _PrivateRotatingFile(self.path, max_bytes=self.max_bytes, backups=self.backups)
                self._handler.handle(entry)
            except OSError as exc:
                if not self._warned:
                    logger.warning("audit log %s cannot be written: %s", self.path, exc)
                    self._warned = True
