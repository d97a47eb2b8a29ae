"""The HTTP session ledger as pure state: LRU idle choice, busy sessions, idle expiry."""

from __future__ import annotations

from mcp_server.transports.http_sessions import HttpSessions


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def open_session(ledger: HttpSessions, client: str, session_id: str) -> None:
    ledger.begin_opening(client)
    ledger.opened(client, session_id)
    ledger.end_opening(client, session_id)


def test_the_least_recently_used_idle_session_of_that_client_is_chosen() -> None:
    clock = FakeClock()
    busy: set[str] = set()
    ledger = HttpSessions(cap_per_client=3, idle_s=60, busy=busy.__contains__, clock=clock)
    for n, sid in enumerate(["a1", "a2", "a3"]):
        clock.now += 1
        open_session(ledger, "ip:a", sid)
        del n
    open_session(ledger, "ip:b", "b1")
    assert not ledger.has_room("ip:a") and ledger.has_room("ip:b")
    clock.now += 1
    ledger.started("a1")
    ledger.finished("a1")  # a1 used again: a2 is now the oldest
    assert ledger.least_recently_used_idle("ip:a") == "a2"
    ledger.started("a2")  # a request in progress (an open GET stream, say): not idle
    assert ledger.least_recently_used_idle("ip:a") == "a3"
    busy.add("a3")  # a run still running: not idle either
    assert ledger.least_recently_used_idle("ip:a") == "a1"
    ledger.started("a1")
    assert ledger.least_recently_used_idle("ip:a") is None  # all busy: the caller refuses (429)


def test_sessions_being_opened_count_against_the_cap() -> None:
    ledger = HttpSessions(cap_per_client=2, idle_s=60)
    ledger.begin_opening("ip:a")
    ledger.begin_opening("ip:a")
    assert not ledger.has_room("ip:a")
    ledger.end_opening("ip:a", None)  # refused by the SDK: nothing opened
    ledger.opened("ip:a", "s1")
    assert ledger.count("ip:a") == 1 and "s1" in ledger


def test_idle_expiry_skips_busy_sessions_and_ends_once() -> None:
    clock = FakeClock()
    busy: set[str] = set()
    ledger = HttpSessions(cap_per_client=9, idle_s=60, busy=busy.__contains__, clock=clock)
    open_session(ledger, "ip:a", "old")
    clock.now += 30
    open_session(ledger, "ip:a", "young")
    busy.add("young")
    assert ledger.next_expiry() == 1060.0
    clock.now += 31
    assert ledger.expired() == ["old"]
    assert ledger.ended("old") is not None and ledger.ended("old") is None
    clock.now += 100
    assert ledger.expired() == []  # young has a run still running
    assert ledger.next_expiry() == clock.now + 60  # looked at again while it is busy


def test_a_session_idle_time_starts_when_its_run_ends() -> None:
    """A client that started a long background run and comes back after it finished still finds it."""
    clock = FakeClock()
    busy = {"s"}
    ledger = HttpSessions(cap_per_client=9, idle_s=600, busy=busy.__contains__, clock=clock)
    open_session(ledger, "ip:a", "s")
    for _ in range(30):  # a 30-minute run, the sweeper looking every minute
        clock.now += 60
        assert ledger.expired() == []
    busy.clear()  # the run ends
    clock.now += 60
    assert ledger.expired() == []  # idle for at most 2 minutes, not 31
    clock.now += 600
    assert ledger.expired() == ["s"]
