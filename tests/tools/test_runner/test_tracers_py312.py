"""test_tracers.py again, in the 3.12+ project venv (tests/py312_venv.py): there the recorder's tracer
is `sys.monitoring`, which this 3.11 process never runs. That venv has only pytest (as a project's
would): the module runs without our conftest and configuration, and loads `tracers.py` by path."""

from __future__ import annotations

import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def test_the_tracer_tests_pass_with_sys_monitoring(py312: Path, tmp_path: Path) -> None:
    argv = [str(py312), "-m", "pytest", "-v", "-p", "no:cacheprovider", "--noconftest"]
    argv += ["-c", str(tmp_path / "none.ini"), "--rootdir", str(REPO), str(HERE / "test_tracers.py")]
    (tmp_path / "none.ini").write_text("[pytest]\n")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, check=False)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert done.stdout.count("[monitoring] PASSED") >= 6, done.stdout[-4000:]
    assert " failed" not in done.stdout and " skipped" not in done.stdout
