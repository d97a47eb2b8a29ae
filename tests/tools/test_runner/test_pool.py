"""ZygotePool with real zygotes: reuse, rebuild on environment change, LRU cap, idle TTL, a zygote
that dies (mid-run too), and the rendezvous socket refusing strangers."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from mcp_server.api import AppState
from mcp_server.server import build_app_state
from tests.conftest import make_settings, open_stdio
from tests.tools.test_runner.conftest import HANG, Signals, alive, assert_gone, wait_dead, write_project
from tools.test_runner import config_watch, environment
from tools.test_runner.environment import env_fingerprint
from tools.test_runner.pool import ZygotePool, get_pool
from tools.test_runner.runner import RunRequest, TestRun
from tools.test_runner.zygote import Zygote

pytestmark = pytest.mark.anyio
PY = Path(sys.executable)


@asynccontextmanager
async def app_state(tmp_path: Path, **overrides: Any) -> AsyncIterator[AppState]:
    """The server's shared runtime without a transport: settings, executor, services, task group."""
    app = build_app_state(make_settings(tmp_path, tmp_path, **overrides))
    async with anyio.create_task_group() as tg:
        app.task_group = tg
        try:
            yield app
        finally:
            with anyio.CancelScope(shield=True):
                await app.services.aclose()
                await app.executor.aclose()
            tg.cancel_scope.cancel()


async def test_reuse_and_rebuild_on_config_change(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", {"tests/test_a.py": "def test_a():\n    pass\n"})
    with anyio.fail_after(60):
        async with app_state(tmp_path) as app:
            pool = await get_pool(app)
            async with pool.lease(root, PY) as first:
                pass
            async with pool.lease(root, PY) as same:
                assert same is first and pool.restarts == 0
            seen = [first]
            for change in (
                lambda: (root / "tests" / "conftest.py").write_text("# new conftest\n"),
                lambda: (root / "pytest.ini").write_text("[pytest]\naddopts = -q\n"),
                lambda: (root / "pyproject.toml").write_text("[project]\nname = 'p'\n"),
            ):
                change()
                # The run right after the change still uses the zygote (it never read the
                # configuration); the walk beside it retires the zygote for the runs after.
                async with pool.lease(root, PY) as current:
                    assert current is seen[-1]
                await current.stopped.wait()
                async with pool.lease(root, PY) as zygote:
                    assert zygote not in seen and zygote.alive
                seen.append(zygote)
            assert pool.restarts == 3 and pool.started == 4
            status = pool.status()
            assert status["size"] == 1 and status["zygotes"][0]["pid"] == seen[-1].pid


async def test_a_settled_tree_is_checked_by_stats_and_a_rewrite_that_keeps_size_and_mtime_is_seen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each lease's check beside the run stats the files and folders of one walk (no walk while
    nothing changed); a conftest rewritten with its size and mtime kept still retires the zygote
    (its ctime moved: the old mtime:size:inode fingerprint missed it)."""
    root = write_project(
        tmp_path / "p", {"tests/conftest.py": "# one\n", "tests/test_a.py": "def test_a():\n    pass\n"}
    )
    old_ns = 1_000_000_000 * 1_000_000_000
    for folder, _, files in os.walk(root):
        for name in files:
            os.utime(os.path.join(folder, name), ns=(old_ns, old_ns))
        os.utime(folder, ns=(old_ns, old_ns))
    monkeypatch.setattr(config_watch, "SETTLE_NS", -60 * 1_000_000_000)  # ctimes of just now count as settled
    listed: list[str] = []
    scandir = os.scandir

    def counted(path: str) -> Any:
        if path.startswith(str(root)):
            listed.append(path)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", counted)
    send, checked = anyio.create_memory_object_stream[str | None](10)
    check = ZygotePool.check_beside

    async def reported(self: ZygotePool, zygote: Zygote) -> str | None:
        why = await check(self, zygote)
        send.send_nowait(why)
        return why

    monkeypatch.setattr(ZygotePool, "check_beside", reported)
    with anyio.fail_after(60):
        async with app_state(tmp_path) as app:
            pool = await get_pool(app)
            async with pool.lease(root, PY) as first:
                pass
            assert await checked.receive() is None
            walked = len(listed)
            for _ in range(3):
                async with pool.lease(root, PY) as same:
                    assert same is first
                assert await checked.receive() is None
            assert len(listed) == walked and pool.restarts == 0
            conftest = root / "tests" / "conftest.py"
            conftest.write_text("# two\n")
            os.utime(conftest, ns=(old_ns, old_ns))
            async with pool.lease(root, PY) as current:
                assert current is first
            assert await checked.receive() == "its pytest configuration changed"
            await first.stopped.wait()
            async with pool.lease(root, PY) as fresh:
                assert fresh is not first and fresh.alive and pool.restarts == 1


def touch_site(zygote: Zygote, site: Path) -> None:
    """Make `site` one of the zygote's package directories (as if the interpreter reported it)."""
    zygote.info["site_dirs"] = [str(site)]
    zygote.env_fingerprint = env_fingerprint(zygote.interpreter, zygote.site_dirs)


async def test_an_install_rebuilds_before_the_next_run_and_spares_running_ones(tmp_path: Path) -> None:
    root = write_project(tmp_path / "p", {"test_a.py": "def test_a():\n    pass\n"})
    site = tmp_path / "site-packages"
    site.mkdir()
    with anyio.fail_after(60):
        async with app_state(tmp_path) as app:
            pool = await get_pool(app)
            async with pool.lease(root, PY) as old:
                touch_site(old, site)
                (site / "newplugin-1.0.dist-info").mkdir()  # a package was installed
                async with pool.lease(root, PY) as new:
                    assert new is not old and pool.restarts == 1
                assert old.alive, "a zygote in use is not stopped under its run"
            await old.stopped.wait()


async def test_a_burst_of_runs_stats_the_site_directories_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_project(tmp_path / "p", {"test_a.py": "def test_a():\n    pass\n"})
    monkeypatch.setattr(environment, "ENV_TTL_S", 60.0)
    stats: list[str] = []
    signature = environment._signature

    def counted(path: str) -> str:
        stats.append(path)
        return signature(path)

    monkeypatch.setattr(environment, "_signature", counted)
    with anyio.fail_after(60):
        async with app_state(tmp_path) as app:
            pool = await get_pool(app)
            async with pool.lease(root, PY) as zygote:
                pass
            assert zygote.site_dirs
            stats.clear()
            for _ in range(5):
                async with pool.lease(root, PY) as same:
                    assert same is zygote
            assert [s for s in stats if s in zygote.site_dirs] == [], "within the TTL: no stat at all"


async def test_lru_cap_and_idle_ttl(tmp_path: Path) -> None:
    a = write_project(tmp_path / "a", {"test_a.py": "def test_a():\n    pass\n"})
    b = write_project(tmp_path / "b", {"test_b.py": "def test_b():\n    pass\n"})
    with anyio.fail_after(60):
        async with app_state(tmp_path, zygote_pool_size=1) as app:
            pool = await get_pool(app)
            async with pool.lease(a, PY) as za:
                pass
            async with pool.lease(b, PY) as zb:
                pass
            await za.stopped.wait()  # least recently used, over the cap
            assert pool.workers() == [zb]
        async with app_state(tmp_path, zygote_idle_ttl_s=0.2) as app:
            pool = await get_pool(app)
            async with pool.lease(a, PY) as zygote:
                pass
            await zygote.stopped.wait()  # idle past the TTL
            pool.prune()
            assert pool.workers() == []


async def test_a_dead_zygote_is_replaced_and_its_run_reports_it(tmp_path: Path, signals: Signals) -> None:
    root = write_project(tmp_path / "hang", {"test_hang.py": HANG + "\ndef test_hangs():\n    _hang()\n"})
    signals.install(root)
    with anyio.fail_after(60):
        async with app_state(tmp_path) as app:
            pool = await get_pool(app)
            run = TestRun(app, RunRequest(root, PY, [], "run", 60), tool="run_tests", connection="test")
            async with anyio.create_task_group() as tg:
                tg.start_soon(run.execute)
                await signals.wait()
                (zygote,) = pool.workers()
                assert zygote.pid is not None
                os.kill(zygote.pid, signal.SIGKILL)
            status, message = run.outcome()
            assert status == "crashed" and message is not None and "died" in message
            # Its process group is gone, and what left the group (setsid), which the zygote would
            # have swept, was re-parented to the server (a subreaper), which killed it.
            await assert_gone(root, escaped=True)
            async with pool.lease(root, PY) as fresh:
                assert fresh is not zygote and fresh.alive


KILLS_ITS_ZYGOTE = """
import os, pathlib, signal, subprocess

def _daemon():
    # The classic double fork: a sleep in a session of its own whose parent is gone at once.
    r, w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.write(w, str(os.getpid()).encode())
            os.execvp("sleep", ["sleep", "600"])
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        return int(f.read())

def test_kills_its_zygote():
    daemon = _daemon()
    d = subprocess.DEVNULL
    other = subprocess.Popen(["sleep", "600"], start_new_session=True, stdin=d, stdout=d, stderr=d)
    pathlib.Path("pids.tmp").write_text(f"{daemon} {other.pid}")
    os.replace("pids.tmp", "pids.txt")
    os.kill(os.getppid(), signal.SIGKILL)
    signal.pause()  # the zygote's death kills us (PR_SET_PDEATHSIG)
"""


async def test_a_test_that_kills_its_zygote_leaves_nothing_running(tmp_path: Path) -> None:
    root = write_project(tmp_path / "killer", {"test_killer.py": KILLS_ITS_ZYGOTE})
    with anyio.fail_after(60):
        async with app_state(tmp_path) as app:
            run = TestRun(app, RunRequest(root, PY, [], "run", 60), tool="run_tests", connection="test")
            await run.execute()
            status, _ = run.outcome()
            assert status == "crashed"
            sleeps = [int(p) for p in (root / "pids.txt").read_text().split()]
            assert len(sleeps) == 2
            for pid in sleeps:  # the daemonized sleep and the one in its own session
                await wait_dead(pid)
                assert not alive(pid), f"{pid} outlived the zygote its test killed"


async def test_the_server_process_itself_reaps_what_a_killed_zygote_leaves(tmp_path: Path) -> None:
    # Over stdio the server is a process of its own: were it not a subreaper, the sleeps would be
    # re-parented past it (to this test process) and live on.
    root = write_project(tmp_path / "killer", {"test_killer.py": KILLS_ITS_ZYGOTE})
    with anyio.fail_after(90):
        async with open_stdio(root, tmp_path) as client:
            result = await client.call_tool("run_tests", {})
            assert result.structured_content is not None
            assert result.structured_content["status"] == "crashed"
            sleeps = [int(p) for p in (root / "pids.txt").read_text().split()]
            for pid in sleeps:
                await wait_dead(pid)
                assert not alive(pid), f"{pid} outlived the zygote its test killed"


THREAD_PLUGIN = """
import threading

STARTED = []

def _idle():
    threading.Event().wait()

def pytest_configure(config):
    if not STARTED:
        thread = threading.Thread(target=_idle, name="threadplug", daemon=True)
        thread.start()
        STARTED.append(thread)
"""


async def test_a_plugin_thread_left_by_the_warm_up_restarts_the_zygote_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "threadplug.py").write_text(THREAD_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(plugins))
    monkeypatch.setenv("PYTEST_PLUGINS", "threadplug")  # loaded by every pytest session there
    root = write_project(
        tmp_path / "p", {"test_a.py": "import threadplug\n\ndef test_a():\n    assert threadplug.STARTED\n"}
    )
    caplog.set_level(logging.WARNING, "mcp_server.test_runner")
    with anyio.fail_after(60):
        async with app_state(tmp_path, pass_env=["PYTHONPATH", "PYTEST_PLUGINS"]) as app:
            pool = await get_pool(app)
            async with pool.lease(root, PY) as zygote:
                assert zygote.info["threads"] == 1, "single-threaded when it forks"
                assert zygote.warm_without == ["threadplug"]
                assert zygote.status()["warm_without"] == ["threadplug"]
            assert "threadplug" in caplog.text and "thread" in caplog.text
            run = TestRun(app, RunRequest(root, PY, [], "run", 60), tool="run_tests", connection="test")
            await run.execute()
            assert run.outcome()[0] == "passed", "the plugin still loads in the runs"


CWD_PLUGIN = """
import os

IMPORTED_IN = os.getcwd()  # as hypothesis does: its `.hypothesis` folder is where it was imported
"""


async def test_the_warm_up_imports_plugins_in_the_root_and_writes_nothing_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The warm-up session ran in a temporary folder, and the process with it: a plugin imported then
    # kept that folder (deleted since) as the working directory its runs would have in the root.
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "cwdplug.py").write_text(CWD_PLUGIN)
    monkeypatch.setenv("PYTHONPATH", str(plugins))
    monkeypatch.setenv("PYTEST_PLUGINS", "cwdplug")
    test = "import os\n\nimport cwdplug\n\ndef test_a():\n    assert cwdplug.IMPORTED_IN == os.getcwd()\n"
    root = write_project(tmp_path / "p", {"test_a.py": test})
    with anyio.fail_after(60):
        async with app_state(tmp_path, pass_env=["PYTHONPATH", "PYTEST_PLUGINS"]) as app:
            pool = await get_pool(app)
            async with pool.lease(root, PY) as zygote:
                assert zygote.info["warm"] == "full"
            assert sorted(p.name for p in root.iterdir()) == ["pytest.ini", "test_a.py"], "nothing written"
            run = TestRun(app, RunRequest(root, PY, [], "run", 60), tool="run_tests", connection="test")
            await run.execute()
            assert run.outcome()[0] == "passed", run.state.failures


HYPOTHESIS_FAILURE = """
from hypothesis import given, settings, strategies as st

@settings(settings.get_profile("default"))  # with its example database (CI's profile has none)
@given(st.integers())
def test_small(n):
    assert n < 1000
"""


async def test_hypothesis_keeps_its_example_database_in_the_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As under `python -m pytest`: the failing example is saved in the root's `.hypothesis` (and
    # replayed first by the next run), not in a folder outside it.
    monkeypatch.setenv("PYTEST_PLUGINS", "_hypothesis_pytestplugin")  # the plugin, as when autoloaded
    root = write_project(tmp_path / "p", {"test_h.py": HYPOTHESIS_FAILURE})
    with anyio.fail_after(90):
        async with app_state(tmp_path, pass_env=["PYTEST_PLUGINS"]) as app:
            for _ in range(2):
                run = TestRun(app, RunRequest(root, PY, [], "run", 60), tool="run_tests", connection="test")
                await run.execute()
                assert run.outcome()[0] == "failed"
                assert list((root / ".hypothesis" / "examples").iterdir()), "the failing example is kept"


HYPOTHESIS_TEXT = """
from hypothesis import given, strategies as st

@given(st.characters())
def test_fill(c):
    pass
"""

HYPOTHESIS_WARM = """
from hypothesis.internal import charmap
from hypothesis.internal.conjecture import providers

def test_warm():
    assert charmap._charmap is not None, "unicode table not loaded"
    assert providers._seen_modules, "loaded modules not scanned for constants"
    assert "fork_failed" not in providers._local_constants.strings, "constants drawn from worker.py"
"""


async def test_the_zygote_fills_hypothesis_caches_each_run_would_refill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The unicode table (once a run wrote it in the root's `.hypothesis`) and the scan of the modules
    # the zygote holds are in every forked run already; the zygote writes nothing for it.
    monkeypatch.setenv("PYTEST_PLUGINS", "_hypothesis_pytestplugin")
    root = write_project(tmp_path / "p", {"test_fill.py": HYPOTHESIS_TEXT, "test_warm.py": HYPOTHESIS_WARM})
    with anyio.fail_after(90):
        for select, outcome in (("test_fill.py", "passed"), ("test_warm.py", "passed")):
            async with app_state(tmp_path, pass_env=["PYTEST_PLUGINS"]) as app:  # a new zygote each
                pool = await get_pool(app)
                async with pool.lease(root, PY):
                    written = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
                request = RunRequest(root, PY, [select], "run", 60)
                run = TestRun(app, request, tool="run_tests", connection="test")
                await run.execute()
                assert run.outcome()[0] == outcome, run.state.failures
        assert ".hypothesis/unicode_data" in "\n".join(written), "the first run wrote the table"
        assert not [p for p in written if "constants" in p], "the zygote wrote no cache of its own modules"


async def test_the_rendezvous_refuses_unknown_tokens(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with app_state(tmp_path) as app:
            pool = await get_pool(app)
            async with await anyio.connect_unix(pool.rendezvous.path) as stranger:
                await stranger.send(b"not-a-token ev\n")
                with pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
                    await stranger.receive()
            assert pool.rendezvous.rejected == 1
            assert oct(pool.rendezvous.directory.stat().st_mode & 0o777) == "0o700"
