# ruff: noqa: UP006, UP035, UP045  (this file runs in any Python >= 3.8 with pytest)
"""In the forked child: the tracers `recorder.py` records with (standard library only, 3.8 syntax).

Every tracer collects code objects into a current set (`seen`) and caller -> callee pairs between
project code objects into `edges` (one set for the whole run: a test that only hits a cache
depends on what an earlier test's call filled it with). Two kinds of window:

- `start(seen)` / `stop()`: start-up and collection; what a module's import runs is charged to
  that module (the test module being collected) or to `shared` (`_Imports`);
- `begin()` / `end()`: a test (setup, call, teardown) or a higher-scoped fixture's setup, with
  `push`/`pop` for a fixture set up inside a test; `leaves` gets the project code objects that
  called no project code in the test (a cache lookup that hit). `pause()` / `resume()` inside a
  test's window: pytest's own work between its phases (reports, capture, logging: about half of
  a fast test's time) runs untraced; a replaced tracer seen at a pause still makes the test's
  record incomplete.

On < 3.12, `_Profile`: cProfile's C profiler (`_lsprof`, builtins off, subcalls on) for both,
about half the cost of a `sys.settrace` call hook per call. Its statistics give each function's
callees: edges between project code, also through other files' code (e.g.
`functools.cached_property.__get__`, `json.loads` calling an `object_hook`), never through hubs
(pytest, pluggy, importlib); and what each `<module>` reached, charged to its import's set (a
function reached both from an import and otherwise is charged to both: wider, never narrower).
`_SetTrace` (a call hook returning None, with a frame stack for imports and `frame.f_back` for
edges) is the fallback without `_lsprof`; it counts every project code object as a leaf.

On 3.12+, `_Monitoring`: `sys.monitoring` on a tool id of its own (cProfile's is taken by
cProfile there, which a test may use itself). Code outside the project is reported once per
window, then disabled; project code at every call, with its nearest project caller: its edges are
every caller -> callee pair, as cProfile's statistics give them (only each code object's first
caller per test missed the edge from a cache lookup to a filler the test had called itself
before, and a later test that only hit that cache was not selected when the filler changed), and
its leaves the project code objects that called no project code in a test. That costs about what
cProfile costs below 3.12: python-dateutil's whole suite recorded took ~1.6-1.9x the CPU of an
untraced run, against ~1.3x with first callers only.

Other threads are covered by `threading.settrace`/`setprofile` (code objects, no edges). A
tracer or profiler replaced while recording (a debugger, coverage) makes the record incomplete
(`intact()`).
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

TOOL_IDS = (4, 3, 5)  # sys.monitoring tool ids to try (1 is coverage's, 0 the debugger's)
HUBS = (os.sep + "_pytest" + os.sep, os.sep + "pluggy" + os.sep, "<frozen importlib")
"""Code that calls everything (hooks, fixtures, imports): an edge is not drawn through it (pytest
caches fixtures by scope, which the recorder handles apart; imports charge `shared`)."""
MAX_WALK = 40
Edge = Tuple[Any, Any]
IsRoot = Callable[[Any], bool]


class _Imports:
    """Where code runs while a module is being imported: a stack of target sets.

    A test module's own `<module>` frame (the one being collected, `expect`) charges what runs
    inside it to that module (its tests depend on it); any other `.py` module's import (conftest,
    a helper or library module, at collection or lazily during a test) charges `shared`, which
    every test depends on: a module imported once is found in `sys.modules` by every later
    importer, which then depends on its import-time execution without re-running it.
    """

    def __init__(self) -> None:
        self.stack: List[Set[Any]] = []
        self.markers: List[Any] = []
        self.shared: Set[Any] = set()
        self.expect: Optional[str] = None
        self.modules: Dict[str, Set[Any]] = {}

    def enter(self, code: Any, marker: Any) -> bool:
        """A `<module>` code object starts: push the set its import charges, with `marker` (what
        identifies its frame); False if it is not an import (exec'd text)."""
        into = self.target(code)
        if into is None:
            return False
        into.add(code.co_filename)  # a module by its file (see `member`)
        self.stack.append(into)
        self.markers.append(marker)
        return True

    def leave(self, marker: Any) -> None:
        """The frame `marker` stands for has ended: drop its entry (normally the last one)."""
        markers = self.markers
        for i in range(len(markers) - 1, -1, -1):
            if markers[i] is marker:
                del markers[i], self.stack[i]
                return

    def clear(self) -> None:
        del self.stack[:], self.markers[:]

    def target(self, code: Any) -> Optional[Set[Any]]:
        """The set a `<module>` code object's frame charges, or None (exec'd text, not an import)."""
        filename = code.co_filename
        if filename == self.expect:
            return self.modules.setdefault(filename, set())
        if isinstance(filename, str) and filename.endswith(".py"):
            return self.shared
        return None


def member(code: Any) -> Any:
    """What stands for a code object in the sets: itself, or its file name for a module's code.
    Code objects compare equal across files (CPython leaves `co_filename` out of `==`): the
    `<module>` code of two empty `__init__.py` files is one set member, and the second package's
    import would be lost. Functions collide only with the same name, first line and code."""
    return code.co_filename if code.co_name == "<module>" else code


def _calls(entries: List[Any]) -> Dict[Any, List[Any]]:
    """Code object -> its callees' sub-entries (equal code objects of two files: both lists)."""
    callees: Dict[Any, List[Any]] = {}
    for entry in entries:
        if entry.calls:
            callees.setdefault(entry.code, []).extend(entry.calls)
    return callees


def _is_hub(code: Any) -> bool:
    filename = getattr(code, "co_filename", "")
    return any(hub in filename for hub in HUBS)


def _caller(frame: Any, is_root: IsRoot) -> Any:
    """The nearest project code object up the stack from `frame` (exclusive), or None when a
    hub or the stack's top comes first."""
    back = frame.f_back
    for _ in range(MAX_WALK):
        if back is None:
            return None
        code = back.f_code
        if is_root(code):
            return code
        if _is_hub(code):
            return None
        back = back.f_back
    return None


class _SetTrace:
    name = "settrace"

    def __init__(self, is_root: IsRoot) -> None:
        self.seen: Set[Any] = set()
        self.edges: Set[Edge] = set()
        self.leaves: Set[Any] = set()
        self.imports = _Imports()
        self.tracer: Optional[Callable[..., Any]] = None
        self.thread_tracer: Optional[Callable[..., Any]] = None
        self.is_root = is_root
        self.paused = False
        self.broken = False

    def _install(self, seen: Set[Any]) -> None:
        add = seen.add
        imports = self.imports
        stack = imports.stack
        enter = imports.enter
        leave = imports.leave
        is_root = self.is_root
        add_edge = self.edges.add

        def local(frame: Any, event: str, arg: Any) -> Any:
            if event == "return":
                leave(frame)
            return local

        def tracer(frame: Any, event: str, arg: Any) -> Any:
            code = frame.f_code
            if code.co_name == "<module>" and enter(code, frame):
                frame.f_trace_lines = False
                return local
            if stack:
                stack[-1].add(code)
            else:
                add(code)
            if is_root(code):
                caller = _caller(frame, is_root)
                if caller is not None and caller is not code and caller.co_name != "<module>":
                    add_edge((caller, code))
            return None

        def in_thread(frame: Any, event: str, arg: Any) -> None:
            add(frame.f_code)  # other threads: to the current set (the module stack is the main thread's)

        self.tracer = tracer
        self.thread_tracer = in_thread
        self.seen = seen
        self.paused = False
        sys.settrace(tracer)
        threading.settrace(in_thread)

    def pause(self) -> None:
        if not self.paused and self.tracer is not None:
            self.broken = self.broken or sys.gettrace() is not self.tracer
            sys.settrace(None)
            threading.settrace(None)  # type: ignore[arg-type]
            self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            sys.settrace(self.tracer)
            threading.settrace(self.thread_tracer)  # type: ignore[arg-type]

    def start(self, seen: Optional[Set[Any]] = None) -> Set[Any]:
        self._install(set() if seen is None else seen)
        return self.seen

    def push(self) -> Set[Any]:
        """Record into a fresh set (a fixture's setup) until `pop`; returns the current one."""
        saved = self.seen
        self._install(set())
        return saved

    def pop(self, saved: Set[Any]) -> Tuple[Set[Any], bool]:
        """Back to `saved`, which gets what ran since `push` too; returns that and whether intact."""
        inner = self.seen
        intact = self.intact()
        saved |= inner
        self._install(saved)
        return inner, intact

    def intact(self) -> bool:
        return self.paused or sys.gettrace() is self.tracer

    def stop(self) -> bool:
        """Stop; False if someone replaced our tracer meanwhile (the record is not complete)."""
        intact = self.intact()
        self.paused = False
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
        self.imports.clear()
        return intact

    def begin(self) -> None:
        self.broken = False
        self.start()

    def end(self) -> Tuple[Set[Any], bool]:
        seen = self.seen
        intact = self.stop() and not self.broken  # first: `is_root` is Python code, traced while on
        is_root = self.is_root
        self.leaves.update(code for code in seen if is_root(code))  # no callees known: all count
        return seen, intact


def contract(entries: List[Any], is_root: IsRoot, edges: Set[Edge], leaves: Set[Any]) -> None:
    """Add to `edges` the caller -> callee pairs between project code objects in one profile's
    statistics (`_lsprof` entries: `.code`, `.calls` with their `.code`), through the code of
    other files in between (not through hubs); to `leaves` the project code objects that called
    no project code (`<module>` code aside: what it runs is charged to `shared`, see `imported`)."""
    callees: Optional[Dict[Any, Any]] = None
    add = edges.add
    for entry in entries:
        code = entry.code
        if not is_root(code) or code.co_name == "<module>":
            continue
        found = False
        todo: List[Any] = []
        for sub in entry.calls or ():
            callee = sub.code
            if is_root(callee):
                if callee.co_name != "<module>":
                    found = True
                    if callee is not code:
                        add((code, callee))
            elif not isinstance(callee, str) and not _is_hub(callee):
                todo.append(callee)
        if todo:
            if callees is None:
                callees = _calls(entries)
            visited: Set[Any] = set(todo)
            while todo:
                for sub in callees.get(todo.pop()) or ():
                    callee = sub.code
                    if callee in visited or isinstance(callee, str):
                        continue
                    visited.add(callee)
                    if is_root(callee):
                        if callee.co_name != "<module>":
                            found = True
                            if callee is not code:
                                add((code, callee))
                    elif not _is_hub(callee):
                        todo.append(callee)
        if not found and not code.co_name.startswith("<"):  # a comprehension or lambda: its function's block
            leaves.add(code)


def _closure(starts: List[Any], callees: Dict[Any, Any], is_root: IsRoot, into: Set[Any]) -> None:
    """The project code reachable from `starts` in the statistics (any code in between)."""
    into.update(member(code) for code in starts if is_root(code))
    todo = list(starts)
    visited: Set[Any] = set(todo)
    while todo:
        code = todo.pop()
        if is_root(code):
            into.add(member(code))
        for sub in callees.get(code) or ():
            callee = sub.code
            if callee not in visited and not isinstance(callee, str):
                visited.add(callee)
                todo.append(callee)


def imported(entries: List[Any], imports: _Imports, is_root: IsRoot) -> None:
    """What the `<module>` code in the statistics ran (everything reachable from it, the import
    machinery included), charged as `_Imports.target` says: the test module being collected to
    its own set, any other `.py` module to `shared`."""
    starts: Dict[int, List[Any]] = {}
    for entry in entries:
        code = entry.code
        if getattr(code, "co_name", "") == "<module>":
            into = imports.target(code)
            if into is not None:
                starts.setdefault(id(into), [into]).append(code)
    if not starts:
        return
    callees = _calls(entries)
    for into, *codes in starts.values():
        _closure(codes, callees, is_root, into)


class _Profile:
    """cProfile's C profiler (`_lsprof`) for start-up, collection and tests: what ran in each
    window (since `start`/`begin`) goes to the window's set when it ends, what `<module>` code
    ran to its import's set (`imported`), edges and leaves from the statistics (`contract`)."""

    name = "cprofile"

    def __init__(self, is_root: IsRoot, lsprof: Any) -> None:
        self.is_root = is_root
        self.profiler = lsprof.Profiler(builtins=False, subcalls=True)
        self.seen: Set[Any] = set()
        self.edges: Set[Edge] = set()
        self.leaves: Set[Any] = set()
        self.imports = _Imports()
        self.thread_seen: Set[Any] = set()
        self.running = False
        self.paused = False
        self.broken = False
        """The profiler was replaced during this test (seen when a fixture's setup began, or at a
        pause)."""

    def _in_thread(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            self.thread_seen.add(frame.f_code)

    def _enable(self) -> None:
        self.running = True
        threading.setprofile(self._in_thread)
        self.profiler.enable()

    def _harvest(self, into: Set[Any], test: bool) -> bool:
        """Stop profiling; what ran since `enable` goes into `into` (and `<module>` code into its
        import's set); whether we were still the profiler."""
        profiler = self.profiler
        intact = self.paused or sys.getprofile() is profiler
        profiler.disable()
        threading.setprofile(None)  # type: ignore[arg-type]
        self.running = False
        self.paused = False
        entries = profiler.getstats()
        profiler.clear()
        is_root = self.is_root
        into.update(member(code) for code in (e.code for e in entries) if is_root(code))
        into.update(member(code) for code in self.thread_seen if is_root(code))
        self.thread_seen = set()
        contract(entries, is_root, self.edges, self.leaves if test else set())
        imported(entries, self.imports, is_root)
        return intact

    # start-up and collection

    def start(self, seen: Optional[Set[Any]] = None) -> Set[Any]:
        """Record into `seen` (a new set if None) from now on; what ran since the last start
        goes to that start's set first."""
        if self.running:
            self._harvest(self.seen, False)
        self.seen = set() if seen is None else seen
        self._enable()
        return self.seen

    def intact(self) -> bool:
        return self.paused or sys.getprofile() is self.profiler

    def stop(self) -> bool:
        intact = self._harvest(self.seen, False) if self.running else False
        return intact

    def pause(self) -> None:
        if self.running and not self.paused:
            self.broken = self.broken or sys.getprofile() is not self.profiler
            self.profiler.disable()  # its statistics stay: `resume` adds to them
            threading.setprofile(None)  # type: ignore[arg-type]
            self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            threading.setprofile(self._in_thread)
            self.profiler.enable()

    # tests

    def begin(self) -> None:
        self.broken = False
        self.start()

    def end(self) -> Tuple[Set[Any], bool]:
        seen = self.seen
        intact = self._harvest(seen, True) and not self.broken
        return seen, intact

    def push(self) -> Set[Any]:
        saved = self.seen
        if not self._harvest(saved, True):
            self.broken = True  # the test's record is incomplete
        self.seen = set()
        self._enable()
        return saved

    def pop(self, saved: Set[Any]) -> Tuple[Set[Any], bool]:
        inner = self.seen
        intact = self._harvest(inner, True)
        self.broken = self.broken or not intact
        saved |= inner
        self.seen = saved
        self._enable()
        return inner, intact


class _Monitoring:
    name = "monitoring"

    def __init__(self, tool: int, is_root: IsRoot) -> None:
        self.mon = sys.monitoring  # type: ignore[attr-defined]
        self.tool = tool
        self.seen: Set[Any] = set()
        self.edges: Set[Edge] = set()
        self.leaves: Set[Any] = set()
        self.callers: Set[Any] = set()
        """This test's code objects that called project code (not leaves)."""
        self.is_root = is_root
        self.paused = False
        self.broken = False
        self.imports = _Imports()
        events = self.mon.events
        disable = self.mon.DISABLE
        imports = self.imports
        stack = imports.stack
        add_edge = self.edges.add
        add_caller = self.callers.add
        getframe = sys._getframe
        self.events = events.PY_START | events.PY_UNWIND  # PY_UNWIND cannot be a local event

        def on_start(code: Any, offset: int) -> Any:
            if code.co_name == "<module>" and imports.enter(code, code):
                self.mon.set_local_events(tool, code, events.PY_RETURN)
                return None
            (stack[-1] if stack else self.seen).add(code)
            if not is_root(code):
                return disable  # other code: reported once per window
            # Project code: every call, for every caller (a cache lookup calls its filler after
            # the test itself called it first, and that edge is the one a later cache hit needs).
            frame = getframe(1)
            back = frame.f_back
            caller = back.f_code if back is not None else None
            if caller is None or not is_root(caller):
                caller = _caller(frame, is_root)
            if caller is not None and caller.co_name != "<module>":
                add_caller(caller)
                if caller is not code:
                    add_edge((caller, code))
            return None

        def on_end(code: Any, offset: int, value: Any) -> Any:
            if code.co_name == "<module>":
                imports.leave(code)
            return None

        self.mon.register_callback(tool, events.PY_START, on_start)
        self.mon.register_callback(tool, events.PY_RETURN, on_end)
        self.mon.register_callback(tool, events.PY_UNWIND, on_end)

    def start(self, seen: Optional[Set[Any]] = None) -> Set[Any]:
        self.seen = set() if seen is None else seen
        self.paused = False
        self.mon.set_events(self.tool, self.events)
        self.mon.restart_events()  # each code object is reported again, once, into the new set
        return self.seen

    def pause(self) -> None:
        if not self.paused:
            if self.intact():
                self.mon.set_events(self.tool, 0)
            else:
                self.broken = True
            self.paused = True

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if self.intact():
                self.mon.set_events(self.tool, self.events)  # no restart: what was seen stays disabled

    def push(self) -> Set[Any]:
        saved = self.seen
        self.seen = set()
        self.mon.restart_events()  # what ran before in this test is reported again
        return saved

    def pop(self, saved: Set[Any]) -> Tuple[Set[Any], bool]:
        inner = self.seen
        saved |= inner
        self.seen = saved
        return inner, self.intact()

    def intact(self) -> bool:
        return bool(self.mon.get_tool(self.tool) == "mcp-code-tools")

    def stop(self) -> bool:
        intact = self.intact()
        self.paused = False
        if intact:
            self.mon.set_events(self.tool, 0)
        self.imports.clear()
        return intact

    def begin(self) -> None:
        self.callers.clear()
        self.broken = False
        self.start()

    def end(self) -> Tuple[Set[Any], bool]:
        seen = self.seen
        intact = self.stop() and not self.broken  # first: the comprehension below is Python code
        is_root = self.is_root
        callers = self.callers
        self.leaves.update(c for c in list(seen) if c not in callers and c.co_name != "<module>" and is_root(c))
        return seen, intact


def make_tracer(is_root: IsRoot) -> Any:
    """`is_root(code)`: whether a code object is project code (cached by the caller: it is asked
    on every call of project code while collecting)."""
    mon = getattr(sys, "monitoring", None)
    if mon is not None:
        for tool in TOOL_IDS:
            try:
                if mon.get_tool(tool) is None:
                    mon.use_tool_id(tool, "mcp-code-tools")
                    return _Monitoring(tool, is_root)
            except Exception:
                continue
    try:
        import _lsprof
    except ImportError:
        return _SetTrace(is_root)
    return _Profile(is_root, _lsprof)
