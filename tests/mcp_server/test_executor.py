"""The secure executor with real processes: no shell, scrubbed environment, process groups killed
on timeout and cancel, one audit line per command, redaction; and the FIFO of run slots."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from mcp_server.audit import AuditLog
from mcp_server.errors import Busy, ToolError
from mcp_server.executor import ENV_ALLOW, Executor, RunSlots
from mcp_server.redact import REDACTED, Redactor

pytestmark = pytest.mark.anyio

PY = sys.executable
SECRET = "env-secret-0123456789"
GHP = "ghp_" + "Z" * 36
AUDIT_FIELDS = ["time", "connection", "tool", "argv", "cwd", "exit_status", "duration_s", "output_bytes", "outcome"]


def make_executor(
    tmp_path: Path,
    *,
    environ: dict[str, str] | None = None,
    pass_env: tuple[str, ...] = (),
    max_bytes: int = 1024 * 1024,
    backups: int = 2,
) -> Executor:
    redactor = Redactor([SECRET])
    return Executor(
        audit=AuditLog(tmp_path / "audit.jsonl", max_bytes=max_bytes, backups=backups, redactor=redactor),
        redactor=redactor,
        slots=RunSlots(2, 2),
        pass_env=pass_env,
        environ=environ,
    )


def audit_lines(tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "audit.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"


def exists(pid: int) -> bool:
    """In the process table at all (a zombie too): False once reaped."""
    return Path(f"/proc/{pid}").exists()


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


async def wait_dead(pid: int) -> None:
    """Wait (bounded) until `pid` has exited: a SIGKILL is sent at once but acted on a moment later."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        with anyio.fail_after(10):
            await anyio.wait_readable(fd)
    finally:
        os.close(fd)


def in_group(pgid: int) -> list[int]:
    """Live processes of process group `pgid` (not a zombie, Z, nor one being released, X: a process
    that has just exited, whose parent ignores it, shows X for a moment before it is gone)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            found.append(int(entry))
    return found


async def run(executor: Executor, argv: list[str], cwd: Path, **kwargs: Any) -> Any:
    kwargs.setdefault("timeout_s", 30)
    return await executor.run(argv, cwd=cwd, tool="t", connection="conn-1", **kwargs)


# --- no shell, scrubbed environment ------------------------------------------------------------


async def test_shell_syntax_in_arguments_is_data(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    hostile = [f"x; touch {canary}", f"$(touch {canary})", f"`touch {canary}`", "*", "a && b | c > d"]
    with anyio.fail_after(30):
        result = await run(
            make_executor(tmp_path), [PY, "-c", "import sys; print(repr(sys.argv[1:]))", *hostile], tmp_path
        )
    assert result.returncode == 0
    assert result.stdout.strip() == repr(hostile)
    assert not canary.exists()
    assert not (tmp_path / "d").exists()


async def test_the_environment_is_an_allow_list(tmp_path: Path) -> None:
    environ = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "LC_ALL": "C.UTF-8",
        "GITHUB_TOKEN": GHP,
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG",
        "PROJECT_DB_URL": "postgres://db/test",
        "RANDOM_VAR": "x",
    }
    executor = make_executor(tmp_path, environ=environ, pass_env=("PROJECT_DB_URL",))
    show_env = [PY, "-c", "import json, os; print(json.dumps(sorted(os.environ)))"]
    with anyio.fail_after(30):
        tool_env = json.loads((await run(executor, show_env, tmp_path)).stdout)
        project_env = json.loads((await run(executor, show_env, tmp_path, project_env=True)).stdout)
    assert "PATH" in tool_env and "HOME" in tool_env and "LC_ALL" in tool_env
    assert not {"GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "PROJECT_DB_URL", "RANDOM_VAR"} & set(tool_env)
    assert set(tool_env) <= set(ENV_ALLOW) | {"LC_ALL", "LC_CTYPE"}
    # pass_env names variables for project code (test runs) only.
    assert "PROJECT_DB_URL" in project_env
    assert not {"GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY", "RANDOM_VAR"} & set(project_env)


async def test_a_secret_in_the_server_environment_does_not_reach_the_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-abcdef-123456")
    executor = make_executor(tmp_path)  # reads os.environ
    with anyio.fail_after(30):
        result = await run(executor, [PY, "-c", "import os; print(os.environ.get('MY_SERVICE_TOKEN'))"], tmp_path)
    assert result.stdout.strip() == "None"


async def test_bad_argument_vectors_are_refused(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    with pytest.raises(ToolError, match="NUL"):
        await run(executor, [PY, "-c", "pass", "a\x00b"], tmp_path)
    with pytest.raises(ToolError, match="cannot start"):
        await run(executor, [str(tmp_path / "no-such-binary")], tmp_path)
    with pytest.raises(ToolError):
        await run(executor, [], tmp_path)


async def test_stdin_and_output_limits(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    with anyio.fail_after(30):
        echoed = await run(executor, [PY, "-c", "import sys; print(sys.stdin.read().upper())"], tmp_path, stdin=b"hi")
        big = await run(executor, [PY, "-c", "print('x' * 100_000)"], tmp_path, max_output=1000)
    assert echoed.stdout.strip() == "HI"
    assert big.truncated and len(big.stdout) == 1000
    assert big.output_bytes == 100_001  # the audit counts what the process wrote, not what was kept


# --- process groups: timeout and cancellation ---------------------------------------------------


async def test_a_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    script = "echo $$; sleep 60 & echo $!; sleep 60"
    with anyio.fail_after(30):
        result = await run(executor, ["sh", "-c", script], tmp_path, timeout_s=2)  # room for a loaded machine
    assert result.timed_out and result.returncode is None
    # What the command wrote before the timeout is kept (redaction held it back; it is released).
    leader, grandchild = (int(x) for x in result.stdout.split())
    await wait_dead(grandchild)  # killed with its group; the kernel acts on it a moment later
    assert not alive(leader) and not alive(grandchild)
    assert in_group(leader) == []
    assert executor.live == set()
    (line,) = audit_lines(tmp_path)
    assert line["outcome"] == "timeout" and line["exit_status"] is not None and line["exit_status"] < 0


async def test_cancellation_kills_the_whole_process_group(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    sock = tmp_path / "ready.sock"
    # The child starts a grandchild, tells us both pids over a socket, then waits forever.
    child = (
        "import os, socket, subprocess, sys, time\n"
        "grandchild = subprocess.Popen(['sleep', '60'])\n"
        "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        "s.sendall(f'{os.getpid()} {grandchild.pid}'.encode()); s.close()\n"
        "time.sleep(60)\n"
    )
    with anyio.fail_after(30):
        listener = await anyio.create_unix_listener(sock)
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(run, executor, [PY, "-c", child, str(sock)], tmp_path)
            conn = await listener.accept()
            async with conn:
                pids = (await conn.receive()).decode()
            tg.cancel_scope.cancel()
    leader, grandchild = (int(x) for x in pids.split())
    await wait_dead(grandchild)
    assert not alive(leader) and not alive(grandchild)
    assert in_group(leader) == []
    assert executor.live == set()
    (line,) = audit_lines(tmp_path)
    assert line["outcome"] == "cancelled"


async def test_a_long_lived_child_is_killed_with_its_group_on_exit(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    with anyio.fail_after(30):
        async with executor.open(
            ["sh", "-c", "sleep 60 & echo $!; cat"], cwd=tmp_path, tool="pool", connection="-"
        ) as p:
            assert p.stdout is not None
            grandchild = int((await p.stdout.receive()).decode().strip())
            assert alive(grandchild)
    await wait_dead(grandchild)
    assert not alive(grandchild) and in_group(p.pid) == []
    assert [line["outcome"] for line in audit_lines(tmp_path)] == ["closed"]


async def test_aclose_kills_waits_for_and_reaps_what_is_still_running(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    opened = anyio.Event()
    held: list[Any] = []

    async def hold() -> None:
        argv = ["sh", "-c", "sleep 60 & echo $!; cat"]
        async with executor.open(argv, cwd=tmp_path, tool="pool", connection="-") as p:
            assert p.stdout is not None
            held.extend([p, int((await p.stdout.receive()).decode().strip())])
            opened.set()
            await anyio.sleep_forever()

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(hold)
            await opened.wait()
            proc, grandchild = held
            await executor.aclose()  # the server goes away while the holder still runs
            # Reaped when aclose returns (not only signalled): its exit status is known.
            assert proc.returncode is not None and proc.returncode < 0
            assert executor.live == set()
            assert not exists(proc.pid)
            tg.cancel_scope.cancel()
    await wait_dead(grandchild)
    assert in_group(proc.pid) == []


async def test_orphans_of_project_code_are_adopted_killed_and_reaped(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    assert executor.adopt_orphans()
    # Each child leaves a sleep in a session of its own and exits: the sleep is orphaned.
    script = (
        "import subprocess as s; d = s.DEVNULL\n"
        "print(s.Popen(['sleep', '60'], start_new_session=True, stdin=d, stdout=d, stderr=d).pid)"
    )
    with anyio.fail_after(30):
        project = await run(executor, [PY, "-c", script], tmp_path, project_env=True)
        tool = await run(executor, [PY, "-c", script], tmp_path)
        orphan, other = int(project.stdout), int(tool.stdout)
        try:
            # Re-parented to this process (a subreaper), not to init.
            assert parent_of(orphan) == os.getpid()
            assert await executor.reap_adopted() == 1
            assert not exists(orphan), "killed and reaped"
            assert alive(other), "only processes carrying the run tag (project code) are touched"
        finally:
            os.kill(other, 9)
            await wait_dead(other)
            reap(other)


# --- audit and redaction ------------------------------------------------------------------------


async def test_one_audit_line_per_command_with_a_fixed_field_order(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    with anyio.fail_after(30):
        await run(executor, [PY, "-c", "print('hello')"], tmp_path)
        await run(executor, [PY, "-c", "import sys; sys.exit(3)"], tmp_path)
    raw = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert len(raw) == 2
    first, second = (json.loads(line) for line in raw)
    assert list(first) == AUDIT_FIELDS and list(second) == AUDIT_FIELDS
    assert first["connection"] == "conn-1" and first["tool"] == "t"
    assert first["argv"] == [PY, "-c", "print('hello')"]
    assert first["cwd"] == str(tmp_path)
    assert first["exit_status"] == 0 and first["outcome"] == "exited"
    assert first["output_bytes"] == len("hello\n")
    assert isinstance(first["duration_s"], float) and first["time"].endswith("Z")
    assert second["exit_status"] == 3
    assert oct((tmp_path / "audit.jsonl").stat().st_mode & 0o777) == oct(0o600)


async def test_the_audit_log_rotates(tmp_path: Path) -> None:
    executor = make_executor(tmp_path, max_bytes=1024, backups=2)
    with anyio.fail_after(60):
        for i in range(12):
            await run(executor, [PY, "-c", "pass", f"run-{i}-" + "p" * 150], tmp_path)
    files = sorted(name for name in os.listdir(tmp_path) if name.startswith("audit.jsonl"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in files:
        assert (tmp_path / name).stat().st_size <= 1024
        for line in (tmp_path / name).read_text().splitlines():
            assert list(json.loads(line)) == AUDIT_FIELDS
    assert f"run-11-{'p' * 150}" in (tmp_path / "audit.jsonl").read_text()  # the newest is in the live file


async def test_output_is_raw_and_secrets_never_reach_the_audit_log(tmp_path: Path) -> None:
    """What a tool parses is never rewritten (ruff's JSON, the LSP stream); what leaves the server is
    redacted at egress: here the audit log (argv), and the result pipeline (tests/mcp_server/
    test_results.py: test_no_secret_leaves_by_any_channel, through the real tools)."""
    executor = make_executor(tmp_path)
    seen: list[str] = []
    # The secrets are written in two pieces with a flush between: split across pipe reads.
    script = (
        "import sys, time\n"
        "for stream in (sys.stdout, sys.stderr):\n"
        "    for secret in sys.argv[1:]:\n"
        "        half = len(secret) // 2\n"
        "        stream.write('x' * 9000 + secret[:half]); stream.flush()\n"
        "        stream.write(secret[half:] + '\\n'); stream.flush()\n"
    )
    secrets = [SECRET, GHP, "password=opensesame99", '{"password": "q\\"uoted"}']
    printed = "".join("x" * 9000 + secret + "\n" for secret in secrets)
    with anyio.fail_after(30):
        result = await run(executor, [PY, "-c", script, *secrets], tmp_path, on_output=seen.append)
    assert result.stdout == printed and result.stderr == printed  # raw: byte for byte what was printed
    assert "".join(seen) == printed  # live output (a tool's parser) is raw too
    audit_text = (tmp_path / "audit.jsonl").read_text()
    for secret in (SECRET, GHP, "opensesame99", 'q\\"uoted'):
        assert secret not in audit_text
    assert REDACTED in audit_text
    (line,) = audit_lines(tmp_path)
    assert line["argv"][:2] == [PY, "-c"] and len(line["argv"]) == 3 + len(secrets)  # the shape is kept


async def test_redact_true_redacts_as_the_output_streams(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    seen: list[str] = []
    script = "import sys\nfor s in sys.argv[1:]:\n    sys.stdout.write('x' * 9000 + s + '\\n'); sys.stdout.flush()\n"
    with anyio.fail_after(30):
        result = await run(executor, [PY, "-c", script, SECRET, GHP], tmp_path, on_output=seen.append, redact=True)
    assert SECRET not in result.stdout and GHP not in result.stdout and result.stdout.count(REDACTED) == 2
    assert "".join(seen) == result.stdout


# --- run slots: FIFO queue, backpressure, Busy, cancellation ------------------------------------


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until `condition` holds (the caller bounds the wait)."""
    while not condition():
        await anyio.lowlevel.checkpoint()


async def test_slots_admit_in_fifo_order(tmp_path: Path) -> None:
    slots = RunSlots(capacity=1, max_queued=10)
    admitted: list[int] = []

    async def job(i: int) -> None:
        async with slots.slot():
            admitted.append(i)
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, slots.slot():
            for i in range(8):
                tg.start_soon(job, i)
                await until(lambda i=i: slots.waiting == i + 1)  # type: ignore[misc]
            # Released: the queue drains in arrival order.
    assert admitted == list(range(8))
    assert slots.running == 0 and slots.waiting == 0


async def test_backpressure_until_the_queue_limit_then_busy() -> None:
    slots = RunSlots(capacity=2, max_queued=3)
    release = anyio.Event()
    done: list[int] = []

    async def job(i: int) -> None:
        async with slots.slot():
            await release.wait()
            done.append(i)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(job, i)
            await until(lambda: slots.running == 2 and slots.waiting == 3)
            with pytest.raises(Busy, match="max_concurrent_runs") as busy:
                async with slots.slot():
                    pass
            assert "max_queued_runs" in str(busy.value)
            release.set()
    assert sorted(done) == list(range(5))  # everything under the limit completed
    assert slots.running == 0 and slots.waiting == 0


async def test_cancelling_a_queued_run_does_not_leak_its_slot() -> None:
    slots = RunSlots(capacity=1, max_queued=5)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg, slots.slot():
            scope = anyio.CancelScope()

            async def queued() -> None:
                with scope:
                    async with slots.slot():
                        raise AssertionError("a cancelled waiter must not run")

            tg.start_soon(queued)
            await until(lambda: slots.waiting == 1)
            scope.cancel()
            await until(lambda: slots.waiting == 0)
        assert slots.running == 0
        async with slots.slot():  # free at once
            assert slots.running == 1


async def test_a_slot_handed_to_a_waiter_being_cancelled_passes_on() -> None:
    slots = RunSlots(capacity=1, max_queued=5)
    admitted: list[str] = []
    scope_b = anyio.CancelScope()

    async def waiter(name: str, scope: anyio.CancelScope | None = None) -> None:
        with scope or anyio.CancelScope():
            async with slots.slot():
                admitted.append(name)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            holder = slots.slot()
            await holder.__aenter__()
            tg.start_soon(waiter, "b", scope_b)
            await until(lambda: slots.waiting == 1)
            tg.start_soon(waiter, "c")
            await until(lambda: slots.waiting == 2)
            # In one step: b is cancelled and the slot is handed to b before b can react.
            scope_b.cancel()
            await holder.__aexit__(None, None, None)
    assert admitted == ["c"]
    assert slots.running == 0 and slots.waiting == 0


async def test_a_reservation_holds_its_place_from_the_moment_it_is_taken() -> None:
    slots = RunSlots(capacity=1, max_queued=1)
    with anyio.fail_after(10):
        running = slots.reserve()  # granted at once
        queued = slots.reserve()  # queued at once, before anyone awaits anything
        assert slots.running == 1 and slots.waiting == 1
        with pytest.raises(Busy, match="max_queued_runs"):
            slots.reserve()
        async with running:
            pass
        async with queued as waited:  # handed over when `running` ended
            assert waited >= 0 and slots.running == 1
        assert slots.running == 0
        # A place given up before it was used goes back; so does a slot granted but never used.
        held = slots.reserve()
        unused = slots.reserve()
        unused.cancel()
        assert slots.waiting == 0
        held.cancel()
        held.cancel()  # idempotent
        assert slots.running == 0 and slots.waiting == 0


async def test_executor_runs_under_a_slot_in_fifo_order(tmp_path: Path) -> None:
    executor = make_executor(tmp_path)
    executor.slots = RunSlots(capacity=2, max_queued=8)
    order: list[int] = []

    async def job(i: int) -> None:
        async with executor.slots.slot():
            order.append(i)
            await run(executor, [PY, "-c", "pass"], tmp_path)

    started: list[Callable[[], Awaitable[None]]] = []
    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for i in range(8):  # four times the cap: none refused, all complete
                tg.start_soon(job, i)
                await until(lambda i=i: len(order) + executor.slots.waiting == i + 1)  # type: ignore[misc]
    assert order == list(range(8))
    assert len(audit_lines(tmp_path)) == 8
    del started


async def test_a_reap_scan_never_kills_a_project_process_being_started(tmp_path: Path) -> None:
    """A zygote restarting after its predecessor died: the scan for the dead one's orphans runs
    while the new one (which carries the run tag too) is being started, and must not take it
    for an orphan (it did: the known pids were read before the new child was registered)."""
    executor = make_executor(tmp_path)
    assert executor.adopt_orphans()
    sleeper = [PY, "-c", "import time; time.sleep(60)"]
    with anyio.fail_after(60):
        for _ in range(8):
            spawned = anyio.Event()

            async def scan_until_spawned(done: anyio.Event = spawned) -> None:
                while not done.is_set():
                    await executor.reap_adopted()
                    await anyio.lowlevel.checkpoint()

            async with anyio.create_task_group() as tg:
                tg.start_soon(scan_until_spawned)
                await anyio.lowlevel.checkpoint()
                async with executor.open(sleeper, cwd=tmp_path, tool="t", connection="c", project_env=True) as proc:
                    spawned.set()
                    await executor.reap_adopted()  # one more scan with the child fully started
                    assert proc.returncode is None and alive(proc.pid), "a child being started was reaped"
