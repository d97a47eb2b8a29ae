"""The logging capability: server and tool events to the client as `notifications/message`.

Both protocol eras, one path:
- handshake era: `logging/setLevel` sets the level of the connection (kept here per connection,
  purged when it ends; `warning` until set: a client that wants more asks);
- 2026-07-28 era: there is no `logging/setLevel`; a client opts in per request with the reserved
  `_meta["io.modelcontextprotocol/logLevel"]`, and entries ride that request's stream only.

Every entry is redacted (the same redactor as results) and passes a per-connection token bucket,
so a chatty run cannot flood a client: what the bucket drops is counted and reported in the next
entry that passes. Sending is advisory: a gone client never fails the call that logs.
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final, get_args

import anyio
import mcp_types as types
from mcp_types import LOG_LEVEL_META_KEY, LoggingLevel
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcp_server.redact import Redactor

LEVELS: Final[tuple[LoggingLevel, ...]] = get_args(LoggingLevel)
"""Severity order, lowest first (RFC 5424, as the spec's enum lists them)."""
DEFAULT_LEVEL: Final[LoggingLevel] = "warning"
LOGGER_NAME: Final = "mcp-code-tools"
SEND_TIMEOUT_S: Final = 2.0
MAX_DATA_CHARS: Final = 4000


current_client_logger: ContextVar[ClientLogger | None] = ContextVar("mcp_code_tools_client_logger", default=None)
"""The client logger of the request being served (set around `tools/call`): `ToolContext.log`."""


async def log_to_client(level: LoggingLevel, data: Any, logger: str = LOGGER_NAME) -> bool:
    """Log to the client of the current request, if there is one and it wants this level."""
    client = current_client_logger.get()
    return await client.log(level, data, logger) if client is not None else False


def at_least(level: LoggingLevel) -> frozenset[LoggingLevel]:
    return frozenset(LEVELS[LEVELS.index(level) :])


class TokenBucket:
    """`rate` entries a second on average, bursts up to `burst`."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


@dataclass
class ConnectionLog:
    """One connection's logging state: its level (handshake era), its bucket, what was dropped."""

    bucket: TokenBucket
    level: LoggingLevel = DEFAULT_LEVEL
    dropped: int = 0
    sent: int = 0


@dataclass
class LogLevels:
    """Logging state per connection key, bounded (least recently used forgotten first)."""

    rate: float = 20.0
    burst: int = 50
    max_connections: int = 4096
    clock: Callable[[], float] = time.monotonic
    _items: OrderedDict[str, ConnectionLog] = field(default_factory=OrderedDict)

    def state(self, key: str) -> ConnectionLog:
        item = self._items.get(key)
        if item is None:
            item = ConnectionLog(bucket=TokenBucket(self.rate, self.burst, self.clock))
            self._items[key] = item
            while len(self._items) > self.max_connections:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(key)
        return item

    def set_level(self, key: str, level: LoggingLevel) -> None:
        self.state(key).level = level

    def drop(self, key: str) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


SendFn = Callable[[types.LoggingMessageNotification], Awaitable[None]]


class ClientLogger:
    """One request's way to log to its client: the era's gate, redaction, the connection's bucket."""

    def __init__(self, send: SendFn, allowed: frozenset[LoggingLevel], state: ConnectionLog, redactor: Redactor):
        self._send = send
        self.allowed = allowed
        self._state = state
        self._redactor = redactor

    def enabled(self, level: LoggingLevel) -> bool:
        return level in self.allowed

    async def log(self, level: LoggingLevel, data: Any, logger: str = LOGGER_NAME) -> bool:
        """Send one entry if the level is enabled and the bucket allows; True if it was sent."""
        if level not in self.allowed:
            return False
        state = self._state
        if not state.bucket.take():
            state.dropped += 1
            return False
        payload = _bounded(self._redactor.redact_value(data))  # redacted before clipped
        if state.dropped:
            payload = (
                {"message": payload, "dropped_before": state.dropped}
                if not isinstance(payload, dict)
                else {
                    **payload,
                    "dropped_before": state.dropped,
                }
            )
            state.dropped = 0
        note = types.LoggingMessageNotification(
            params=types.LoggingMessageNotificationParams(level=level, logger=logger, data=payload)
        )
        with contextlib.suppress(Exception), anyio.move_on_after(SEND_TIMEOUT_S):
            await self._send(note)
            state.sent += 1
            return True
        return False


def _bounded(data: Any) -> Any:
    if isinstance(data, str) and len(data) > MAX_DATA_CHARS:
        return data[:MAX_DATA_CHARS] + f"…[{len(data) - MAX_DATA_CHARS} characters cut]"
    return data


def allowed_levels(protocol_version: str, meta: Any, connection_level: LoggingLevel) -> frozenset[LoggingLevel]:
    """What may be sent for one request: the connection's level (handshake era), or the request's
    `_meta` opt-in (2026-07-28 era; absent or unknown means nothing)."""
    if protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return at_least(connection_level)
    requested = _meta_level(meta)
    return at_least(requested) if requested is not None else frozenset()


def _meta_level(meta: Any) -> LoggingLevel | None:
    value = meta.get(LOG_LEVEL_META_KEY) if isinstance(meta, Mapping) else None
    return parse_level(value)


def parse_level(value: object) -> LoggingLevel | None:
    for level in LEVELS:
        if value == level:
            return level
    return None
