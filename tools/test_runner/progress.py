"""Progress from a run to a client that may be slow: a bounded buffer that coalesces when full.

The event parser `put`s each finished test and never waits; `pump` (a task beside the run) sends
the updates in order, one notification at a time. A client that keeps up gets every update; one
that falls `capacity` behind gets fewer, newer ones (the newest always replaces the last queued),
instead of back-pressuring the test process through the parser. `drain` lets the pump send the
newest few of what is left at the end, as many as the client's measured pace sends within
`DRAIN_BUDGET_S` (at least the last one): the answer waits for a slow client's last update, not
for its backlog.
"""

from __future__ import annotations

import time
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
DRAIN_BUDGET_S = 0.005
"""What the newest few may cost at the end, at the client's pace: a client that takes 10 ms per
update gets only the last one, one that takes 0.1 ms gets `DRAIN_KEEP`."""


class ProgressBuffer(Generic[T]):
    def __init__(
        self,
        send: Callable[[T], Awaitable[None]],
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._send = send
        self._clock = clock
        self._capacity = max(1, capacity)
        self._pending: deque[T] = deque()
        self._wake = anyio.Event()
        self._closing = False
        self._done = anyio.Event()
        self.sent = 0
        self._send_s = 0.0
        """Time spent in `send` so far (its mean is the client's pace)."""
        self._sending_since: float | None = None
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
                    started = self._sending_since = self._clock()
                    await self._send(self._pending.popleft())
                    self._sending_since = None
                    self._send_s += self._clock() - started
                    self.sent += 1
                if self._closing:
                    return
                await self._wake.wait()
                self._wake = anyio.Event()
        finally:
            self._done.set()

    def _keep(self) -> int:
        """How many of the newest a drain sends: as many as fit `DRAIN_BUDGET_S` at the pace so far."""
        spent, sends = self._send_s, self.sent
        if self._sending_since is not None:  # one in flight counts with what it took so far
            spent, sends = spent + self._clock() - self._sending_since, sends + 1
        if not sends or spent <= 0:
            return DRAIN_KEEP
        pace = spent / sends
        return max(1, min(DRAIN_KEEP, int(DRAIN_BUDGET_S / pace)))

    async def drain(self, timeout_s: float = DRAIN_S, keep: int | None = None) -> None:
        """No more updates: wait (at most `timeout_s`) for the pump to send the newest `keep`
        (default: as many as the client's pace sends within `DRAIN_BUDGET_S`, at least one)."""
        if keep is None:
            keep = self._keep()
        while len(self._pending) > keep:
            self._pending.popleft()
            self.coalesced += 1
        self._closing = True
        self._wake.set()
        with anyio.move_on_after(timeout_s):
            await self._done.wait()
