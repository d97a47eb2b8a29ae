# ruff: noqa: UP006, UP031, UP035, UP045  (this file runs in any Python >= 3.8 with pytest)
"""The test worker: a zygote that imports pytest once and forks one child per run.

Standard library only (it runs in the *project's* interpreter, which need not have anything of
ours) and kept to Python 3.8 syntax. Started as `python worker.py` by the server, it:

1. moves its protocol channel off fd 0/1 (so nothing pytest prints can corrupt it), imports
   pytest, pre-warms it with a throwaway session in an empty temporary directory, cleans up what
   that session left in `sys.modules`/`sys.path`, and `gc.freeze()`s; it never imports project code;
2. says `ready` and serves commands, one JSON object per line on stdin: `run` (fork a child),
   `kill` (SIGKILL a child's process group), `exit`;
3. reaps its children and reports `exited` with their wait status, after killing what is left of
   their process group (while the child is still a zombie, so its pid cannot have been reused);
   on Linux the zygote and each child are child subreapers, so a process that left its run's group
   (`setsid`) is adopted by the zygote when the run ends, and killed there.

A child leads its own process group, connects twice to the server's rendezvous socket (events;
output, which becomes its fd 1 and 2), reads /dev/null as stdin, chdirs to the root, puts the
root first on `sys.path`, reseeds `random`, runs `pytest.main` with `Reporter`, and leaves with
`os._exit`. Events are JSON lines: collected, collect_error, start, test, finish, exit.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from typing import Any, Callable, Dict, List, Optional

PROTOCOL = 1
MAX_TEXT = 64 * 1024
MAX_FRAME = 8 * 1024
EXIT_INTERNAL = 70

Event = Dict[str, Any]
Send = Callable[[List[Event]], None]

WARM_TESTS = """
import logging
import unittest

import pytest

@pytest.fixture
def value():
    return 1

def test_pass(value, tmp_path, monkeypatch, capsys, caplog):
    monkeypatch.setenv("MCP_WARM", "1")
    logging.getLogger("warm").warning("warm")
    print("warm")
    assert capsys.readouterr().out == "warm\\n"
    assert (tmp_path / "x").write_text("x") == 1
    assert 0.1 + 0.2 == pytest.approx(0.3)
    with pytest.raises(ZeroDivisionError):
        1 / 0

@pytest.mark.parametrize("x", [1, 2])
def test_param(x):
    assert x

def test_fail():
    assert [1, 2] == [1, 3]

def test_raise():
    raise ValueError("warm")

@pytest.mark.skip(reason="warm")
def test_skip():
    pass

@pytest.mark.xfail
def test_xfail():
    assert 0

class TestCaseWarm(unittest.TestCase):
    def test_case(self):
        self.assertEqual(1, 1)
"""


def _clip(text: str, limit: int = MAX_TEXT) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + "\n[... %d characters cut ...]\n" % (len(text) - 2 * half) + text[-half:]


# --- reporting (runs in the child) ---------------------------------------------------------------


def _frames(longrepr: Any) -> List[Event]:
    """The traceback entries of a failure: path, line, and the text pytest would print."""
    chain = getattr(longrepr, "chain", None)
    if chain is None:
        reprtb = getattr(longrepr, "reprtraceback", None)
        chain = [(reprtb, None, None)] if reprtb is not None else []
    out: List[Event] = []
    for reprtb, _crash, descr in chain:
        for entry in getattr(reprtb, "reprentries", []):
            loc = getattr(entry, "reprfileloc", None)
            lines = "\n".join(getattr(entry, "lines", []))
            if loc is not None:
                lines += "\n%s:%s: %s" % (loc.path, loc.lineno, loc.message)
            out.append(
                {
                    "path": str(loc.path) if loc is not None else None,
                    "lineno": loc.lineno if loc is not None else None,
                    "text": _clip(lines.strip("\n"), MAX_FRAME),
                }
            )
        if descr:
            out.append({"path": None, "lineno": None, "text": str(descr), "descr": True})
    return out


def _message(longrepr: Any, text: str) -> str:
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None and getattr(crash, "message", None):
        return str(crash.message)
    if isinstance(longrepr, tuple) and len(longrepr) == 3:  # a skip: (path, line, reason)
        return str(longrepr[2])
    e_lines = [line[1:].strip() for line in text.splitlines() if line.startswith("E ")]
    if e_lines:
        return "\n".join(e_lines[-5:])
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def subtest_description(report: Any) -> Optional[str]:
    """A subtest's report (pytest 9's `subtests` fixture and unittest's `subTest`, or the
    pytest-subtests plugin): its message and parameters, as pytest prints them; else None."""
    if getattr(report, "context", None) is None or "subtest" not in type(report).__name__.lower():
        return None
    for name in ("_sub_test_description", "sub_test_description"):
        describe = getattr(report, name, None)
        if callable(describe):
            try:
                return str(describe())
            except Exception:
                break
    return ""


def describe_failure(report: Any, outcome: str) -> Event:
    longrepr = report.longrepr
    text = getattr(report, "longreprtext", None)
    if text is None:
        text = str(longrepr) if longrepr is not None else ""
    return {
        "nodeid": report.nodeid,
        "outcome": outcome,
        "when": getattr(report, "when", "collect"),
        "message": _clip(_message(longrepr, text), 4096),
        "longrepr": _clip(text),
        "frames": _frames(longrepr),
    }


class Reporter:
    """A pytest plugin that streams what happens as JSON events.

    A finished test's event goes out together with the next test's `start` (nothing of the
    tests runs in between): one write per test, and while a test runs, the server knows both
    which one it is and everything before it.
    """

    def __init__(self, send: Send, mode: str) -> None:
        self._send = send
        self._pending: List[Event] = []
        self.mode = mode
        self.config: Any = None
        self.deselected = 0
        self.categories: List[str] = []
        self.failures: List[Event] = []
        self.subtests: Dict[str, int] = {}
        self.duration = 0.0

    def send(self, event: Event) -> None:
        self._pending.append(event)
        batch, self._pending = self._pending, []
        self._send(batch)

    def pytest_configure(self, config: Any) -> None:
        self.config = config

    def pytest_deselected(self, items: List[Any]) -> None:
        self.deselected += len(items)

    def pytest_collectreport(self, report: Any) -> None:
        if report.failed:
            self.send({"e": "collect_error", **describe_failure(report, "error")})

    def pytest_collection_finish(self, session: Any) -> None:
        event: Event = {"e": "collected", "total": len(session.items), "deselected": self.deselected}
        if self.mode == "collect":
            event["nodeids"] = [item.nodeid for item in session.items]
        self.send(event)

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self.categories = []
        self.failures = []
        self.subtests = {}
        self.duration = 0.0
        self.send({"e": "start", "nodeid": nodeid})

    def pytest_runtest_logreport(self, report: Any) -> None:
        status = self.config.hook.pytest_report_teststatus(report=report, config=self.config)
        category = status[0] if status else report.outcome
        subtest = subtest_description(report)
        if subtest is None:
            self.duration += float(getattr(report, "duration", 0.0) or 0.0)
        elif report.passed or report.failed:
            key = "passed" if report.passed else "failed"
            self.subtests[key] = self.subtests.get(key, 0) + 1
        if category:
            self.categories.append(str(category))
        if report.failed:
            outcome = "error" if report.when != "call" else "failed"
            failure = describe_failure(report, outcome)
            if subtest is not None:  # its own id: the test's, then the subtest's message and params
                failure["nodeid"] = ("%s %s" % (report.nodeid, subtest)).rstrip()
                failure["subtest"] = subtest
            self.failures.append(failure)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        event: Event = {"e": "test", "nodeid": nodeid, "categories": self.categories, "duration": self.duration}
        if self.failures:
            event["failures"] = self.failures
        if self.subtests:
            event["subtests"] = self.subtests
        self._pending.append(event)

    def pytest_sessionfinish(self, session: Any, exitstatus: Any) -> None:
        self.send({"e": "finish", "exitstatus": int(exitstatus)})


# --- the child -----------------------------------------------------------------------------------


def _connect(path: str, token: str, kind: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(("%s %s\n" % (token, kind)).encode("ascii"))
    return sock


def _prctl(option: int, arg: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, arg, 0, 0, 0)) == 0
    except Exception:
        return False


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this child if the zygote dies (its group is then killed by the server).

    Armed first thing after the fork, then the parent is checked: a zygote that died before the
    signal was armed would never send it (the child is already someone else's)."""
    _prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(EXIT_INTERNAL)


def _become_subreaper() -> bool:
    """Linux: orphans among our descendants are re-parented to us, not to init. A process that
    left its run's process group (`setsid`, `start_new_session=True`) is thus still ours to kill."""
    return _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER (not inherited across fork)


def _child_pids() -> List[int]:
    """Our children, from /proc (Linux); empty where it cannot be read."""
    pids: List[int] = []
    try:
        for task in os.listdir("/proc/self/task"):
            with open("/proc/self/task/%s/children" % task) as f:
                pids.extend(int(p) for p in f.read().split())
    except (OSError, ValueError):
        return []
    return pids


def load_recorder(name: str = "recorder") -> Any:
    """`recorder.py` (or `preload.py`) beside this file, under a private name and not on
    `sys.path` (the project must never import our modules). Loaded once in the zygote."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location("_mcp_code_tools_" + name, path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RECORDER: Any = None
PRELOAD: Any = None


def child_main(cmd: Event, inherited_fds: List[int], forked_at: float, parent: int) -> None:
    """Run one pytest session in this forked child (of the zygote `parent`); never returns."""
    code = EXIT_INTERNAL
    try:
        _die_with_parent(parent)
        os.setpgid(0, 0)  # the zygote sets it too: whichever runs first, a kill finds the group
        _become_subreaper()  # what escapes the group waits for us, then for the zygote, to die
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for fd in inherited_fds:
            os.close(fd)
        events = _connect(cmd["sock"], cmd["token"], "ev")
        output = _connect(cmd["sock"], cmd["token"], "out")
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(output.fileno(), 1)
        os.dup2(output.fileno(), 2)
        os.close(devnull)
        output.close()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]

        def send(batch: List[Event]) -> None:
            events.sendall(b"".join(json.dumps(e, default=str).encode("utf-8") + b"\n" for e in batch))

        root = cmd["root"]
        for key, value in (cmd.get("env") or {}).items():
            if key in ("TRACEPARENT", "TRACESTATE"):
                os.environ[key] = str(value)
        os.chdir(root)
        sys.path.insert(0, root)
        import random

        random.seed()
        import pytest

        sys.argv = [os.path.join(os.path.dirname(pytest.__file__), "__main__.py")]
        args = list(cmd["args"])
        if cmd.get("mode") == "collect":
            args = ["--collect-only", "-q", *args]
        plugins: List[Any] = [Reporter(send, str(cmd.get("mode", "run")))]
        recorder = None
        baseline = set(sys.modules)  # what the zygote had: the rest is what this run imports
        if RECORDER is not None and isinstance(cmd.get("select"), dict):
            recorder = RECORDER.Recorder(root, send, cmd["select"])
            plugins.append(recorder)
        code = int(pytest.main(args, plugins=plugins))
        if recorder is not None:
            event = recorder.event()
            if PRELOAD is not None:
                event["imported"] = PRELOAD.imported_modules(root, baseline)
            send([event])
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        send([{"e": "exit", "code": code, "elapsed": time.perf_counter() - forked_at}])
        # Close the streams now, not when the kernel tears down this (large) process: the
        # server has the whole run as soon as it sees both ends close.
        events.close()
        for fd in (0, 1, 2):
            os.close(fd)
    except BaseException as exc:  # the child must always leave through os._exit
        with contextlib.suppress(Exception):
            os.write(2, ("test worker: %s: %s\n" % (type(exc).__name__, exc)).encode("utf-8", "replace"))
        code = EXIT_INTERNAL
    finally:
        os._exit(code)


# --- the zygote ----------------------------------------------------------------------------------


def _exit_code(status: int) -> int:
    """A wait status as an exit code; negative for a signal (`os.waitstatus_to_exitcode`, 3.9+)."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return status


def _site_dirs() -> List[str]:
    """Directories whose listing changes when packages are installed or removed."""
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = []
    for entry in sys.path:
        path = os.path.abspath(entry or ".")
        if path != here and os.path.isdir(path) and path not in dirs:
            dirs.append(path)
    return dirs


def thread_count() -> int:
    """Threads of this process: the kernel's count (native threads too) where it can be read."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


def thread_plugins(threads: List[Any], plugins: Dict[str, str]) -> List[str]:
    """The plugins (by registered name) whose code the `threads` run, from their target's module."""
    names: List[str] = []
    for thread in threads:
        target = getattr(thread, "_target", None) or getattr(thread, "function", None)
        module = getattr(target, "__module__", None) or type(thread).__module__
        found = [n for m, n in plugins.items() if module == m or module.startswith(m + ".")]
        found = found or [n for m, n in plugins.items() if module.split(".")[0] == m.split(".")[0]]
        names += [n for n in found[:1] if n not in names]
    return names


def prewarm(pytest: Any, skip: List[str]) -> Dict[str, str]:
    """A throwaway session in an empty temporary directory: imports and caches what every run needs.

    The process stays in the root meanwhile (the session's rootdir, ini file and conftest boundary
    are the temporary directory, named explicitly): what a plugin's modules capture of the working
    directory at import is then what it would capture under `python -m pytest` in the root
    (hypothesis, for one, keeps its example database and caches in `.hypothesis` there; captured in
    the temporary directory, every run wrote them outside the root, and no failing example was
    replayed). Whatever it leaves behind that is not library code (its test module, its sys.path
    entry, import hooks) is removed again, so the first real run starts as clean as the hundredth.
    The plugins in `skip` are blocked (`-p no:NAME`). Returns the plugins it loaded, by module
    name, for naming the one that started a thread.
    """
    loaded: Dict[str, str] = {}
    reporter = Reporter(lambda batch: None, "run")
    saved_path = list(sys.path)
    saved_meta = list(sys.meta_path)
    saved_modules = set(sys.modules)
    saved_cwd = os.getcwd()
    tmp = tempfile.mkdtemp(prefix="mcp-warm-")
    try:
        ini = os.path.join(tmp, "pytest.ini")
        with open(ini, "w") as f:
            f.write("[pytest]\n")
        with open(os.path.join(tmp, "test_mcp_warm.py"), "w") as f:
            f.write(WARM_TESTS)
        blocked = [arg for name in skip for arg in ("-p", "no:" + name)]
        here = ["-c", ini, "--rootdir", tmp, "--confcutdir", tmp]
        pytest.main([tmp, "-q", *here, *blocked], plugins=[reporter])
        for name, plugin in reporter.config.pluginmanager.list_name_plugin():
            module = getattr(plugin, "__name__", None) or type(plugin).__module__
            builtin = module == "pytest" or str(module).startswith("_pytest")
            if isinstance(module, str) and plugin is not reporter and not builtin:
                loaded[module] = str(name)
    except BaseException:  # a plugin that breaks the warm-up only costs speed
        pass
    finally:
        os.chdir(saved_cwd)
        for name in set(sys.modules) - saved_modules:
            module_file = getattr(sys.modules.get(name), "__file__", None) or ""
            if module_file.startswith(tmp) or name in ("conftest", "test_mcp_warm"):
                sys.modules.pop(name, None)
        sys.path[:] = saved_path
        sys.meta_path[:] = saved_meta
        for key in [k for k in sys.path_importer_cache if k.startswith(tmp)]:
            del sys.path_importer_cache[key]
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:
            pass
    return loaded


class Zygote:
    def __init__(self, proto_in: int, proto_out: int) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.children: Dict[int, int] = {}  # pid -> run id
        self.unsafe = False
        self.subreaper = _become_subreaper()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        signal.signal(signal.SIGTERM, self._on_term)

    def emit(self, event: Event) -> None:
        data = json.dumps(event).encode("utf-8") + b"\n"
        while data:
            written = os.write(self.proto_out, data)
            data = data[written:]

    def _on_term(self, signum: int, frame: Any) -> None:
        self.shutdown()
        os._exit(0)

    def serve(self) -> int:
        buffer = b""
        while True:
            readable, _, _ = select.select([self.proto_in, self.wake_r], [], [])
            if self.wake_r in readable:
                try:
                    while os.read(self.wake_r, 512):
                        pass
                except (BlockingIOError, InterruptedError):
                    pass
                self.reap()
            if self.proto_in in readable:
                data = os.read(self.proto_in, 65536)
                if not data:
                    self.shutdown()
                    return 0
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip() and self.handle(json.loads(line)):
                        self.shutdown()
                        return 0

    def handle(self, cmd: Event) -> bool:
        """Run one command; True means exit."""
        op = cmd.get("cmd")
        if op == "run":
            self.fork(cmd)
        elif op == "kill":
            self.kill(int(cmd["pid"]))
        elif op == "preimport":
            self.preimport(cmd)
        elif op == "exit":
            return True
        return False

    def preimport(self, cmd: Event) -> None:
        """Import the modules the server learned this project's runs import (`preload.py`)."""
        result: Event = {"ok": [], "dropped": {}, "unsafe": False}
        if PRELOAD is not None:
            try:
                result = PRELOAD.preimport([str(m) for m in cmd.get("modules", [])], str(cmd.get("root", "")))
            except BaseException as exc:
                result["dropped"] = {"*": "%s: %s" % (type(exc).__name__, exc)}
                result["unsafe"] = True
        self.unsafe = self.unsafe or bool(result.get("unsafe"))
        self.emit({"e": "preimported", **result})

    def fork(self, cmd: Event) -> None:
        run_id = int(cmd["id"])
        if self.unsafe:  # a pre-import left a thread or project code here: the server replaces us
            self.emit({"e": "fork_failed", "id": run_id, "message": "unsafe to fork after a pre-import"})
            return
        forked_at = time.perf_counter()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError as exc:
            self.emit({"e": "fork_failed", "id": run_id, "message": str(exc)})
            return
        if pid == 0:
            child_main(cmd, [self.proto_in, self.proto_out, self.wake_r, self.wake_w], forked_at, parent)
        with contextlib.suppress(OSError):  # in both: a kill racing the fork must find the group
            os.setpgid(pid, pid)
        self.children[pid] = run_id
        self.emit({"e": "forked", "id": run_id, "pid": pid})

    def kill(self, pid: int) -> None:
        if pid in self.children:  # not reaped yet: the group id cannot belong to anyone else
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    def reap(self) -> None:
        for pid in list(self.children):
            status = self._collect(pid)
            if status is None:
                continue
            run_id = self.children.pop(pid)
            self.sweep()
            code = _exit_code(status)
            self.emit({"e": "exited", "id": run_id, "pid": pid, "status": code})

    def sweep(self) -> None:
        """Kill and reap what we adopted: a child of ours that we did not fork was left behind by a
        finished run (a live run is the subreaper of its own descendants) outside its process group.
        Each kill may orphan more (their children in other groups), so look again, a bounded number
        of times."""
        if not self.subreaper:
            return
        for _ in range(64):
            adopted = [pid for pid in _child_pids() if pid not in self.children]
            if not adopted:
                return
            for pid in adopted:
                with contextlib.suppress(OSError):
                    pgid = os.getpgid(pid)
                    if pgid != os.getpgrp():
                        os.killpg(pgid, signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def _collect(self, pid: int) -> Optional[int]:
        """The wait status of `pid` if it has exited (its group killed first), else None."""
        waitid = getattr(os, "waitid", None)
        if waitid is None:  # no way to look without reaping: reap, then kill the group
            got, status = os.waitpid(pid, os.WNOHANG)
            if got == 0:
                return None
            self.kill(pid)
            return status
        try:
            if waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                return None
        except ChildProcessError:
            return 0
        self.kill(pid)  # still a zombie: what it left running in its group goes with it
        try:
            return os.waitpid(pid, 0)[1]
        except ChildProcessError:
            return 0

    def shutdown(self) -> None:
        """Kill every child's group and reap them."""
        for pid in list(self.children):
            self.kill(pid)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
            self.children.pop(pid, None)
        self.sweep()


def main(argv: List[str]) -> int:
    """Options (the server's, when a warm-up left threads behind): `--warm-without NAME` blocks a
    plugin in the warm-up, `--no-warm` skips it."""
    warm = "--no-warm" not in argv
    skip = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--warm-without"]
    here = os.path.dirname(os.path.abspath(__file__))
    if sys.path and os.path.abspath(sys.path[0] or ".") == here:
        del sys.path[0]  # the project must never import our modules
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    sys.dont_write_bytecode = False  # pytest caches rewritten test modules as bytecode
    proto_in, proto_out = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # whatever pytest prints in the zygote goes nowhere
    os.close(devnull)
    zygote = Zygote(proto_in, proto_out)
    try:
        import pytest
    except BaseException as exc:
        zygote.emit({"e": "error", "message": "%s: %s" % (type(exc).__name__, exc), "python": sys.executable})
        return 3
    global RECORDER, PRELOAD
    try:
        RECORDER = load_recorder()
        PRELOAD = load_recorder("preload")
    except Exception as exc:  # no selection or recording, but tests still run
        os.write(2, ("test worker: recorder not loaded: %s\n" % exc).encode("utf-8", "replace"))
    saved_stderr = os.dup(2)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)
    before = set(threading.enumerate())
    plugins: Dict[str, str] = {}
    try:
        if warm:
            plugins = prewarm(pytest, skip)
            if PRELOAD is not None:
                PRELOAD.warm_caches()  # what the plugins loaded (hypothesis) fills per process
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(quiet)
    # fork() copies only the calling thread: a thread the warm-up left running (a plugin's) would
    # leave its locks held forever in every child. The server restarts us without that plugin.
    extra = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()  # children share the warm heap copy-on-write; the collector must not touch it
    zygote.emit(
        {
            "e": "ready",
            "protocol": PROTOCOL,
            "pid": os.getpid(),
            "python": sys.executable,
            "python_version": "%d.%d.%d" % sys.version_info[:3],
            "pytest": getattr(pytest, "__version__", "?"),
            "site_dirs": _site_dirs(),
            "threads": thread_count(),
            "thread_plugins": thread_plugins(extra, plugins),
            "warm": ("without " + ",".join(skip) if skip else "full") if warm else "none",
        }
    )
    return zygote.serve()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
