"""Progress from a run to a client that may be slow: a bounded buffer that coalesces when full.

The event parser `put`s each finished test and never waits; `pump` (a task beside the run) sends
the updates in order, one notification at a time. A client that keeps up gets every update; one
that falls `capacity` behind gets fewer, newer ones (the newest always replaces the last queued),
instead of back-pressuring the test process through the parser. `drain` lets the pump send the
newest few of what is left at the end, bounded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import anyio

T = TypeVar("T")
CAPACITY = 64
DRAIN_S = 1.0
DRAIN_KEEP = 8
"""At the end, a client that fell behind gets only the newest few of what it has not seen: the
answer does not wait for a backlog."""


class ProgressBuffer(Generic[T]):
    def __init__(self, send: Callable[[T], Awaitable[None]], capacity: int = CAPACITY) -> None:
        self._send = send
        self._capacity = max(1, capacity)
        self._pending: deque[T] = deque()
        self._wake = anyio.Event()
        self._closing = False
        self._done = anyio.Event()
        self.sent = 0
        self.coalesced = 0
        """Updates replaced by a newer one before they could be sent."""

    def put(self, item: T) -> None:
        """Never waits: when full, the newest replaces the last update queued."""
        if len(self._pending) >= self._capacity:
            self._pending[-1] = item
            self.coalesced += 1
        else:
            self._pending.append(item)
        self._wake.set()

    async def pump(self) -> None:
        """Send updates in order as they come, until `drain` (then what is left) or cancelled."""
        try:
            while True:
                while self._pending:
                    await self._send(self._pending.popleft())
                    self.sent += 1
                if self._closing:
                    return
                await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            self._done.set()

    async def drain(self, timeout_s: float = DRAIN_S, keep: int = DRAIN_KEEP) -> None:
        """No more updates: wait (at most `timeout_s`) for the pump to send the newest `keep`."""
        while len(self._pending) > keep:
            self._pending.popleft()
            self.coalesced += 1
        self._closing = True
        self._wake.set()
        with anyio.move_on_after(timeout_s):
            await self._done.wait()
