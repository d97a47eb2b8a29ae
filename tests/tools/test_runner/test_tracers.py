"""The recorder's tracers in this process (they normally run in the forked child, where coverage does
not see them): what a test window records (code objects, caller -> callee edges through other
files' code, leaves), what an import charges, fixture windows, threads, and a profiler or tracer
replaced while recording. The project is a temporary module loaded from a file under `root`.

Each test runs with the tracers this interpreter offers the recorder: cProfile's below 3.12,
`sys.monitoring` on 3.12+, and the settrace fallback. `tracers.py` is loaded from its file, so that
this module also runs in a bare 3.12+ venv with only pytest in it (test_tracers_py312.py)."""

from __future__ import annotations

import importlib.util
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

TRACERS = Path(__file__).resolve().parents[3] / "tools" / "test_runner" / "tracers.py"
MONITORING = hasattr(sys, "monitoring")
KINDS = ["monitoring" if MONITORING else "cprofile", "settrace"]
"""The recorder's tracer on this interpreter (`make_tracer`'s pick), and the fallback."""


def _load_tracers() -> Any:
    spec = importlib.util.spec_from_file_location("_mcp_code_tools_test_tracers", TRACERS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tracers = _load_tracers()

PROJECT = """
import json

_CACHE = {}


def compute(key):
    return {"key": key}


def lookup(key):
    if key not in _CACHE:
        _CACHE[key] = compute(key)
    return _CACHE[key]


def hook(obj):
    return obj


def decode(text):
    return json.loads(text, object_hook=hook)


def in_thread(out):
    out.append(compute("thread"))
"""

IMPORTED = """
def helper():
    return 1


VALUE = helper()
"""


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[ModuleType, Callable[[Any], bool], Path]]:
    root = tmp_path / "proj"
    root.mkdir()
    (root / "mod.py").write_text(PROJECT)
    (root / "imported.py").write_text(IMPORTED)
    prefix = str(root) + "/"

    def is_root(code: Any) -> bool:
        return isinstance(getattr(code, "co_filename", None), str) and code.co_filename.startswith(prefix)

    yield load(root / "mod.py", "mcp_tracer_test_mod"), is_root, root


@pytest.fixture
def restore_trace() -> Iterator[None]:
    """The settrace tracer replaces coverage's own tracer: put it back afterwards; and the
    `sys.monitoring` tool ids a test took are given back."""
    trace, thread_trace = sys.gettrace(), threading.gettrace()
    profile = sys.getprofile()
    try:
        yield
    finally:
        sys.settrace(trace)
        threading.settrace(thread_trace)  # type: ignore[arg-type]
        sys.setprofile(profile)
        if MONITORING:
            for tool in tracers.TOOL_IDS:
                if sys.monitoring.get_tool(tool) is not None:  # type: ignore[attr-defined]
                    sys.monitoring.set_events(tool, 0)  # type: ignore[attr-defined]
                    sys.monitoring.free_tool_id(tool)  # type: ignore[attr-defined]


def names(codes: Any) -> set[str]:
    return {c.co_name for c in codes if not isinstance(c, str)}


def edge_names(edges: Any) -> set[tuple[str, str]]:
    return {(a.co_name, b.co_name) for a, b in edges}


def make(kind: str, is_root: Callable[[Any], bool]) -> Any:
    if kind == "monitoring":
        tracer = tracers.make_tracer(is_root)
        assert tracer.name == "monitoring"
        return tracer
    if kind == "cprofile":
        import _lsprof

        return tracers._Profile(is_root, _lsprof)
    return tracers._SetTrace(is_root)


def replace_tracer(kind: str, tracer: Any) -> None:
    """What a test that profiles itself, a debugger or coverage does to the recorder's tracer."""
    if kind == "monitoring":  # another tool took its id (coverage and debuggers have their own)
        sys.monitoring.free_tool_id(tracer.tool)  # type: ignore[attr-defined]
        sys.monitoring.use_tool_id(tracer.tool, "another tool")  # type: ignore[attr-defined]
    elif kind == "cprofile":
        sys.setprofile(None)
    else:
        sys.settrace(None)


@pytest.mark.parametrize("kind", KINDS)
def test_a_test_window_records_functions_edges_and_leaves(
    project: tuple[ModuleType, Callable[[Any], bool], Path], kind: str, restore_trace: None
) -> None:
    mod, is_root, _ = project
    tracer = make(kind, is_root)
    tracer.begin()
    mod.lookup("a")  # fills the cache: lookup -> compute
    mod.decode('{"x": 1}')  # decode -> hook, through json's own Python code
    seen, intact = tracer.end()
    assert intact
    assert {"lookup", "compute", "decode", "hook"} <= names(seen)
    assert {("lookup", "compute"), ("decode", "hook")} <= edge_names(tracer.edges)

    tracer.begin()
    mod.lookup("a")  # a cache hit: lookup calls no project code
    seen, intact = tracer.end()
    assert intact and names(seen) >= {"lookup"} and "compute" not in names(seen)
    assert "lookup" in names(tracer.leaves)
    if kind != "settrace":  # they know the callees: a function that called one is no leaf
        assert "decode" not in names(tracer.leaves)


@pytest.mark.parametrize("kind", KINDS)
def test_a_fixture_window_inside_a_test_is_recorded_apart_and_added(
    project: tuple[ModuleType, Callable[[Any], bool], Path], kind: str, restore_trace: None
) -> None:
    mod, is_root, _ = project
    tracer = make(kind, is_root)
    tracer.begin()
    mod.hook(1)
    saved = tracer.push()
    mod.compute("fixture")
    inner, intact = tracer.pop(saved)
    assert intact and "compute" in names(inner) and "hook" not in names(inner)
    mod.decode("[]")
    seen, intact = tracer.end()
    assert intact and {"hook", "compute", "decode"} <= names(seen)


@pytest.mark.parametrize("kind", KINDS)
def test_a_replaced_profiler_or_tracer_makes_the_record_incomplete(
    project: tuple[ModuleType, Callable[[Any], bool], Path], kind: str, restore_trace: None
) -> None:
    mod, is_root, _ = project
    tracer = make(kind, is_root)
    tracer.begin()
    mod.compute("x")
    replace_tracer(kind, tracer)
    mod.compute("y")
    _, intact = tracer.end()
    assert not intact


@pytest.mark.parametrize("kind", KINDS)
def test_a_paused_window_records_only_what_ran_while_resumed(
    project: tuple[ModuleType, Callable[[Any], bool], Path], kind: str, restore_trace: None
) -> None:
    """The recorder pauses a test's window between its phases (pytest's reports, capture):
    what runs then is not the test's; a fixture set up while paused is recorded all the same."""
    mod, is_root, _ = project
    tracer = make(kind, is_root)
    tracer.begin()
    tracer.pause()
    mod.hook(1)  # a report's repr, between phases
    tracer.resume()
    mod.lookup("paused")  # the call phase
    tracer.pause()
    tracer.pause()  # idempotent
    tracer.resume()
    saved = tracer.push()  # a higher-scoped fixture (the recorder resumes first)
    mod.decode("[]")
    inner, intact = tracer.pop(saved)
    tracer.pause()
    assert intact and "decode" in names(inner)
    seen, intact = tracer.end()
    assert intact
    assert {"lookup", "compute", "decode"} <= names(seen) and "hook" not in names(seen)
    assert ("lookup", "compute") in edge_names(tracer.edges)

    tracer.begin()  # the next test: the same code is recorded again
    tracer.pause()
    tracer.resume()
    mod.lookup("paused")
    tracer.pause()
    seen, intact = tracer.end()
    assert intact and "lookup" in names(seen)


@pytest.mark.parametrize("kind", KINDS)
def test_a_profiler_or_tracer_replaced_before_a_pause_makes_the_record_incomplete(
    project: tuple[ModuleType, Callable[[Any], bool], Path], kind: str, restore_trace: None
) -> None:
    mod, is_root, _ = project
    tracer = make(kind, is_root)
    tracer.begin()
    tracer.pause()
    tracer.resume()
    mod.compute("x")
    replace_tracer(kind, tracer)
    mod.compute("y")
    tracer.pause()
    tracer.resume()
    tracer.pause()
    _, intact = tracer.end()
    assert not intact
    tracer.begin()  # the next test starts whole again; with sys.monitoring, the id is another
    tracer.pause()  # tool's now, and every later record stays incomplete (wider, never narrower)
    _, intact = tracer.end()
    assert intact == (kind != "monitoring")


def test_code_run_in_another_thread_is_recorded(
    project: tuple[ModuleType, Callable[[Any], bool], Path], restore_trace: None
) -> None:
    mod, is_root, _ = project
    tracer = make(KINDS[0], is_root)
    tracer.begin()
    out: list[Any] = []
    thread = threading.Thread(target=mod.in_thread, args=(out,))
    thread.start()
    thread.join(10)
    seen, intact = tracer.end()
    assert intact and out and {"in_thread", "compute"} <= names(seen)


@pytest.mark.parametrize("kind", KINDS)
def test_an_import_charges_shared_with_what_it_ran(
    project: tuple[ModuleType, Callable[[Any], bool], Path], kind: str, restore_trace: None
) -> None:
    _, is_root, root = project
    tracer = make(kind, is_root)
    shared = tracer.imports.shared
    tracer.start(shared)
    load(root / "imported.py", "mcp_tracer_test_imported")
    assert tracer.stop()
    # the module's own code (by file name: two empty __init__.py files are not one) and what it ran
    assert str(root / "imported.py") in shared or any(
        getattr(c, "co_filename", None) == str(root / "imported.py") and c.co_name == "<module>" for c in shared
    )
    assert "helper" in names(shared)


def test_make_tracer_picks_the_cheapest_available(project: tuple[ModuleType, Callable[[Any], bool], Path]) -> None:
    _, is_root, _ = project
    tracer = tracers.make_tracer(is_root)
    expected = "monitoring" if hasattr(sys, "monitoring") else "cprofile"
    assert tracer.name == expected
    if expected == "monitoring":
        tracer.stop()
        sys.monitoring.free_tool_id(tracer.tool)  # type: ignore[attr-defined]
