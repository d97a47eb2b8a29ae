"""The interface tools are written against: what a tool declares, what it is handed, what it returns.

`tools/` imports from here (and from the modules this re-exports), never from the transports or
the server assembly. A tool module must be cheap to import: heavy work (a ruff server, a pytest
zygote) is created on first use through `Services.get`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import anyio.abc
from pydantic import BaseModel, ConfigDict

from mcp_server.audit import AuditRecord
from mcp_server.cachedir import CacheDirUnavailable, root_cache_dir
from mcp_server.config import Settings
from mcp_server.errors import Busy, NotFound, PolicyRefused, ToolError
from mcp_server.executor import Executor, OutputCollector, ProcessResult, kill_group
from mcp_server.logging_capability import log_to_client, parse_level
from mcp_server.lru import BoundedLRU
from mcp_server.paths import (
    CheckedFile,
    FileChecker,
    FileSkipped,
    PathRefused,
    ResolvedPath,
    WalkLimit,
    resolve_path,
    resolve_root,
    safe_walk,
)
from mcp_server.pool import PooledService, PoolPolicy, PoolWorker, WarmPool
from mcp_server.run_queue import RunSlots, SlotTicket
from mcp_server.runs import RunContext, RunLog, RunStore
from mcp_server.telemetry import past_span, trace_env
from mcp_server.telemetry import span as trace_span

if TYPE_CHECKING:
    from mcp_server.redact import Redactor

__all__ = [
    "AppState",
    "AuditRecord",
    "BoundedLRU",
    "Busy",
    "CacheDirUnavailable",
    "CheckedFile",
    "Executor",
    "FileChecker",
    "FileSkipped",
    "NotFound",
    "OutputCollector",
    "PathRefused",
    "PolicyRefused",
    "PoolPolicy",
    "PoolWorker",
    "PooledService",
    "ProcessResult",
    "ResolvedPath",
    "RunContext",
    "RunLog",
    "RunSlots",
    "Service",
    "Services",
    "SlotTicket",
    "ToolArgs",
    "ToolContext",
    "ToolError",
    "ToolOutput",
    "ToolSpec",
    "WalkLimit",
    "WarmPool",
    "kill_group",
    "past_span",
    "safe_walk",
    "trace_env",
    "trace_span",
]

logger = logging.getLogger("mcp_server")


class ToolArgs(BaseModel):
    """Base for tool argument models: unknown arguments are an error, the model is the JSON schema."""

    model_config = ConfigDict(extra="forbid", frozen=True)


ArgsT = TypeVar("ArgsT", bound=ToolArgs)


@dataclass
class ToolOutput:
    """What a tool returns. The server applies the output budget to it.

    `structured` is the full result. If it does not fit the budget, the server cuts its lists,
    marks it `truncated: true`, and keeps the full result in a run context for `get_run`.
    `text` is a short human summary (default: the JSON of the budgeted result). `run` is the run
    context the tool already made (long runs); otherwise the server makes one when needed.
    """

    structured: dict[str, Any]
    text: str | None = None
    run: RunContext | None = None
    is_error: bool = False
    pageable: tuple[str, ...] = ()
    """The long lists of `structured` (worst or first items first): the ones cut last, paged by get_run."""
    run_only: tuple[str, ...] = ()
    """Keys of `structured` kept only in the run (shown through get_run), never in the answer."""
    view: bool = False
    """The answer shows data already kept (a get_run page): if it must be cut, no new run is made."""


class Service(Protocol):
    """A shared, lazily created, long-lived helper (a pool of ruff servers, of zygotes)."""

    async def aclose(self) -> None: ...


ServiceT = TypeVar("ServiceT", bound=Service)


class Services:
    """Lazily created singletons, closed when the server stops. Creation is serialized per key."""

    def __init__(self) -> None:
        self._items: dict[str, Service] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def get(self, key: str, factory: Callable[[], Awaitable[ServiceT]]) -> ServiceT:
        item = self._items.get(key)
        if item is None:
            lock = self._locks.setdefault(key, anyio.Lock())
            async with lock:
                item = self._items.get(key)
                if item is None:
                    item = await factory()
                    self._items[key] = item
        return item  # type: ignore[return-value]

    def peek(self, key: str) -> Service | None:
        return self._items.get(key)

    def items(self) -> list[tuple[str, Service]]:
        """The services started so far, in creation order (readiness probes report them)."""
        return list(self._items.items())

    async def aclose(self) -> None:
        items, self._items = list(self._items.values()), {}
        for item in reversed(items):
            with anyio.move_on_after(10, shield=True):
                try:
                    await item.aclose()
                except Exception:
                    logger.exception("closing service %r failed", item)


@dataclass
class AppState:
    """Everything shared by all connections of one server process."""

    settings: Settings
    runs: RunStore
    executor: Executor
    redactor: Redactor
    services: Services = field(default_factory=Services)
    task_group: anyio.abc.TaskGroup | None = None
    on_tools_changed: Callable[[], Awaitable[None]] | None = None

    def start_background(self, run: RunContext, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` for `run` in the server's task group; purging or evicting the run cancels it."""
        if self.task_group is None:
            raise ToolError("internal: the server has no task group for background runs")
        scope = anyio.CancelScope()
        run.cancel_scope = scope

        async def runner() -> None:
            with scope:
                try:
                    await work()
                except Exception:
                    logger.exception("background run %s failed", run.run_id)
            if not run.finished.is_set():
                self.runs.finish(run)

        self.task_group.start_soon(runner)

    def audit_soon(self, record: AuditRecord) -> None:
        """The audit hook: write `record` in the server's task group, off the answer's path."""
        if self.task_group is None:
            logger.error("no task group to audit %s in %s", record.tool, record.cwd)
            return
        self.task_group.start_soon(self.executor.audit.record, record)


ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]


async def _no_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


@dataclass
class ToolContext:
    """What one tool call is handed."""

    app: AppState
    tool: str
    owner: str | None
    connection_id: str
    report_progress: ProgressFn = _no_progress

    @property
    def settings(self) -> Settings:
        return self.app.settings

    @property
    def executor(self) -> Executor:
        return self.app.executor

    @property
    def runs(self) -> RunStore:
        return self.app.runs

    def root(self, root: str | None) -> Path:
        """The call's workspace root (the `root` argument), checked against the allowed roots."""
        return resolve_root(self.settings.roots, root)

    def path(self, raw: str, *, root: Path | None = None, must_exist: bool = True, kind: str = "any") -> ResolvedPath:
        """Resolve a path argument: the one path check."""
        return resolve_path(self.settings.roots, raw, root=root, must_exist=must_exist, kind=kind)

    def file_checker(self) -> FileChecker:
        """The path check for files a walk reaches (one per call: it memoizes resolved folders)."""
        return FileChecker(self.settings.roots, self.settings.max_source_bytes)

    def cache_path(self, root: Path, *parts: str) -> Path:
        """Blocking: the server's own folder for `root` under the operator's `cache_dir` (created).

        Raises `CacheDirUnavailable` when it cannot be written: degrade, and say so in the result.
        """
        return root_cache_dir(self.settings.cache_dir, root, *parts)

    def new_run(self) -> RunContext:
        return self.app.runs.create(self.owner, self.tool)

    def new_log(self) -> RunLog:
        """A run log of its own (capped at `max_log_bytes`) for a call that keeps no run."""
        return RunLog(self.settings.max_log_bytes)

    def reserve_slot(self) -> SlotTicket:
        """A place in the run queue, taken now: `Busy` at once past the queue limit (the busy
        rule lives in the queue). `async with ticket` waits for the slot; `ticket.cancel()`
        gives up a place never used. For runs of project code that answer before they start."""
        return self.executor.slots.reserve()

    @staticmethod
    def kill_group(pid: int) -> None:
        """SIGKILL the process group led by `pid` (gone already is fine)."""
        kill_group(pid)

    def audit(self, record: AuditRecord) -> None:
        """Write `record` to the audit log in the background (see `AppState.audit_soon`)."""
        self.app.audit_soon(record)

    async def progress(self, progress: float, total: float | None = None, message: str | None = None) -> None:
        with contextlib.suppress(Exception):  # progress is advisory: a gone client must not fail the call
            await self.report_progress(progress, total, message)

    async def log(self, level: str, message: str, **data: Any) -> bool:
        """An entry for the calling client's log (`notifications/message`, logger `mcp-code-tools.<tool>`).

        Redacted, rate-limited per connection, sent only at or above the level the client asked for
        (`logging/setLevel`, or the request's `_meta` log level in the 2026-07-28 era); advisory.
        True if it was sent. Levels: debug, info, notice, warning, error, critical, alert, emergency.
        """
        entry = {"tool": self.tool, "message": message, **data}
        return await log_to_client(parse_level(level) or "info", entry, logger=f"mcp-code-tools.{self.tool}")


Availability = Callable[[AppState], Awaitable[str | None]]
"""Returns None when the tool's backend is there, else why not (then the tool is not listed)."""


@dataclass(frozen=True)
class ToolSpec(Generic[ArgsT]):
    """A tool: its name, its argument model (which is its input schema), its handler."""

    name: str
    title: str
    description: str
    args: type[ArgsT]
    handler: Callable[[ToolContext, ArgsT], Awaitable[ToolOutput]]
    requires_test_execution: bool = False
    read_only: bool = True
    available: Availability | None = None
    output_schema: dict[str, Any] | None = None

    def disabled_reason(self, settings: Settings) -> str | None:
        """Why the policy forbids this tool, naming the setting; None when allowed."""
        if self.requires_test_execution and not settings.test_execution_allowed:
            why = "it runs project code" + (" over a network transport" if settings.is_network else "")
            return f"disabled by policy: {why} and allow_test_execution is off (MCP_CODE_TOOLS_ALLOW_TEST_EXECUTION)"
        return None
