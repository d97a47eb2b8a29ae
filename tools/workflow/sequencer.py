"""Progress of concurrent phases in a deterministic order: phase order, then event order in a phase.

Pure state, no I/O. The phase at the head streams its events at once; the events of later phases
wait in their buffers until every phase before them has finished, whatever order they finish in.
"""

from __future__ import annotations

from collections.abc import Sequence


class OrderedEvents:
    def __init__(self, phases: Sequence[str], max_buffered: int = 10_000) -> None:
        self._order = list(phases)
        self._buffers: dict[str, list[str]] = {p: [] for p in phases}
        self._finished: set[str] = set()
        self._head = 0
        self._max_buffered = max_buffered
        self.dropped = 0
        """Events of a waiting phase beyond `max_buffered` (progress is advisory; memory is not)."""

    @property
    def head(self) -> str | None:
        return self._order[self._head] if self._head < len(self._order) else None

    def push(self, phase: str, event: str) -> list[str]:
        """Record an event of `phase`; returns the events that may be sent now, in order."""
        if phase == self.head:
            return [event]
        buffer = self._buffers[phase]
        if len(buffer) >= self._max_buffered:
            self.dropped += 1
        else:
            buffer.append(event)
        return []

    def finish(self, phase: str) -> list[str]:
        """`phase` sent its last event; returns what may be sent now (the next phases' backlogs)."""
        self._finished.add(phase)
        ready: list[str] = []
        while self.head is not None and self.head in self._finished:
            self._head += 1
            if self.head is not None:
                ready += self._buffers[self.head]
                self._buffers[self.head] = []
        return ready
