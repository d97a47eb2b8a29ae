"""Assembly: the SDK's low-level `Server`, our handlers, the shared runtime, and the tool loaders.

The tools/call path lives in `dispatch.py`, the `run://` resources in `resources.py`.

`CodeToolsServer.running()` owns the process-wide runtime (task group, pools, run store). Stream
transports call `serve_streams()` once per connection; the HTTP transport lets the SDK's session
manager drive the same `Server`. When a connection ends its runs are purged and their work
cancelled.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.models import InitializationOptions
from mcp.server.runner import serve_dual_era_loop
from mcp.server.session import ServerSession
from mcp.server.subscriptions import InMemorySubscriptionBus, ListenHandler, ToolsListChanged
from mcp.shared.message import SessionMessage
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_server import __version__, telemetry
from mcp_server.api import AppState
from mcp_server.audit import AuditLog
from mcp_server.builtin_tools import load_builtin_tools
from mcp_server.capabilities import ProtocolFeatures
from mcp_server.config import Settings
from mcp_server.connections import ConnectionInfo, connection_for_request, current_connection
from mcp_server.dispatch import CallGuard, Dispatcher
from mcp_server.executor import Executor, RunSlots
from mcp_server.redact import Redactor
from mcp_server.redact import install as install_redactor
from mcp_server.registry import ToolLoader, ToolRegistry
from mcp_server.resources import RunResources
from mcp_server.runs import RunStore

if TYPE_CHECKING:
    from mcp_server.ratelimit import RateLimiter

logger = logging.getLogger("mcp_server")

INSTRUCTIONS = (
    "Code analysis (ruff lint, format check, complexity) and pytest runs for the workspace roots. "
    "Answers are summary-first; when `truncated` is true, page the rest with get_run(run_id, section)."
)


def default_loaders() -> list[ToolLoader]:
    def load_project_tools() -> Sequence[Any]:
        from tools import load_tools  # the one place mcp_server imports tools

        return load_tools()

    return [load_builtin_tools, load_project_tools]


def build_app_state(settings: Settings) -> AppState:
    redactor = Redactor()
    install_redactor(redactor)  # run logs and the log filter redact with the same values
    audit = AuditLog(
        settings.audit_log, max_bytes=settings.audit_max_bytes, backups=settings.audit_backups, redactor=redactor
    )
    slots = RunSlots(settings.max_concurrent_runs, settings.max_queued_runs)
    executor = Executor(audit=audit, redactor=redactor, slots=slots, pass_env=settings.pass_env)
    runs = RunStore(
        ttl_s=settings.run_ttl_s,
        max_runs=settings.max_runs,
        max_bytes=settings.max_run_bytes,
        max_log_bytes=settings.max_log_bytes,
        max_runs_per_owner=settings.max_runs_per_owner,
        max_bytes_per_owner=settings.max_run_bytes_per_owner,
    )
    return AppState(settings=settings, runs=runs, executor=executor, redactor=redactor)


class CodeToolsServer:
    def __init__(self, settings: Settings, loaders: Sequence[ToolLoader] | None = None) -> None:
        self.settings = settings
        self._token_set = settings.token is not None
        self.app = build_app_state(settings)
        self.app.on_tools_changed = self.notify_tools_changed
        self.registry = ToolRegistry(self.app, loaders if loaders is not None else default_loaders())
        self.guards: list[CallGuard] = []
        self.rate_limiter: RateLimiter | None = None
        if settings.is_network:
            from mcp_server.ratelimit import rate_limiter_for  # network transports only

            self.rate_limiter = rate_limiter_for(settings)
            self.guards.append(self.rate_limiter)
        self.dispatcher = Dispatcher(self.app, self.registry, settings, self.guards)
        self.resources = RunResources(self.app.runs, self.app.redactor)
        self.bus = InMemorySubscriptionBus()
        self._legacy_sessions: dict[str, ServerSession] = {}
        self._poller_started = False
        self.server: Server[CodeToolsServer] = Server(
            "mcp-code-tools",
            version=__version__,
            title="mcp-code-tools",
            instructions=INSTRUCTIONS,
            lifespan=self._lifespan,
            get_tool_input_schema=self.registry.input_schema,
            on_list_tools=self._list_tools,
            on_call_tool=self._call_tool,
            on_list_resources=self._list_resources,
            on_list_resource_templates=self._list_resource_templates,
            on_read_resource=self._read_resource,
            on_subscriptions_listen=ListenHandler(self.bus),
        )
        self.features = ProtocolFeatures(self, self.bus, self.dispatcher.call_tool)
        self.features.install(self.server)  # logging, prompts, completions, run subscriptions
        self.init_options: InitializationOptions = self.server.create_initialization_options(
            NotificationOptions(tools_changed=True)
        )
        telemetry.install(self.server, self.app)  # when on: session id, run_id, durations, gauges

    # --- runtime ------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[CodeToolsServer]:
        """The process-wide runtime: background task group, pools; everything is closed on exit."""
        if self.app.task_group is not None:
            yield self
            return
        try:
            async with anyio.create_task_group() as tg:
                self.app.task_group = tg
                self.features.start(tg)
                try:
                    yield self
                finally:
                    with anyio.CancelScope(shield=True):
                        self.features.close()
                        self.app.runs.clear()
                        await self.app.services.aclose()
                        await self.app.executor.aclose()
                        if self.rate_limiter is not None:
                            await self.rate_limiter.aclose()
                    tg.cancel_scope.cancel()
        finally:
            self.app.task_group = None
            self._poller_started = False

    @contextlib.asynccontextmanager
    async def _lifespan(self, _server: Server[Any]) -> AsyncIterator[CodeToolsServer]:
        async with self.running():
            yield self

    async def serve_streams(
        self,
        read_stream: MemoryObjectReceiveStream[SessionMessage | Exception],
        write_stream: MemoryObjectSendStream[SessionMessage],
        connection: ConnectionInfo,
    ) -> None:
        """Serve one stream connection (stdio, WebSocket, in-memory) until its read side closes."""
        token = current_connection.set(connection)
        try:
            await serve_dual_era_loop(
                self.server, read_stream, write_stream, lifespan_state=self, init_options=self.init_options
            )
        finally:
            current_connection.reset(token)
            self.connection_closed(connection.owner)

    def connection_closed(self, owner: str | None) -> None:
        """A connection or HTTP session ended: its runs go, and the work still running for them."""
        telemetry.connection_closed(owner)
        if owner is None:
            return
        purged = self.app.runs.purge_owner(owner)
        self._legacy_sessions.pop(owner, None)
        self.features.connection_closed(owner)
        if purged:
            logger.info("connection %s closed: purged %d runs", owner, purged)

    # --- tools/list and list_changed -----------------------------------------------------------

    def _track(self, ctx: Any, info: ConnectionInfo) -> None:
        # A call served as one HTTP exchange (transports/http_exchange.py) has a per-call session
        # that cannot reach the client: the session's own, tracked from its other requests, stays.
        if (
            info.owner is not None
            and ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS
            and ctx.session.can_send_request
        ):
            self._legacy_sessions[info.owner] = ctx.session

    async def _list_tools(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        self._track(ctx, connection_for_request(ctx.request, trust_bearer=self._token_set))
        if await self.registry.refresh():
            await self.notify_tools_changed()
        self._start_poller()
        return await self.registry.list_page(params.cursor if params else None)

    def _start_poller(self) -> None:
        if self._poller_started or self.app.task_group is None:
            return
        self._poller_started = True
        self.app.task_group.start_soon(self._poll_tools)

    async def _poll_tools(self) -> None:
        while True:
            await anyio.sleep(self.settings.tool_poll_interval_s)
            try:
                if await self.registry.refresh():
                    await self.notify_tools_changed()
            except Exception:
                logger.exception("tool availability poll failed")

    async def notify_tools_changed(self) -> None:
        """`notifications/tools/list_changed` to handshake-era connections; a bus event for listeners."""
        for owner, session in list(self._legacy_sessions.items()):
            try:
                with anyio.move_on_after(5):
                    await session.send_tool_list_changed()
            except Exception:
                self._legacy_sessions.pop(owner, None)
        await self.bus.publish(ToolsListChanged())

    # --- tools/call (dispatch.py) and run:// resources (resources.py) ----------------------------

    async def _call_tool(self, ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        info = connection_for_request(ctx.request, trust_bearer=self._token_set)
        self._track(ctx, info)
        return await self.features.call_tool(ctx, info, params)  # logs the call to the client

    async def _list_resources(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListResourcesResult:
        return self.resources.list_resources(connection_for_request(ctx.request, trust_bearer=self._token_set))

    async def _list_resource_templates(
        self, ctx: Any, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return self.resources.list_templates()

    async def _read_resource(self, ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        info = connection_for_request(ctx.request, trust_bearer=self._token_set)
        return self.resources.read(info, str(params.uri))
