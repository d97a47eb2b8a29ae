"""Subscriptions to runs: `notifications/resources/updated` for `run://{run_id}` and its `/log`.

A subscriber is a connection (handshake era: `resources/subscribe`, notified on the connection's
own channel) or the SDK's subscription bus (2026-07-28 era: `subscriptions/listen` with
`resource_subscriptions`, delivered by the SDK's `ListenHandler`). Either way a run's changes
(log lines, events, its result, its end) only mark its URIs pending; one flusher task per
subscriber sends what is pending at most every `interval_s`, so a chatty run costs a client a few
notifications a second, and the run's end is always sent.

Only the caller's own live runs can be subscribed to: anything else is the same "not found" as a
read. Each connection holds at most `max_per_connection` subscriptions. A subscription ends with
its connection (or listen stream), and when its run is purged, evicted or expires.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.abc
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS

from mcp_server.errors import NotFound
from mcp_server.runs import RunContext, RunStore

logger = logging.getLogger("mcp_server.subscriptions")

SEND_TIMEOUT_S: Final = 5.0

SendUpdate = Callable[[str], Awaitable[None]]
"""Sends `notifications/resources/updated` for one URI to one subscriber."""


def parse_run_uri(uri: str) -> tuple[str, str] | None:
    """`run://ID` -> (ID, ""), `run://ID/log` -> (ID, "log"), anything else -> None."""
    if not uri.startswith("run://"):
        return None
    run_id, _, part = uri[len("run://") :].partition("/")
    if not run_id or part not in ("", "log"):
        return None
    return run_id, part


def not_found(uri: str) -> MCPError:
    return MCPError(INVALID_PARAMS, f"resource {uri[:200]!r} not found")


@dataclass(eq=False)
class Subscriber:
    key: str
    send: SendUpdate
    uris: set[str] = field(default_factory=set)
    """Subscribed URIs (subscribing twice is once)."""
    pending: set[str] = field(default_factory=set)
    wake: anyio.Event = field(default_factory=anyio.Event)
    scope: anyio.CancelScope | None = None
    sent: int = 0


class RunSubscriptions:
    """Who watches which run, and the flushers that tell them, coalesced."""

    def __init__(self, runs: RunStore, *, max_per_connection: int = 100, interval_s: float = 0.25) -> None:
        self.runs = runs
        self.max_per_connection = max_per_connection
        self.interval_s = interval_s
        self._subscribers: dict[str, Subscriber] = {}
        self._watchers: dict[str, set[Subscriber]] = {}  # run_id -> subscribers
        self._runs: dict[str, RunContext] = {}  # run_id -> the watched run
        self.task_group: anyio.abc.TaskGroup | None = None

    # --- state --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return sum(len(s.uris) for s in self._subscribers.values())

    def count(self, key: str) -> int:
        sub = self._subscribers.get(key)
        return len(sub.uris) if sub is not None else 0

    def keys(self) -> list[str]:
        return list(self._subscribers)

    def holds(self, key: str, uri: str) -> bool:
        sub = self._subscribers.get(key)
        return sub is not None and uri in sub.uris

    def watched_runs(self) -> int:
        return len(self._runs)

    # --- subscribe / unsubscribe --------------------------------------------------------------

    def check(self, owner: str | None, uri: str) -> RunContext:
        """The caller's live run behind `uri`; "not found" for anything else (foreign, expired, bad)."""
        parsed = parse_run_uri(uri)
        if parsed is None:
            raise not_found(uri)
        try:
            return self.runs.get(owner, parsed[0])
        except NotFound:
            raise not_found(uri) from None

    def subscribe(self, key: str, owner: str | None, uris: Iterable[str], send: SendUpdate) -> None:
        """Subscribe `key` to each URI (all or none: a bad URI or the cap refuses the lot)."""
        wanted = list(dict.fromkeys(uris))
        checked = [(uri, self.check(owner, uri)) for uri in wanted]
        sub = self._subscribers.get(key)
        have = set(sub.uris) if sub is not None else set()
        new = [u for u, _ in checked if u not in have]
        if len(have) + len(new) > self.max_per_connection:
            raise MCPError(
                INVALID_PARAMS,
                f"too many subscriptions: a connection may hold {self.max_per_connection} "
                f"(it holds {len(have)}); unsubscribe from finished runs first",
            )
        if sub is None:
            sub = Subscriber(key=key, send=send)
            self._subscribers[key] = sub
            self._start_flusher(sub)
        for uri, run in checked:
            sub.uris.add(uri)
            self._watch(run, sub)
            if not run.running:
                self._mark(sub, uri)  # already over: say so once, at once

    def unsubscribe(self, key: str, uris: Iterable[str]) -> None:
        sub = self._subscribers.get(key)
        if sub is None:
            return
        for uri in uris:
            sub.uris.discard(uri)
            sub.pending.discard(uri)
        self._unwatch_idle(sub)
        if not sub.uris:
            self.connection_closed(key)

    def connection_closed(self, key: str) -> None:
        """The connection (or listen stream) ended: its subscriptions and its flusher go."""
        sub = self._subscribers.pop(key, None)
        if sub is None:
            return
        sub.uris.clear()
        sub.pending.clear()
        self._unwatch_idle(sub)
        if sub.scope is not None:
            sub.scope.cancel()

    def clear(self) -> None:
        for key in list(self._subscribers):
            self.connection_closed(key)

    # --- run changes --------------------------------------------------------------------------

    def _watch(self, run: RunContext, sub: Subscriber) -> None:
        subs = self._watchers.setdefault(run.run_id, set())
        subs.add(sub)
        if run.run_id not in self._runs:
            self._runs[run.run_id] = run
            run.watchers.append(self.run_changed)

    def _unwatch_idle(self, sub: Subscriber) -> None:
        live = {parsed[0] for uri in sub.uris if (parsed := parse_run_uri(uri)) is not None}
        for run_id in [r for r, subs in self._watchers.items() if sub in subs and r not in live]:
            self._forget(run_id, sub)

    def _forget(self, run_id: str, sub: Subscriber) -> None:
        subs = self._watchers.get(run_id)
        if subs is None:
            return
        subs.discard(sub)
        if not subs:
            del self._watchers[run_id]
            run = self._runs.pop(run_id, None)
            if run is not None:
                with contextlib.suppress(ValueError):
                    run.watchers.remove(self.run_changed)

    def run_changed(self, run: RunContext) -> None:
        """A watched run changed (log, events, result, end, or it was dropped): mark it pending."""
        gone = run.dropped
        for sub in list(self._watchers.get(run.run_id, ())):
            for uri in list(sub.uris):
                parsed = parse_run_uri(uri)
                if parsed is not None and parsed[0] == run.run_id:
                    self._mark(sub, uri)
                    if gone:  # purged, evicted or expired: one last update, then the subscription ends
                        sub.uris.discard(uri)
            if gone:
                self._forget(run.run_id, sub)

    def _mark(self, sub: Subscriber, uri: str) -> None:
        sub.pending.add(uri)
        sub.wake.set()

    # --- flushers -----------------------------------------------------------------------------

    def _start_flusher(self, sub: Subscriber) -> None:
        if self.task_group is None:
            raise MCPError(INVALID_PARAMS, "subscriptions are not available: the server is not running")
        sub.scope = anyio.CancelScope()
        self.task_group.start_soon(self._flush_loop, sub)

    async def _flush_loop(self, sub: Subscriber) -> None:
        assert sub.scope is not None
        with sub.scope:
            while True:
                await sub.wake.wait()
                sub.wake = anyio.Event()
                pending, sub.pending = sorted(sub.pending), set()
                for uri in pending:
                    try:
                        with anyio.fail_after(SEND_TIMEOUT_S):
                            await sub.send(uri)
                        sub.sent += 1
                    except Exception as exc:  # the client is gone or stuck: end its subscriptions
                        logger.info("subscriber %s: update not delivered (%s); ending it", sub.key, type(exc).__name__)
                        self.connection_closed(sub.key)
                        return
                await anyio.sleep(self.interval_s)  # coalescing window: changes meanwhile wait for it
