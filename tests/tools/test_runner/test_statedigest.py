"""The digest of a module's state after its import (`statedigest.py`), in process: equal for the
same state, different for any change a test could observe, None when it cannot be compared."""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tools.test_runner.statedigest import Digest, module_digests


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Callable[[str], types.ModuleType]]:
    """Imports a source text as a fresh module whose file is under `tmp_path` (the project): the
    same name every time, as the same module imported again in the next run."""
    names: list[str] = []

    def load_(source: str, name: str = "_digest_case") -> types.ModuleType:
        path = tmp_path / f"{name}.py"
        path.write_text(source)
        module = types.ModuleType(name)
        module.__file__ = str(path)
        sys.modules[name] = module
        names.append(name)
        exec(compile(source, str(path), "exec"), module.__dict__)
        return module

    yield load_
    for name in names:
        sys.modules.pop(name, None)


def digest_of(module: types.ModuleType, tmp_path: Path) -> str | None:
    return Digest(lambda f: f.startswith(str(tmp_path))).module(module)


WEEKDAY = """
import threading, weakref, functools, datetime, re
from collections import OrderedDict

class weekday:
    __slots__ = ("weekday", "n")
    def __init__(self, weekday, n=None):
        {init}
        self.weekday = weekday
        self.n = n

MO, TU = weekday(0), weekday(1)
CACHE = OrderedDict()
LOCK = threading.Lock()
REFS = weakref.WeakValueDictionary()
ZERO = datetime.timedelta(0)
PATTERN = re.compile("[a-z]+", re.I)
KINDS = {{"a", "b", "c"}}

def deprecated(f):
    msg = "{message}"
    @functools.wraps(f)
    def wrapper(*a):
        return f(*a) if msg else None
    return wrapper

@deprecated
def private(x):
    return x

class Node:
    def __init__(self):
        self.me = self
        self.items = [self]

ROOT = Node()
REFS["root"] = ROOT
"""


def test_same_state_same_digest(load: Callable[[str], types.ModuleType], tmp_path: Path) -> None:
    base = digest_of(load(WEEKDAY.format(init="pass", message="private")), tmp_path)
    assert base is not None
    # A statement added to a function that ran at import (the benchmark's edit): the same state.
    edited = digest_of(load(WEEKDAY.format(init="_bench_edit = None", message="private")), tmp_path)
    assert edited == base


@pytest.mark.parametrize(
    ("init", "message"),
    [
        ("n = n if n is not None else 0", "private"),  # weekday(0).n: None -> 0
        ("weekday = weekday + 0.0", "private"),  # 0 -> 0.0: equal, but not the same value
        ("pass", "private!"),  # a closure cell of the decorator
    ],
)
def test_any_observable_change_changes_the_digest(
    load: Callable[[str], types.ModuleType], tmp_path: Path, init: str, message: str
) -> None:
    base = digest_of(load(WEEKDAY.format(init="pass", message="private")), tmp_path)
    assert digest_of(load(WEEKDAY.format(init=init, message=message)), tmp_path) != base


def test_generated_code_is_state(load: Callable[[str], types.ModuleType], tmp_path: Path) -> None:
    """Code compiled from text at import (attrs' generated methods) has no block: its code counts."""
    template = 'def make(k):\n    ns = {{}}\n    exec("def add(x):\\n    return x + " + str(k) + "{extra}", ns)\n'
    template += "    return ns['add']\n\nADD3 = make(3)\n"
    one = digest_of(load(template.format(extra="")), tmp_path)
    assert one == digest_of(load(template.format(extra="")), tmp_path)
    assert one != digest_of(load(template.format(extra=" + 0")), tmp_path)


def test_unknown_state_is_none(load: Callable[[str], types.ModuleType], tmp_path: Path) -> None:
    generator = load("GEN = (i for i in range(3))\n")
    assert digest_of(generator, tmp_path) is None
    cached = load("import functools\n@functools.lru_cache\ndef f(x):\n    return x\nf(1)\n")
    assert digest_of(cached, tmp_path) is None  # its results cannot be read
    empty = load("import functools\n@functools.lru_cache\ndef f(x):\n    return x\n")
    assert digest_of(empty, tmp_path) is not None


def test_digests_do_not_depend_on_ids_or_hash_order(tmp_path: Path) -> None:
    """Two interpreters (different hash seeds, addresses) digest the same module alike."""
    import subprocess

    (tmp_path / "case.py").write_text(WEEKDAY.format(init="pass", message="private"))
    source = Path(__file__).parents[3] / "tools/test_runner/statedigest.py"
    script = (
        "import sys, importlib.util as u\n"
        f"sys.path.insert(0, {str(tmp_path)!r})\n"
        f"spec = u.spec_from_file_location('sd', {str(source)!r})\n"
        "sd = u.module_from_spec(spec); spec.loader.exec_module(sd)\n"
        "import case\n"
        f"print(sd.module_digests({{'case': case}}, lambda f: f.startswith({str(tmp_path)!r}))['case'])\n"
    )
    found = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True, env={"PYTHONHASHSEED": seed}
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(found) == 1 and "None" not in found.pop()


def test_module_digests_names_each_module(load: Callable[[str], types.ModuleType], tmp_path: Path) -> None:
    a, b = load("X = 1\n", "_digest_a"), load("import os\nY = [os]\n", "_digest_b")
    digests = module_digests({"a": a, "b": b}, lambda f: f.startswith(str(tmp_path)))
    assert set(digests) == {"a", "b"} and all(digests.values()) and digests["a"] != digests["b"]
