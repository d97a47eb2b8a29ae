"""The run queue: `capacity` slots for runs of project code and a FIFO of waiters in front of them.

Backpressure first: a run waits its turn; only past `max_queued` waiters is a call refused
(`Busy`), and that rule lives here alone. `reserve()` takes the place at once (a call that answers
before its run starts holds its place from the moment it is accepted); `slot()` is reserve-and-wait.
A slot is handed from one holder to the next waiter directly (no barging), and cancellation while
queued gives the place (or a slot handed over meanwhile) back.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator

import anyio

from mcp_server.errors import Busy


class RunSlots:
    """A FIFO of waiters in front of `capacity` slots; more than `max_queued` waiting is `Busy`."""

    def __init__(self, capacity: int, max_queued: int) -> None:
        self.capacity = capacity
        self.max_queued = max_queued
        self.running = 0
        self._waiters: deque[anyio.Event] = deque()
        self.total_wait_s = 0.0
        self.admitted = 0

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def reserve(self) -> SlotTicket:
        """Take a place in the queue now (`Busy` past the queue limit: the busy rule is here and
        nowhere else); `async with ticket` waits for the slot later (a background run), and
        `ticket.cancel()` gives up a place never entered."""
        if self.running >= self.capacity or self._waiters:
            if len(self._waiters) >= self.max_queued:
                raise Busy(
                    f"busy: {self.running} runs in progress and {len(self._waiters)} queued "
                    f"(settings max_concurrent_runs / max_queued_runs); retry in a few seconds"
                )
            event = anyio.Event()
            self._waiters.append(event)
            return SlotTicket(self, event)
        self.running += 1
        return SlotTicket(self, None)

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[float]:
        """Hold a slot; yields the seconds spent queued. Safe to cancel while queued."""
        async with self.reserve() as waited:
            yield waited

    def _release(self) -> None:
        if self._waiters:
            self._waiters.popleft().set()  # hand the slot over directly: FIFO, no barging
        else:
            self.running -= 1


class SlotTicket:
    """A place in `RunSlots`' queue (or a slot already granted), taken by `RunSlots.reserve()`."""

    def __init__(self, slots: RunSlots, event: anyio.Event | None) -> None:
        self._slots = slots
        self._event = event
        self._taken = time.monotonic()
        self._done = False

    async def __aenter__(self) -> float:
        """Wait for the slot; the seconds spent queued. Safe to cancel while queued."""
        if self._done:
            raise RuntimeError("a slot ticket is used once")
        event = self._event
        if event is not None:
            try:
                await event.wait()
            except BaseException:
                self.cancel()
                raise
        waited = time.monotonic() - self._taken
        self._slots.total_wait_s += waited
        self._slots.admitted += 1
        return waited

    async def __aexit__(self, *exc: object) -> None:
        self.cancel()

    def cancel(self) -> None:
        """Give the place (or the slot) up. Idempotent."""
        if self._done:
            return
        self._done = True
        event = self._event
        if event is not None and not event.is_set():
            self._slots._waiters.remove(event)
        else:
            self._slots._release()  # held, or handed to us before we took it: pass it on
