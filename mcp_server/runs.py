"""Run contexts: where every sizeable result lives, under an unguessable `run_id`.

Pure state, no I/O: the store is a dict with a deadline per context (pushed forward on access,
swept lazily), an owner per context, and caps on count and bytes per owner and in all (finished
runs evicted least recently used first; running work is never evicted to make room for another
owner). An unknown run and a run of another owner get the same `NotFound`.
"""

from __future__ import annotations

import logging
import secrets
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio

from mcp_server.errors import Busy, NotFound
from mcp_server.redact import Redactor, StreamRedactor, process_redactor

PUBLIC_OWNER = None
"""Owner of runs made where no connection identity exists (sessionless HTTP without a token):
readable by whoever holds the run_id, never listed."""


class RunLog:
    """A run's text log, capped at exactly `max_bytes` (UTF-8): its head, its tail, and a line
    saying how much was cut between them. Redacted before anything is cut.

    The head is redacted as it is written (a stream redactor: a secret split across two writes is
    still one secret). Once the head is full, what follows is kept raw (only the last stretch, with
    `TAIL_CONTEXT` characters more than the tail shows) and redacted when the log is read, before
    the tail is cut from it: text that is dropped from the middle never leaves the server, so it is
    never redacted, and a run that prints 500 MB costs the redaction of a few MB.
    """

    MARK_ROOM = 64
    """Bytes kept for the line that says what was cut."""
    TAIL_CONTEXT = 64 * 1024
    """Raw characters kept before the tail's window: a secret that starts there is still seen whole."""

    on_write: Callable[[], None] | None = None
    """Called on each write: the run's `changed` (subscriptions to the run)."""

    def __init__(self, max_bytes: int, redactor: Redactor | None = None) -> None:
        self.max_bytes = max(256, max_bytes)
        room = self.max_bytes - self.MARK_ROOM
        self._head_room = room // 2
        self._tail_room = room - self._head_room
        self._redactor = redactor or process_redactor()
        self._stream: StreamRedactor | None = self._redactor.stream()
        self._head: list[str] = []
        self._head_bytes = 0
        self._tail: deque[str] = deque()
        self._tail_chars = 0
        self._keep_chars = self._tail_room + self.TAIL_CONTEXT
        self._rendered: str | None = None
        self.dropped = 0
        """Characters dropped from the middle before the tail's window."""
        self.total = 0
        """Characters written (before redaction)."""

    def write(self, text: str) -> None:
        if not text:
            return
        if self.on_write is not None:
            self.on_write()
        self.total += len(text)
        self._rendered = None
        stream = self._stream
        if stream is None:
            self._to_tail(text)
            return
        released = stream.feed(text)
        if self._head_bytes < self._head_room:
            released = self._to_head(released)
        self._to_tail(released)
        if self._head_bytes >= self._head_room and not stream.swallowing:
            self._stream = None  # from here on the tail is kept raw and redacted when read
            self._to_tail(stream.take_pending())

    def _to_head(self, text: str) -> str:
        """Keep what fits in the head; the rest (redacted) is returned."""
        room = self._head_room - self._head_bytes
        data = text.encode("utf-8", "surrogatepass")
        if len(data) <= room:
            self._head.append(text)
            self._head_bytes += len(data)
            return ""
        part = data[:room].decode("utf-8", "ignore")  # never half a character
        self._head.append(part)
        self._head_bytes = self._head_room  # full (a split character leaves a byte or three unused)
        return text[len(part) :]

    def _to_tail(self, text: str) -> None:
        if not text:
            return
        self._tail.append(text)
        self._tail_chars += len(text)
        while len(self._tail) > 1 and self._tail_chars - len(self._tail[0]) >= self._keep_chars:
            gone = self._tail.popleft()
            self._tail_chars -= len(gone)
            self.dropped += len(gone)
        if self._tail_chars > 2 * self._keep_chars:  # one huge write: keep its end only
            joined = "".join(self._tail)
            keep = joined[-self._keep_chars :]
            self.dropped += len(joined) - len(keep)
            self._tail = deque([keep])
            self._tail_chars = len(keep)

    def text(self) -> str:
        """The log so far, redacted, within the cap (what redaction still holds back included)."""
        if self._rendered is None:
            self._rendered = self._render()
        return self._rendered

    def _render(self) -> str:
        head = "".join(self._head)
        tail = "".join(self._tail)
        if self._stream is not None:
            tail += self._stream.peek()
        if self._stream is None or self.dropped:
            tail = self._redactor.redact(tail)  # before the tail is cut from it
        data = tail.encode("utf-8", "surrogatepass")
        if not self.dropped and self._head_bytes + len(data) <= self.max_bytes:
            return head + tail
        keep = data[max(0, len(data) - self._tail_room) :].decode("utf-8", "ignore")
        cut = self.dropped + len(tail) - len(keep)
        return f"{head}\n[... {cut} characters dropped ...]\n{keep}"

    def __len__(self) -> int:
        return self._head_bytes + min(self._tail_chars, self._tail_room)


@dataclass(eq=False)
class RunContext:
    run_id: str
    owner: str | None
    tool: str
    created: float
    deadline: float
    log: RunLog
    summary: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    finished: anyio.Event = field(default_factory=anyio.Event)
    cancel_scope: anyio.CancelScope | None = None
    size: int = 0
    max_events: int = 10_000
    held: int = 0
    """Estimated bytes held by `result` and `summary` (`held_bytes`), measured once when stored."""
    watchers: list[Callable[[RunContext], None]] = field(default_factory=list)
    """Called (synchronously, on the loop) when the run changes, ends or is dropped: subscriptions."""
    dropped: bool = False

    def __post_init__(self) -> None:
        self.log.on_write = self.changed

    @property
    def running(self) -> bool:
        return not self.finished.is_set()

    def changed(self) -> None:
        for watcher in list(self.watchers):
            try:
                watcher(self)
            except Exception:  # a watcher must never fail the run
                logging.getLogger("mcp_server").exception("run watcher failed")

    def add_event(self, event: dict[str, Any]) -> None:
        if len(self.events) < self.max_events:
            self.events.append(event)
            self.changed()

    def cancel(self) -> None:
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()


HELD_SAMPLE = 64
"""Items of a long list looked at to estimate what the whole list holds."""


def held_bytes(value: Any, sample: int = HELD_SAMPLE) -> int:
    """An estimate of the memory `value` (a JSON-like tree) holds, in bytes: `sys.getsizeof` over
    the tree, each object once (strings and values shared between items count once), each long list
    estimated from an even sample of its items. Never serializes: cheap for a result of any size.
    The object tree a run keeps holds ~2-4x its JSON size; this counts what is held."""
    return 0 if value is None else _held(value, sample, set())


def _held(value: Any, sample: int, seen: set[int]) -> int:
    if id(value) in seen:
        return 0
    seen.add(id(value))
    size = sys.getsizeof(value)
    if isinstance(value, dict):
        return size + sum(_held(k, sample, seen) + _held(v, sample, seen) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        if len(value) <= sample:
            return size + sum(_held(v, sample, seen) for v in value)
        picked = value[:: len(value) // sample][:sample]
        return size + int(sum(_held(v, sample, seen) for v in picked) * len(value) / len(picked))
    return size


NOT_KEPT = "not_kept"
"""A result's field saying why (part of) it could not be kept."""


def cut_to_fit(result: dict[str, Any], room: int, held: int, cap: int) -> dict[str, Any]:
    """`result` cut to about `room` bytes held: every value but lists as it is, and the first items
    of each list sharing the room left (what one list leaves goes to the next); `truncated` and a
    `not_kept` note naming what was dropped and why. Only the items looked at are measured."""
    kept: dict[str, Any] = {k: v for k, v in result.items() if not isinstance(v, list)}
    used = held_bytes(kept)
    lists = [k for k, v in result.items() if isinstance(v, list)]
    cut: dict[str, list[Any]] = {}
    dropped: list[str] = []
    for n, key in enumerate(lists):
        value: list[Any] = result[key]
        share = max(0, room - used) // (len(lists) - n)
        items: list[Any] = []
        taken = 0
        for item in value:
            size = held_bytes(item) + 8
            if taken + size > share:
                break
            items.append(item)
            taken += size
        used += taken
        cut[key] = items
        if len(items) < len(value):
            dropped.append(f"{key}: {len(items):,} of {len(value):,} kept")
    kept = {k: cut.get(k, v) for k, v in result.items()}  # the original key order
    kept["truncated"] = True
    kept[NOT_KEPT] = (
        f"the whole result could not be kept for get_run: it holds about {held:,} bytes, over this client's "
        f"cap of {cap:,} (settings max_run_bytes_per_owner, max_run_bytes); "
        + ("; ".join(dropped) if dropped else "its lists were kept")
        + "; narrow the request for the rest"
    )
    return kept


class RunStore:
    """Owner-scoped run contexts with a TTL refreshed on access, and caps on count and bytes.

    Two levels of caps: each owner (a connection, an HTTP session, a token) holds at most
    `max_runs_per_owner` runs and `max_bytes_per_owner` bytes, and all owners together at most
    `max_runs` and `max_bytes`. Making room never touches another owner's running work: an owner
    over its own cap loses its own least recently used finished runs; over the global cap, its own
    finished runs go first, then other owners' finished runs (least recently used first). When only
    running runs are left to evict, the new run (or the result that would not fit) is refused with
    `Busy`, and everything already stored stays as it was.
    """

    def __init__(
        self,
        *,
        ttl_s: float,
        max_runs: int,
        max_bytes: int,
        max_log_bytes: int,
        max_runs_per_owner: int | None = None,
        max_bytes_per_owner: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_runs = max_runs
        self.max_bytes = max_bytes
        self.max_log_bytes = max_log_bytes
        self.max_runs_per_owner = max_runs_per_owner if max_runs_per_owner is not None else max_runs
        self.max_bytes_per_owner = max_bytes_per_owner if max_bytes_per_owner is not None else max_bytes
        self._clock = clock
        self._runs: OrderedDict[str, RunContext] = OrderedDict()
        self._bytes = 0
        self.evictions = 0
        """Finished runs dropped to make room under the caps (not expiries, purges, refusals): the
        telemetry counter `mcp_code_tools.run_contexts.evictions` and /readyz read it."""

    def __len__(self) -> int:
        return len(self._runs)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def owner_usage(self, owner: str | None) -> tuple[int, int]:
        """(runs, bytes) held by `owner`."""
        runs = [ctx for ctx in self._runs.values() if ctx.owner == owner]
        return len(runs), sum(ctx.size for ctx in runs)

    def create(self, owner: str | None, tool: str) -> RunContext:
        """A new run of `owner`; `Busy` when the caps leave no finished run of theirs (or, past
        the global cap, of anyone) to evict."""
        self.sweep()
        now = self._clock()
        ctx = RunContext(
            run_id="run_" + secrets.token_urlsafe(18),
            owner=owner,
            tool=tool,
            created=now,
            deadline=now + self.ttl_s,
            log=RunLog(self.max_log_bytes),
        )
        self._runs[ctx.run_id] = ctx
        self._make_room(ctx)
        return ctx

    def get(self, owner: str | None, run_id: str) -> RunContext:
        """The owner's run, its TTL refreshed. Unknown, expired and foreign runs all raise `NotFound`."""
        self.sweep()
        ctx = self._runs.get(run_id) if isinstance(run_id, str) else None
        if ctx is None or ctx.owner != owner:
            shown = run_id[:64] + "..." if isinstance(run_id, str) and len(run_id) > 64 else run_id
            raise NotFound(f"run {shown!r} not found (it may have expired)")
        ctx.deadline = self._clock() + self.ttl_s
        self._runs.move_to_end(run_id)
        return ctx

    def list(self, owner: str | None) -> list[RunContext]:
        """The owner's runs, oldest first. Public runs are never listed."""
        self.sweep()
        if owner is PUBLIC_OWNER:
            return []
        return [ctx for ctx in self._runs.values() if ctx.owner == owner]

    def store(
        self,
        ctx: RunContext,
        *,
        summary: dict[str, Any] | None,
        result: dict[str, Any] | None,
        size: int | None = None,
        whole: bool = False,
    ) -> None:
        """Record (or replace) the run's result and account the memory it holds (`held_bytes`,
        estimated once here; `size`: the result's, when the caller estimated it already).

        Room is made from finished runs only (the owner's own first); a result that cannot be kept
        without evicting running work drops this run and raises `Busy`. A result that alone
        exceeds the byte cap (the owner's, or the server's) is kept cut (`cut_to_fit`: scalars and
        the first items of each list, `truncated` and a `not_kept` note saying why), so the run
        and its answer survive; with `whole=True` it drops this run and raises `Busy` instead.
        """
        if ctx.run_id not in self._runs:
            return  # evicted or purged meanwhile: nothing to keep
        self._bytes -= ctx.size
        held = held_bytes(result) if size is None else size
        cap = min(self.max_bytes_per_owner, self.max_bytes)
        extra = held_bytes(summary) + len(ctx.log)
        if result is not None and not whole and held + extra > cap:
            result = cut_to_fit(result, max(0, int(cap * 0.9) - extra), held, cap)
            held = held_bytes(result)
        ctx.summary = summary
        ctx.result = result
        ctx.changed()
        ctx.held = held + held_bytes(summary)
        ctx.size = ctx.held + len(ctx.log)
        self._bytes += ctx.size
        self._make_room(ctx)

    def finish(self, ctx: RunContext) -> None:
        if ctx.run_id in self._runs:
            self._bytes -= ctx.size
            ctx.size = ctx.held + len(ctx.log)  # the result was measured when stored: not again
            self._bytes += ctx.size
        ctx.finished.set()
        ctx.changed()

    def purge_owner(self, owner: str) -> int:
        """Drop every run of `owner` and cancel the work still running for them."""
        doomed = [ctx for ctx in self._runs.values() if ctx.owner == owner]
        for ctx in doomed:
            self._drop(ctx)
        return len(doomed)

    def sweep(self) -> None:
        now = self._clock()
        for ctx in [c for c in self._runs.values() if c.deadline <= now]:
            self._drop(ctx)

    def clear(self) -> None:
        for ctx in list(self._runs.values()):
            self._drop(ctx)

    def _drop(self, ctx: RunContext) -> None:
        if self._runs.pop(ctx.run_id, None) is not None:
            self._bytes -= ctx.size
        ctx.cancel()
        ctx.dropped = True
        ctx.changed()

    def _oldest_finished(self, keep: RunContext, owner: str | None, *, any_owner: bool = False) -> RunContext | None:
        for ctx in self._runs.values():  # least recently used first
            if ctx is not keep and not ctx.running and (any_owner or ctx.owner == owner):
                return ctx
        return None

    def _make_room(self, keep: RunContext) -> None:
        """Evict finished runs until the caps hold with `keep` in; else drop `keep` and raise `Busy`."""
        owner = keep.owner
        if keep.size > min(self.max_bytes_per_owner, self.max_bytes):
            self._runs.pop(keep.run_id, None)
            self._bytes -= keep.size
            raise Busy(
                f"result too large to keep: {keep.size:,} bytes, over the cap of "
                f"{min(self.max_bytes_per_owner, self.max_bytes):,} (settings max_run_bytes_per_owner, "
                f"max_run_bytes); narrow the request"
            )
        while True:
            count, size = self.owner_usage(owner)
            if count <= self.max_runs_per_owner and size <= self.max_bytes_per_owner:
                break
            victim = self._oldest_finished(keep, owner)
            if victim is None:
                self._refuse(keep, f"this client's {count - 1} other runs are all still running", "_per_owner")
            else:
                self._drop(victim)
                self.evictions += 1
        while len(self._runs) > self.max_runs or self._bytes > self.max_bytes:
            victim = self._oldest_finished(keep, owner) or self._oldest_finished(keep, owner, any_owner=True)
            if victim is None:
                self._refuse(keep, f"the server holds {len(self._runs) - 1} runs, all still running", "")
            else:
                self._drop(victim)
                self.evictions += 1

    def _refuse(self, keep: RunContext, why: str, suffix: str) -> None:
        self._runs.pop(keep.run_id, None)
        self._bytes -= keep.size
        raise Busy(
            f"busy: {why} (settings max_runs{suffix}, max_run_bytes{suffix}); "
            "wait for one to finish or cancel_run one, then retry"
        )
