"""Run contexts as pure state: TTL pushed forward on access, caps on count and bytes, owners, purge."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mcp_server.errors import Busy, NotFound
from mcp_server.runs import NOT_KEPT, PUBLIC_OWNER, RunContext, RunLog, RunStore


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make_store(clock: FakeClock | None = None, **overrides: Any) -> RunStore:
    options: dict[str, Any] = {"ttl_s": 10.0, "max_runs": 100, "max_bytes": 1 << 20, "max_log_bytes": 4096}
    options.update(overrides)
    return RunStore(clock=clock or FakeClock(), **options)


def finished(store: RunStore, owner: str, result: dict[str, Any] | None = None) -> RunContext:
    run = store.create(owner, "tool")
    store.store(run, summary=None, result=result or {"ok": True})
    store.finish(run)
    return run


def big_result() -> dict[str, Any]:
    """About 1 KB of memory held (distinct strings: the same string ten times is held once)."""
    return {"items": [f"{i:03d}" + "x" * 97 for i in range(5)]}


def not_found_text(store: RunStore, owner: str, run_id: str) -> str:
    with pytest.raises(NotFound) as err:
        store.get(owner, run_id)
    return str(err.value).replace(repr(run_id), "ID")


def test_run_ids_are_unguessable() -> None:
    store = make_store(max_runs=10_000)
    ids = {store.create("a", "tool").run_id for _ in range(1000)}
    assert len(ids) == 1000
    for run_id in ids:
        assert run_id.startswith("run_") and len(run_id) >= 4 + 24


def test_ttl_is_pushed_forward_on_access() -> None:
    clock = FakeClock()
    store = make_store(clock)
    run = store.create("a", "tool")
    for _ in range(5):
        clock.now += 9  # within the TTL of the last access, though far past the first
        assert store.get("a", run.run_id) is run
    clock.now += 10
    with pytest.raises(NotFound, match="expired"):
        store.get("a", run.run_id)
    assert len(store) == 0


def test_expired_runs_are_swept_without_access() -> None:
    clock = FakeClock()
    store = make_store(clock)
    old = finished(store, "a")
    clock.now += 6
    young = finished(store, "a")
    clock.now += 5  # old is past its deadline, young is not
    assert [r.run_id for r in store.list("a")] == [young.run_id]
    assert store.bytes_used == young.size
    del old


def test_count_cap_evicts_the_least_recently_used() -> None:
    store = make_store(max_runs=3)
    r1, r2, r3 = (finished(store, "a") for _ in range(3))
    store.get("a", r1.run_id)  # r1 is used again: r2 is now the oldest
    r4 = finished(store, "a")
    assert {r.run_id for r in store.list("a")} == {r1.run_id, r3.run_id, r4.run_id}
    assert not_found_text(store, "a", r2.run_id)


@pytest.mark.anyio
async def test_count_cap_evicts_finished_runs_and_never_running_ones() -> None:
    store = make_store(max_runs=3)
    running = store.create("a", "tool")
    cancelled = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(work_until_cancelled, running, cancelled)
            done_1 = finished(store, "a")
            done_2 = finished(store, "a")
            done_3 = finished(store, "a")  # over the cap: the oldest *finished* run goes
            assert {r.run_id for r in store.list("a")} == {running.run_id, done_2.run_id, done_3.run_id}
            # Only running runs left over the cap: the new run is refused, the running one stays.
            store.max_runs = 1
            with pytest.raises(Busy, match=r"busy: .*still running.*max_runs"):
                store.create("a", "tool")
            assert store.get("a", running.run_id) is running
            assert not cancelled.is_set()
            tg.cancel_scope.cancel()
    assert len(store) == 1
    del done_1


def test_byte_cap_evicts_oldest_first_and_accounts_exactly() -> None:
    store = make_store(max_bytes=3000)
    big = big_result()  # about 1 KB held
    r1 = finished(store, "a", big)
    r2 = finished(store, "a", big)
    assert store.bytes_used == r1.size + r2.size
    r3 = finished(store, "a", big)  # over 3000 bytes: r1 goes
    assert [r.run_id for r in store.list("a")] == [r2.run_id, r3.run_id]
    assert store.bytes_used == r2.size + r3.size
    store.purge_owner("a")
    assert store.bytes_used == 0 and len(store) == 0


def test_a_whole_result_bigger_than_the_cap_is_refused_and_evicts_nothing() -> None:
    store = make_store(max_bytes=2000)
    kept = finished(store, "a")
    other = finished(store, "b")
    run = store.create("a", "lint")
    with pytest.raises(Busy, match=r"too large to keep.*max_run_bytes"):
        store.store(run, summary=None, result={"items": [f"{i}" + "y" * 1000 for i in range(10)]}, whole=True)
    assert [r.run_id for r in store.list("a")] == [kept.run_id]
    assert [r.run_id for r in store.list("b")] == [other.run_id]
    assert store.bytes_used == kept.size + other.size


def test_an_owner_over_its_own_cap_loses_its_own_oldest_finished_runs() -> None:
    store = make_store(max_runs_per_owner=2, max_bytes_per_owner=2500)
    theirs = finished(store, "b")
    a1, a2 = finished(store, "a"), finished(store, "a")
    a3 = finished(store, "a")  # a's third: a's oldest goes, never b's
    assert [r.run_id for r in store.list("a")] == [a2.run_id, a3.run_id]
    assert [r.run_id for r in store.list("b")] == [theirs.run_id]
    big = big_result()  # about 1 KB held
    a4 = finished(store, "a", big)
    a5 = finished(store, "a", big)  # a's bytes over 2500: a's oldest finished go until it fits
    assert [r.run_id for r in store.list("a")] == [a4.run_id, a5.run_id]
    assert store.owner_usage("a") == (2, a4.size + a5.size)
    assert [r.run_id for r in store.list("b")] == [theirs.run_id]
    del a1


@pytest.mark.anyio
async def test_global_cap_never_evicts_another_owners_running_work() -> None:
    """Issue 11 item 1: B's running run survives A's result that fills the store."""
    store = make_store(max_runs=4, max_bytes=3000)
    b_running = store.create("b", "run_tests")
    b_done = finished(store, "b")
    cancelled = anyio.Event()
    big = big_result()  # about 1 KB held
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(work_until_cancelled, b_running, cancelled)
            a1 = finished(store, "a", big)
            a2 = finished(store, "a", big)  # over the global bytes: a's own finished runs would go first...
            assert store.get("b", b_running.run_id) is b_running
            a3 = finished(store, "a", big)  # ...then others' finished runs; b's running one never
            assert store.get("b", b_running.run_id) is b_running
            assert {r.run_id for r in store.list("a")} >= {a3.run_id}
            assert store.bytes_used <= 3000
            # Only running runs to evict: a is refused, b's work goes on.
            for _ in range(3):
                store.create("b", "run_tests").cancel_scope = None
            with pytest.raises(Busy, match="all still running"):
                store.create("a", "lint")
            assert not cancelled.is_set()
            tg.cancel_scope.cancel()
    assert store.get("b", b_running.run_id) is b_running
    del a1, a2, b_done


def test_owners_are_isolated_and_foreign_looks_like_unknown() -> None:
    store = make_store()
    mine = finished(store, "alice")
    assert store.list("bob") == []
    foreign = not_found_text(store, "bob", mine.run_id)
    unknown = not_found_text(store, "bob", "run_" + "A" * 24)
    assert foreign == unknown
    assert store.get("alice", mine.run_id) is mine
    # Odd ids are not found either, never an exception of another kind.
    for odd in ("", "run_", "../etc"):
        assert not_found_text(store, "alice", odd) == unknown
    with pytest.raises(NotFound) as long_id:
        store.get("alice", "x" * 100_000)
    assert len(str(long_id.value)) < 200  # the error does not echo a huge id back
    with pytest.raises(NotFound):
        store.get("alice", 12345)  # type: ignore[arg-type]


def test_public_runs_are_never_listed() -> None:
    store = make_store()
    public = finished(store, PUBLIC_OWNER)  # type: ignore[arg-type]
    assert store.list(PUBLIC_OWNER) == []
    assert store.get(PUBLIC_OWNER, public.run_id) is public
    with pytest.raises(NotFound):
        store.get("alice", public.run_id)


async def work_until_cancelled(
    run: RunContext, cancelled: anyio.Event, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
) -> None:
    with anyio.CancelScope() as scope:
        run.cancel_scope = scope
        task_status.started()
        await anyio.sleep_forever()
    cancelled.set()


@pytest.mark.anyio
async def test_purge_drops_the_owners_runs_and_cancels_their_work() -> None:
    store = make_store()
    running = store.create("conn-1", "run_tests")
    done = finished(store, "conn-1")
    other = finished(store, "conn-2")
    cancelled = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            await tg.start(work_until_cancelled, running, cancelled)
            assert store.purge_owner("conn-1") == 2
            await cancelled.wait()
    assert store.list("conn-1") == []
    assert [r.run_id for r in store.list("conn-2")] == [other.run_id]
    assert not_found_text(store, "conn-1", done.run_id)


def test_run_log_keeps_head_and_tail_within_its_cap() -> None:
    log = RunLog(max_bytes=2048)
    for i in range(1000):
        log.write(f"line {i:04d}\n")
    text = log.text()
    assert text.startswith("line 0000\n")
    assert text.endswith("line 0999\n")
    assert "characters dropped" in text
    assert len(log) <= 2 * 2048 + 1024
    assert log.total == 10_000


# --- byte accounting: what a run holds in memory, measured once ---------------------------------


def lint_like(n: int) -> dict[str, Any]:
    """A result shaped like lint's: many small dicts with a nested fix, distinct messages."""
    diagnostics = [
        {
            "path": f"pkg/mod{i % 50}.py",
            "line": i,
            "column": 8,
            "end_line": i,
            "end_column": 11,
            "code": "F401",
            "message": f"`os{i}` imported but unused",
            "fixable": True,
            "fix_applicability": "safe",
            "fix": {"message": f"Remove unused import: `os{i}`", "edits": [{"content": "", "line": i, "column": 1}]},
        }
        for i in range(n)
    ]
    return {"counts": {"F401": n}, "total": n, "truncated": False, "diagnostics": diagnostics}


def test_a_stored_result_is_accounted_at_about_the_memory_it_holds() -> None:
    import json
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = lint_like(20_000)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    store = make_store(max_bytes=1 << 30)
    run = store.create("a", "lint")
    store.store(run, summary=None, result=result)
    store.finish(run)
    assert 0.6 * held <= run.size - len(run.log) <= 1.6 * held, (run.size, held)
    assert len(json.dumps(result)) < 0.6 * held  # what the accounting counted before: the JSON


def test_storing_and_finishing_never_serialize_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    result = lint_like(5_000)
    real = json.dumps
    serialized: list[int] = []

    def counting(value: Any, *args: Any, **kwargs: Any) -> str:
        if value is result:
            serialized.append(1)
        return real(value, *args, **kwargs)

    monkeypatch.setattr(json, "dumps", counting)
    store = make_store(max_bytes=1 << 30)
    run = store.create("a", "run_tests")
    store.store(run, summary={"status": "failed"}, result=result)
    size = run.size
    run.log.write("the end\n")
    store.finish(run)
    assert serialized == []
    assert run.held == size and run.size == run.held + len(run.log)  # the result is not measured again


def test_a_tools_own_result_bigger_than_the_cap_is_kept_cut_and_its_run_survives() -> None:
    """run_tests and check store their own result: over the cap it is kept cut, never an error."""
    store = make_store(max_bytes=1 << 20, max_bytes_per_owner=64 * 1024)
    theirs = finished(store, "b", big_result())
    run = store.create("a", "run_tests")
    result = {"status": "failed", "counts": {"failed": 5000}, "failures": lint_like(5000)["diagnostics"]}
    store.store(run, summary={"status": "failed"}, result=result)
    store.finish(run)
    assert store.get("a", run.run_id) is run and run.result is not None
    kept = run.result
    assert kept["status"] == "failed" and kept["counts"] == {"failed": 5000} and kept["truncated"] is True
    assert 0 < len(kept["failures"]) < 5000 and kept["failures"][0] == result["failures"][0]
    assert "could not be kept" in kept[NOT_KEPT] and "max_run_bytes_per_owner" in kept[NOT_KEPT]
    assert f"failures: {len(kept['failures']):,} of 5,000 kept" in kept[NOT_KEPT]
    assert run.size <= 64 * 1024 and store.owner_usage("a") == (1, run.size)
    assert store.get("b", theirs.run_id) is theirs
