"""OrderedEvents: the client sees phase order, then event order in a phase, whatever the finishing order."""

from __future__ import annotations

import itertools

from tools.workflow.sequencer import OrderedEvents

PHASES = ["lint", "format", "analyze", "tests"]


def _play(finish_order: tuple[str, ...]) -> list[str]:
    events = OrderedEvents(PHASES)
    sent: list[str] = []
    # Every phase reports two events, interleaved, then they finish in `finish_order`.
    for step in ("a", "b"):
        for phase in reversed(PHASES):
            sent += events.push(phase, f"{phase}:{step}")
    for phase in finish_order:
        sent += events.push(phase, f"{phase}:end")
        sent += events.finish(phase)
    return sent


def test_every_finishing_order_gives_the_same_sequence() -> None:
    expected = [f"{p}:{s}" for p in PHASES for s in ("a", "b", "end")]
    for order in itertools.permutations(PHASES):
        assert _play(order) == expected, order


def test_the_head_phase_streams_at_once_and_later_ones_wait() -> None:
    events = OrderedEvents(["lint", "tests"])
    assert events.push("tests", "t1") == []
    assert events.push("lint", "l1") == ["l1"]
    assert events.finish("tests") == []
    assert events.finish("lint") == ["t1"]
    assert events.head is None


def test_a_waiting_phase_buffer_is_bounded() -> None:
    events = OrderedEvents(["lint", "tests"], max_buffered=3)
    for i in range(10):
        events.push("tests", str(i))
    assert events.dropped == 7
    assert events.finish("lint") == ["0", "1", "2"]
