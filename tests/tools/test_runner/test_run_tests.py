"""run_tests over every transport: outcomes, progress, the run context, wait=false, timeout,
cancel (cancel_run and the client's notifications/cancelled), crashes, and the run queue."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.client import Client

from tests.conftest import ClientFactory
from tests.tools.test_runner.conftest import HANG, Signals, alive, assert_gone, wait_dead, write_project

pytestmark = pytest.mark.anyio

COUNT_KEYS = {"passed", "failed", "skipped", "xfailed", "xpassed", "errors", "deselected"}


async def call(client: Client, name: str, args: dict[str, Any], **kw: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args, **kw)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def run_of(client: Client) -> str:
    """The run_id of this connection's only run (as listed in its resources)."""
    resources = await client.list_resources()
    ids = {str(r.uri).removeprefix("run://").split("/")[0] for r in resources.resources}
    assert len(ids) == 1, ids
    return ids.pop()


async def test_outcomes_progress_and_the_run_context(mcp_client: ClientFactory, project: Path) -> None:
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    with anyio.fail_after(90):
        async with mcp_client(project) as client:
            result = await call(client, "run_tests", {}, progress_callback=on_progress)
            assert result["status"] == "failed"
            assert result["counts"] == {
                "passed": 1,
                "failed": 2,
                "skipped": 1,
                "xfailed": 1,
                "xpassed": 1,
                "errors": 1,
                "deselected": 0,
            }
            assert set(result) >= {"run_id", "status", "counts", "duration_s", "failures", "slowest", "truncated"}
            failures = {f["nodeid"]: f for f in result["failures"]}
            assert set(failures) == {
                "tests/test_mixed.py::test_fail",
                "tests/test_mixed.py::test_library_frames",
                "tests/test_mixed.py::test_error",
            }
            fail = failures["tests/test_mixed.py::test_fail"]
            assert fail["outcome"] == "failed" and "assert [1, 2] == [1, 3]" in fail["message"]
            assert "tests/test_mixed.py:" in fail["traceback"]
            assert failures["tests/test_mixed.py::test_error"]["outcome"] == "error"
            assert "fixture broke" in failures["tests/test_mixed.py::test_error"]["message"]
            # Library frames are folded; the frame that raised (with its E line) stays.
            lib = failures["tests/test_mixed.py::test_library_frames"]["traceback"]
            assert "outside the project" in lib and "JSONDecodeError" in lib
            assert all(set(s) == {"nodeid", "duration_s"} for s in result["slowest"])

            # One progress notification per finished test, in order, with the collected total.
            assert [p[0] for p in progress] == [1, 2, 3, 4, 5, 6, 7]
            assert {p[1] for p in progress} == {7}
            assert progress[0][2] == "tests/test_mixed.py::test_pass passed"
            assert progress[1][2] == "tests/test_mixed.py::test_fail failed"
            assert progress[-1][2] == "tests/test_mixed.py::test_error error"

            # get_run gives the same shape; the log has pytest's own output.
            stored = await call(client, "get_run", {"run_id": result["run_id"]})
            assert stored["status"] == "failed" and stored["counts"] == result["counts"]
            log = await call(client, "get_run", {"run_id": result["run_id"], "section": "log"})
            assert "-m pytest" in log["text"] and "1 xpassed" in log["text"] and "1 error" in log["text"]
            page = await call(client, "get_run", {"run_id": result["run_id"], "section": "failures", "limit": 1})
            assert page["total"] == 3 and len(page["items"]) == 1


async def test_results_match_python_m_pytest(memory_client: Any, tmp_path: Path) -> None:
    """The project's configuration applies (addopts, testpaths, markers, conftest), and the root is
    first on sys.path, so the counts are those of `python -m pytest` in the root."""
    root = write_project(
        tmp_path / "cfg",
        {
            "helpers.py": "VALUE = 3\n",
            "checks/conftest.py": """
                import pytest

                @pytest.fixture
                def value():
                    import helpers
                    return helpers.VALUE
            """,
            "checks/check_value.py": """
                import pytest

                def test_value(value):
                    assert value == 3

                @pytest.mark.slow
                def test_slow():
                    pass

                def test_other():
                    assert False
            """,
            "ignored/test_never.py": "def test_never():\n    assert False\n",
        },
        ini="[pytest]\ntestpaths = checks\npython_files = check_*.py\naddopts = -m 'not slow'\n"
        "markers =\n    slow: slow tests\n",
    )
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    cold = await anyio.run_process(argv, cwd=root, check=False)
    summary = cold.stdout.decode().strip().splitlines()[-1]
    with anyio.fail_after(90):
        async with memory_client(root) as client:
            result = await call(client, "run_tests", {})
    counts = result["counts"]
    assert (counts["passed"], counts["failed"], counts["deselected"]) == (1, 1, 1)
    assert "1 failed, 1 passed, 1 deselected" in summary


async def test_wait_false_then_get_run(mcp_client: ClientFactory, project: Path) -> None:
    with anyio.fail_after(90):
        async with mcp_client(project, max_concurrent_runs=1) as client:
            started = await call(client, "run_tests", {"wait": False})
            assert started["status"] == "running" and started["run_id"].startswith("run_")
            # A second run queues behind the first (one slot, FIFO): when it is done, so is the first.
            await call(client, "run_tests", {"select": ["tests/test_mixed.py::test_pass"]})
            done = await call(client, "get_run", {"run_id": started["run_id"]})
            assert done["status"] == "failed" and done["counts"]["passed"] == 1
            assert set(done) >= {"run_id", "status", "counts", "duration_s", "failures", "slowest", "truncated"}


async def test_timeout_kills_the_process_group(memory_client: Any, tmp_path: Path, signals: Signals) -> None:
    root = write_project(
        tmp_path / "hang",
        {"test_hang.py": HANG + "\ndef test_first():\n    pass\n\ndef test_hangs():\n    _hang()\n"},
    )
    signals.install(root)
    with anyio.fail_after(90):
        async with memory_client(root) as client:
            result = await call(client, "run_tests", {"timeout_s": 2})
            assert result["status"] == "timeout"
            assert result["counts"]["passed"] == 1
            hung = [f for f in result["failures"] if f["outcome"] == "timeout"]
            assert [f["nodeid"] for f in hung] == ["test_hang.py::test_hangs"]
            assert "timed out after 2s while running test_hang.py::test_hangs" in result["message"]
            await assert_gone(root)
            # The zygote and the server go on.
            again = await call(client, "run_tests", {"select": ["test_hang.py::test_first"]})
            assert again["status"] == "passed"


async def test_cancel_run_stops_a_background_run(mcp_client: ClientFactory, tmp_path: Path, signals: Signals) -> None:
    root = write_project(
        tmp_path / "hang",
        {"test_hang.py": HANG + "\ndef test_first():\n    pass\n\ndef test_hangs():\n    _hang()\n"},
    )
    signals.install(root)
    with anyio.fail_after(90):
        async with mcp_client(root) as client:
            started = await call(client, "run_tests", {"wait": False})
            await signals.wait()
            running = await call(client, "get_run", {"run_id": started["run_id"]})
            assert running["status"] == "running"
            cancelled = await call(client, "cancel_run", {"run_id": started["run_id"]})
            assert cancelled["status"] == "cancelled"
            assert cancelled["counts"]["passed"] == 1
            assert "cancelled while running test_hang.py::test_hangs" in cancelled["message"]
            await assert_gone(root)


async def test_client_cancellation_stops_a_waiting_run(
    mcp_client: ClientFactory, tmp_path: Path, signals: Signals
) -> None:
    root = write_project(tmp_path / "hang", {"test_hang.py": HANG + "\ndef test_hangs():\n    _hang()\n"})
    signals.install(root)
    with anyio.fail_after(90):
        async with mcp_client(root) as client:
            scope = anyio.CancelScope()

            async def waiting_call() -> None:
                with scope:
                    await client.call_tool("run_tests", {})

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiting_call)
                await signals.wait()
                scope.cancel()  # the SDK sends notifications/cancelled for the request
            run_id = await run_of(client)
            # cancel_run waits for the run to finish; it was cancelled by the client already.
            stopped = await call(client, "cancel_run", {"run_id": run_id})
            assert stopped["status"] == "cancelled"
            await assert_gone(root)


async def test_a_passing_run_leaves_no_process_behind(memory_client: Any, tmp_path: Path) -> None:
    """A test that starts a daemon (double fork, a session of its own) and returns: the daemon dies
    with the run, though it left the run's process group."""
    test = """
        import pathlib, subprocess, sys, time

        DAEMON = (
            "import os, pathlib, time\\n"
            "if os.fork():\\n    os._exit(0)\\n"
            "os.setsid()\\n"
            "pathlib.Path('daemon.tmp').write_text(str(os.getpid()))\\n"
            "os.replace('daemon.tmp', 'daemon.pid')\\n"
            "time.sleep(600)\\n"
        )

        def test_starts_a_daemon():
            subprocess.run([sys.executable, "-c", DAEMON], start_new_session=True, check=True)
            deadline = time.monotonic() + 30
            while not pathlib.Path("daemon.pid").exists():
                assert time.monotonic() < deadline
                time.sleep(0.01)
    """
    root = write_project(tmp_path / "daemon", {"test_daemon.py": test})
    with anyio.fail_after(90):
        async with memory_client(root) as client:
            result = await call(client, "run_tests", {})
            assert result["status"] == "passed" and result["counts"]["passed"] == 1
            daemon = int((root / "daemon.pid").read_text())
            await wait_dead(daemon)
            assert not alive(daemon), "the daemon outlived its run"


async def test_crashed_children_are_reported_and_the_pool_goes_on(memory_client: Any, tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "crash",
        {
            "test_crash.py": """
                import os, pathlib, signal, subprocess, sys

                def test_before():
                    pass

                def test_segfault():
                    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
                    pathlib.Path("pids.txt").write_text(f"{os.getpgid(0)} {os.getpid()} {child.pid}")
                    os.kill(os.getpid(), signal.SIGSEGV)

                def test_exit():
                    os._exit(3)
            """
        },
    )
    with anyio.fail_after(90):
        async with memory_client(root) as client:
            both = ["test_crash.py::test_before", "test_crash.py::test_segfault"]
            segv = await call(client, "run_tests", {"select": both})
            assert segv["status"] == "crashed"
            assert segv["counts"]["passed"] == 1 and segv["counts"]["failed"] == 1
            crash = segv["failures"][-1]
            assert crash["nodeid"] == "test_crash.py::test_segfault" and crash["outcome"] == "crashed"
            assert "SIGSEGV" in crash["message"]
            await assert_gone(root, escaped=False)  # the subprocess it left went with its process group
            exited = await call(client, "run_tests", {"select": ["test_crash.py::test_exit"]})
            assert exited["status"] == "crashed"
            assert "exit status 3 while running test_crash.py::test_exit" in exited["message"]
            fine = await call(client, "run_tests", {"select": ["test_crash.py::test_before"]})
            assert fine["status"] == "passed"


async def test_a_burst_queues_in_fifo_order(mcp_client: ClientFactory, tmp_path: Path) -> None:
    """4 x the concurrency cap at once: all complete, none is refused, admitted first come first served."""
    cap, n = 2, 8
    tests = "\n".join(
        f"def test_{i}():\n    with open('order.txt', 'a') as f:\n        f.write('{i}\\n')\n" for i in range(n)
    )
    root = write_project(tmp_path / "burst", {"test_burst.py": tests})
    results: dict[int, dict[str, Any]] = {}
    with anyio.fail_after(120):
        async with mcp_client(root, max_concurrent_runs=cap, max_queued_runs=n) as client:

            async def one(i: int) -> None:
                results[i] = await call(client, "run_tests", {"select": [f"test_burst.py::test_{i}"]})

            async with anyio.create_task_group() as tg:
                for i in range(n):
                    tg.start_soon(one, i)
                    await anyio.wait_all_tasks_blocked()  # call i is on its way before call i+1
    assert sorted(results) == list(range(n))
    assert all(r["status"] == "passed" and r["counts"]["passed"] == 1 for r in results.values())
    order = [int(line) for line in (root / "order.txt").read_text().split()]
    assert sorted(order) == list(range(n))
    # FIFO: run i is admitted only after i - cap + 1 runs before it have finished.
    for i in range(n):
        assert order.index(i) >= i - (cap - 1), order


async def test_past_the_queue_limit_is_busy(mcp_client: ClientFactory, tmp_path: Path, signals: Signals) -> None:
    root = write_project(
        tmp_path / "busy",
        {
            "test_busy.py": HANG
            + "\ndef test_blocks():\n    _signal('started').recv(1)\n\ndef test_quick():\n    pass\n",
        },
    )
    signals.install(root)
    with anyio.fail_after(90):
        async with mcp_client(root, max_concurrent_runs=1, max_queued_runs=1) as client:
            results: list[dict[str, Any]] = []

            async def run(select: str) -> None:
                results.append(await call(client, "run_tests", {"select": [select]}))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run, "test_busy.py::test_blocks")
                gate = await signals.wait()  # the first run holds the only slot
                tg.start_soon(run, "test_busy.py::test_quick")
                await anyio.wait_all_tasks_blocked()  # the second one waits in the queue
                refused = await client.call_tool("run_tests", {"select": ["test_busy.py::test_quick"]})
                assert refused.is_error
                text = refused.content[0].text  # type: ignore[union-attr]
                assert "busy" in text and "max_queued_runs" in text and "retry" in text
                refused_bg = await client.call_tool("run_tests", {"wait": False})
                assert refused_bg.is_error and "busy" in refused_bg.content[0].text  # type: ignore[union-attr]
                await gate.send(b"g")
            assert sorted(r["status"] for r in results) == ["passed", "passed"]


async def test_test_output_never_reaches_the_protocol(mcp_client: ClientFactory, tmp_path: Path) -> None:
    """Whatever a test writes to fd 1 and 2 (uncaptured, and from a subprocess) lands in the run
    log, never on the server's stdout: over stdio that would break the protocol."""
    tests = """
import os, subprocess, sys

def test_noisy():
    os.write(1, b'{"jsonrpc": "2.0", "id": 1, "result": {}}\\n')
    os.write(2, b"stderr noise\\n")
    subprocess.run([sys.executable, "-c", "print('from a subprocess')"], check=True)
"""
    root = write_project(tmp_path / "noisy", {"test_noisy.py": tests}, ini="[pytest]\naddopts = -s\n")
    with anyio.fail_after(90):
        async with mcp_client(root) as client:
            result = await call(client, "run_tests", {})
            assert result["status"] == "passed"
            log = await call(client, "get_run", {"run_id": result["run_id"], "section": "log"})
            for text in ('"jsonrpc": "2.0"', "stderr noise", "from a subprocess"):
                assert text in log["text"]
            assert (await call(client, "run_tests", {}))["status"] == "passed"


async def test_closing_the_connection_stops_its_runs(memory_client: Any, tmp_path: Path, signals: Signals) -> None:
    root = write_project(tmp_path / "hang", {"test_hang.py": HANG + "\ndef test_hangs():\n    _hang()\n"})
    signals.install(root)
    with anyio.fail_after(60):
        async with memory_client(root) as client:
            await call(client, "run_tests", {"wait": False})
            await signals.wait()
        await assert_gone(root)


async def test_cancelling_a_queued_run(memory_client: Any, tmp_path: Path, signals: Signals) -> None:
    root = write_project(tmp_path / "hang", {"test_hang.py": HANG + "\ndef test_hangs():\n    _hang()\n"})
    signals.install(root)
    with anyio.fail_after(60):
        async with memory_client(root, max_concurrent_runs=1) as client:
            running = await call(client, "run_tests", {"wait": False})
            await signals.wait()
            queued = await call(client, "run_tests", {"wait": False})
            stopped = await call(client, "cancel_run", {"run_id": queued["run_id"]})
            assert stopped["status"] == "cancelled" and stopped["message"] == "cancelled before it started"
            assert (await call(client, "cancel_run", {"run_id": running["run_id"]}))["status"] == "cancelled"
            await assert_gone(root)
