"""The protocol surface beyond tools and resource reads: logging, run subscriptions, completions,
prompts. `ProtocolFeatures.install` registers their handlers on the SDK `Server` (public
`add_request_handler`); `CodeToolsServer` calls `start`/`close` with its runtime and
`connection_closed` when a connection or HTTP session ends.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.abc
import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.subscriptions import ListenHandler, ResourceUpdated, SubscriptionBus

from mcp_server.completions import Completer
from mcp_server.connections import ConnectionInfo, connection_for_request
from mcp_server.logging_capability import ClientLogger, LogLevels, allowed_levels, current_client_logger
from mcp_server.prompts import PromptCatalog, PromptDeps
from mcp_server.subscriptions import RunSubscriptions

if TYPE_CHECKING:
    from mcp_server.server import CodeToolsServer

CallTool = Callable[[Any, ConnectionInfo, types.CallToolRequestParams], Awaitable[types.CallToolResult]]


def connection_key(info: ConnectionInfo) -> str:
    return info.owner if info.owner is not None else f"{info.id}:{info.client}"


class ProtocolFeatures:
    def __init__(self, app: CodeToolsServer, bus: SubscriptionBus, call_tool: CallTool) -> None:
        settings = app.settings
        self._app = app
        self._trust_bearer = settings.token is not None
        self._call = call_tool
        self.log_levels = LogLevels()
        self.prompts = PromptCatalog(page_size=settings.page_size)
        self.completer = Completer(app.app.runs, settings.roots, self.prompts)
        self.subscriptions = RunSubscriptions(
            app.app.runs, max_per_connection=settings.max_subscriptions_per_connection
        )
        self.bus = bus
        self.listen = ListenHandler(bus)

    def install(self, server: Server[Any]) -> None:
        server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self._set_level)
        server.add_request_handler("prompts/list", types.PaginatedRequestParams, self._list_prompts)
        server.add_request_handler("prompts/get", types.GetPromptRequestParams, self._get_prompt)
        server.add_request_handler("completion/complete", types.CompleteRequestParams, self._complete)
        server.add_request_handler("resources/subscribe", types.SubscribeRequestParams, self._subscribe)
        server.add_request_handler("resources/unsubscribe", types.UnsubscribeRequestParams, self._unsubscribe)
        server.add_request_handler("subscriptions/listen", types.SubscriptionsListenRequestParams, self._listen)

    def start(self, task_group: anyio.abc.TaskGroup) -> None:
        self.subscriptions.task_group = task_group

    def close(self) -> None:
        self.subscriptions.clear()
        self.listen.close()
        self.subscriptions.task_group = None

    def connection_closed(self, owner: str) -> None:
        self.log_levels.drop(owner)
        self.subscriptions.connection_closed(owner)

    def _info(self, ctx: Any) -> ConnectionInfo:
        return connection_for_request(ctx.request, trust_bearer=self._trust_bearer)

    # --- logging ------------------------------------------------------------------------------

    async def _set_level(self, ctx: Any, params: types.SetLevelRequestParams) -> types.EmptyResult:
        self.log_levels.set_level(connection_key(self._info(ctx)), params.level)
        return types.EmptyResult()

    def client_logger(self, ctx: Any, info: ConnectionInfo) -> ClientLogger:
        state = self.log_levels.state(connection_key(info))
        allowed = allowed_levels(ctx.protocol_version, ctx.meta, state.level)
        request_id = ctx.request_id
        session = ctx.session

        async def send(note: types.LoggingMessageNotification) -> None:
            await session.send_notification(note, related_request_id=request_id)

        return ClientLogger(send, allowed, state, self._app.app.redactor)

    async def call_tool(
        self, ctx: Any, info: ConnectionInfo, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        """`tools/call` with the call's events logged to the client (and `ToolContext.log` wired)."""
        log = self.client_logger(ctx, info)
        token = current_client_logger.set(log)
        started = time.perf_counter()
        try:
            await log.log("debug", {"event": "tool_call", "tool": params.name})
            result = await self._call(ctx, info, params)
            ms = round((time.perf_counter() - started) * 1000, 1)
            event = {"event": "tool_result", "tool": params.name, "is_error": bool(result.is_error), "ms": ms}
            await log.log("info", event)  # an isError result is an answer, not a server problem
            return result
        finally:
            current_client_logger.reset(token)

    # --- prompts ------------------------------------------------------------------------------

    async def _list_prompts(self, ctx: Any, params: types.PaginatedRequestParams | None) -> types.ListPromptsResult:
        return self.prompts.list_page(params.cursor if params else None)

    async def _get_prompt(self, ctx: Any, params: types.GetPromptRequestParams) -> types.GetPromptResult:
        info = self._info(ctx)
        self.prompts.check_arguments(params.name, params.arguments)  # -32602 before any work

        async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
            return await self.call_tool(ctx, info, types.CallToolRequestParams(name=name, arguments=arguments))

        def last_run(tool: str) -> Any:
            if info.owner is None:
                return None
            runs = [r for r in self._app.app.runs.list(info.owner) if r.tool == tool]
            return runs[-1] if runs else None

        deps = PromptDeps(
            call_tool=call_tool, has_tool=lambda n: self._app.registry.get(n) is not None, last_run=last_run
        )
        return await self.prompts.get_prompt(deps, params.name, params.arguments)

    # --- completions --------------------------------------------------------------------------

    async def _complete(self, ctx: Any, params: types.CompleteRequestParams) -> types.CompleteResult:
        return await self.completer.complete(self._info(ctx).owner, params)

    # --- subscriptions ------------------------------------------------------------------------

    async def _subscribe(self, ctx: Any, params: types.SubscribeRequestParams) -> types.EmptyResult:
        info = self._info(ctx)
        session = ctx.session

        async def send(uri: str) -> None:
            await session.send_resource_updated(uri)

        self.subscriptions.subscribe(connection_key(info), info.owner, [str(params.uri)], send)
        return types.EmptyResult()

    async def _unsubscribe(self, ctx: Any, params: types.UnsubscribeRequestParams) -> types.EmptyResult:
        info = self._info(ctx)
        key = connection_key(info)
        uri = str(params.uri)
        if self.subscriptions.holds(key, uri):
            self.subscriptions.unsubscribe(key, [uri])
        else:
            self.subscriptions.check(info.owner, uri)  # not subscribed: fine if it is yours, else not found
        return types.EmptyResult()

    async def _listen(
        self, ctx: Any, params: types.SubscriptionsListenRequestParams
    ) -> types.SubscriptionsListenResult:
        """The SDK's `ListenHandler`, once the run URIs asked for are checked (own, live, capped)."""
        uris = list(params.notifications.resource_subscriptions or ())
        if not uris:
            return await self.listen(ctx, params)
        info = self._info(ctx)
        key = f"listen:{connection_key(info)}:{ctx.request_id}"
        bus = self.bus

        async def publish(uri: str) -> None:
            await bus.publish(ResourceUpdated(uri=uri))

        # Checked (own, live, capped) before the SDK acknowledges the stream; one flusher per stream.
        self.subscriptions.subscribe(key, info.owner, uris, publish)
        try:
            return await self.listen(ctx, params)
        finally:
            self.subscriptions.connection_closed(key)
