"""The HTTP sessions of one server, per client: pure state, no I/O.

The SDK's session manager serves the sessions; this is our ledger of them, kept from what passes the
front door (the `Mcp-Session-Id` of a response that opened one, each request of one, a DELETE or a
404 that ended one). It decides which session to end: the least recently used idle session of a
client at its cap (instead of refusing the client), and sessions idle past `idle_s`.

A session is idle when no request of it is in progress (an open GET stream is a request in
progress) and its owner has no run still running.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

BUSY_RECHECK_S = 60.0


@dataclass
class HttpSession:
    session_id: str
    client: str
    last_used: float
    in_flight: int = 0
    envelope: Any = None
    """What the client said in its `initialize` (`http_exchange.Envelope`), when read."""


class HttpSessions:
    def __init__(
        self,
        *,
        cap_per_client: int,
        idle_s: float,
        busy: Callable[[str], bool] = lambda session_id: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cap_per_client = cap_per_client
        self.idle_s = idle_s
        self._busy = busy
        """Whether a session has work of its own still running (a background run)."""
        self._clock = clock
        self._sessions: dict[str, HttpSession] = {}
        self._opening: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._sessions

    def ids(self) -> list[str]:
        return list(self._sessions)

    def count(self, client: str) -> int:
        """Sessions of `client`, those being opened included."""
        return self._opening[client] + sum(1 for s in self._sessions.values() if s.client == client)

    def has_room(self, client: str) -> bool:
        return self.count(client) < self.cap_per_client

    def begin_opening(self, client: str) -> None:
        self._opening[client] += 1

    def opened(self, client: str, session_id: str, envelope: Any = None) -> None:
        """The opening request's response named its new session (the request is still in progress)."""
        self._drop_opening(client)
        self._sessions[session_id] = HttpSession(session_id, client, self._clock(), in_flight=1, envelope=envelope)

    def envelope(self, session_id: str) -> Any:
        session = self._sessions.get(session_id)
        return session.envelope if session is not None else None

    def end_opening(self, client: str, session_id: str | None) -> None:
        """An opening request is done; `session_id` is the session it opened, if any."""
        if session_id is None:
            self._drop_opening(client)
        else:
            self.finished(session_id)

    def _drop_opening(self, client: str) -> None:
        self._opening[client] -= 1
        if self._opening[client] <= 0:
            del self._opening[client]

    def started(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.in_flight += 1
            session.last_used = self._clock()

    def finished(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is not None:
            session.in_flight = max(0, session.in_flight - 1)
            session.last_used = self._clock()

    def ended(self, session_id: str) -> HttpSession | None:
        """Forget a session (once): the caller purges its runs."""
        return self._sessions.pop(session_id, None)

    def _idle(self, session: HttpSession) -> bool:
        return session.in_flight == 0 and not self._busy(session.session_id)

    def least_recently_used_idle(self, client: str) -> str | None:
        """The session of `client` to end to make room for a new one, if one is idle."""
        idle = [s for s in self._sessions.values() if s.client == client and self._idle(s)]
        return min(idle, key=lambda s: s.last_used).session_id if idle else None

    def _touch_busy(self) -> bool:
        """A session whose run is still running is in use: its idle time starts once the run ends
        (seen at the latest `BUSY_RECHECK_S` later). True when any session is busy that way."""
        now = self._clock()
        busy = False
        for session in self._sessions.values():
            if session.in_flight == 0 and self._busy(session.session_id):
                session.last_used = now
                busy = True
        return busy

    def expired(self) -> list[str]:
        """Sessions idle for `idle_s` or more."""
        self._touch_busy()
        cutoff = self._clock() - self.idle_s
        return [s.session_id for s in self._sessions.values() if s.last_used <= cutoff and self._idle(s)]

    def next_expiry(self) -> float | None:
        """When to look again (clock time): the next idle session's expiry, or sooner while a
        session is busy with a run; None when there is nothing to watch."""
        busy = self._touch_busy()
        due = [s.last_used + self.idle_s for s in self._sessions.values() if self._idle(s)]
        if busy:
            due.append(self._clock() + min(self.idle_s, BUSY_RECHECK_S))
        return min(due) if due else None
