"""The zygote's fork, driven directly in a scratch process (worker.py is standard library only): the
child's process group exists as soon as the zygote knows the pid, and a child whose zygote died
before it armed the parent-death signal never starts its run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tools.test_runner.zygote import WORKER

PRELUDE = f"""
import json, os, socket, sys, time
sys.path.insert(0, {str(WORKER.parent)!r})
import worker
"""


def run_script(body: str, cwd: Path) -> dict[str, object]:
    """Run `body` after the prelude in a fresh interpreter; it prints one JSON object."""
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(body)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_zygote_sets_the_childs_process_group_too(tmp_path: Path) -> None:
    # The child is held before it runs anything of its own (as if not scheduled yet): the group
    # must already exist, so that a kill arriving now reaches it.
    result = run_script(
        """
        hold_r, hold_w = os.pipe()

        def held_child(cmd, fds, forked_at, *rest):
            os.read(hold_r, 1)
            os._exit(0)

        worker.child_main = held_child
        out_r, out_w = os.pipe()
        zygote = worker.Zygote(os.open(os.devnull, os.O_RDONLY), out_w)
        zygote.fork({"id": 1})
        (pid,) = zygote.children
        pgid = os.getpgid(pid)
        os.write(hold_w, b"x")
        os.waitpid(pid, 0)
        print(json.dumps({"pid": pid, "pgid": pgid}))
        """,
        tmp_path,
    )
    assert result["pgid"] == result["pid"]


def test_a_child_whose_zygote_died_before_it_armed_the_death_signal_does_not_run(tmp_path: Path) -> None:
    # middle forks the child and dies at once; the child, re-parented to us (a subreaper), only
    # then enters child_main with its zygote's pid. It must leave without connecting for its run.
    result = run_script(
        """
        worker._become_subreaper()
        path = os.path.join(os.getcwd(), "s")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(4)
        middle = os.fork()
        if middle == 0:
            zygote = os.getpid()
            if os.fork() == 0:
                while os.getppid() == zygote:
                    time.sleep(0.001)
                worker.child_main({"sock": path, "token": "t", "root": os.getcwd(), "args": []}, [], 0.0, zygote)
            os._exit(0)
        os.waitpid(middle, 0)
        pid, status = os.wait()  # the orphaned child, bounded by the test's timeout
        listener.setblocking(False)
        try:
            listener.accept()
            connected = True
        except BlockingIOError:
            connected = False
        print(json.dumps({"connected": connected, "code": os.waitstatus_to_exitcode(status)}))
        """,
        tmp_path,
    )
    assert result == {"connected": False, "code": 70}
