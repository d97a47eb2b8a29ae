# ruff: noqa: UP006, UP035, UP045  (this file runs in any Python >= 3.8 with pytest)
"""In the forked child: what each test executed under the root, and the affected-test filter.

Loaded by `worker.py` (the project's interpreter, standard library only, Python 3.8 syntax). The
`Recorder` pytest plugin

- skips what the server found unaffected: files whose tests are all unaffected are not even
  collected (`pytest_ignore_collect`), unaffected tests of other files are dropped from the items
  (not counted as deselected: `-k`/`-m` deselection stays pytest's own);
- records, per test (setup, call and teardown), the code objects that ran from files under the
  root, and per test module what ran while it was imported plus the project modules its globals
  refer to, with the tracers of `tracers.py` (`sys.monitoring` on 3.12+, cProfile's C profiler
  below); and the caller -> callee edges between project code and the leaves (a test that only
  hits a cache another test filled depends on what filled it). Code objects are mapped to (file, first line) once each,
  at the end of a test; absolute file names, so a test that changes the working directory or
  `sys.path` does not confuse the record. A test that replaces the tracer or profiler (a
  debugger, coverage) gets no record;
- sends it all as one `record` event after the session (never per test on the hot path).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

import pytest

OUTSIDE = frozenset({"site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox", "__pypackages__"})


def _load(name: str) -> Any:
    """`name.py` beside this file, loaded as this file is (a private name, not on `sys.path`)."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name + ".py")
    spec = importlib.util.spec_from_file_location("_mcp_code_tools_" + name, path)
    if spec is None or spec.loader is None:
        raise ImportError(name + ".py not found beside " + __file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TRACERS = _load("tracers")
STATE = _load("statedigest")


class Recorder:
    def __init__(self, root: str, send: Callable[[List[Dict[str, Any]]], None], options: Dict[str, Any]) -> None:
        self.root = os.path.abspath(root)
        self.prefix = self.root.rstrip(os.sep) + os.sep
        self._send = send
        self.record = bool(options.get("record"))
        self.skip_files = set(os.path.join(self.root, f) for f in options.get("skip_files", []))
        self.skip_nodeids = set(options.get("skip_nodeids", []))
        keep = [str(n) for n in options.get("keep", [])]
        self.keep_modules = {n.split("::")[0] for n in keep}
        """Modules (by node id) with unaffected tests: only `keep_prefixes` are collected in them."""
        self.keep_prefixes: Set[str] = set()
        for nodeid in keep:
            parts = nodeid.split("[")[0].split("::")
            self.keep_prefixes.update("::".join(parts[:i]) for i in range(2, len(parts) + 1))
        self.pruned: Set[str] = set()
        self.no_trace = set(options.get("no_trace", []))
        """Tests whose record is still valid: they run untraced (only their outcome is new)."""
        self.untraced: List[str] = []
        self._tracing = False
        self.files: List[str] = []
        self._file_index: Dict[str, Optional[int]] = {}
        self.tracer = TRACERS.make_tracer(self._root_test()) if self.record else None
        self._code_keys: Dict[Any, Optional[int]] = {}
        self._pairs: List[List[int]] = []
        self._pair_index: Dict[Any, int] = {}
        self.tests: Dict[str, List[int]] = {}
        self.lost: List[str] = []
        self.fixtures: Dict[str, Set[int]] = {}
        """Higher-scoped fixture name -> what its setups executed (shared by every test using it)."""
        self.uses: Dict[str, List[str]] = {}
        self.modules: Dict[str, List[int]] = {}
        self.refs: Dict[str, List[int]] = {}
        self.collected: Dict[str, List[str]] = {}
        self.selected: List[str] = []
        self.modules_now: List[List[Any]] = []
        self.ignored: List[str] = []
        self.unaffected = 0
        self._collecting: Optional[Any] = None
        self.shard = options.get("shard")
        self.shared_lost = False
        """The tracer was replaced while code every test depends on ran: no test has a record."""
        self._unseen_imports = False
        self._module_count = 0
        self.import_modules = [(str(n), str(r)) for n, r in options.get("import_modules", [])]
        """The project's modules (name, file) the last run imported by the end of collection: imported
        again before collection, in that order, and their state digested (`statedigest.py`)."""
        verify = options.get("verify")
        self.verify: Optional[Dict[str, Optional[str]]] = dict(verify) if isinstance(verify, dict) else None
        """The digests the skip lists rely on: the plan skipped tests that depend on a changed
        function only through the state the project's import left (an import-time call). If the
        state now differs (or cannot be compared), nothing is skipped."""
        self.digests: Optional[Dict[str, Optional[str]]] = None
        self.digests_at = ""
        """"import": taken before collection (the point every later run checks at); "collection":
        at its end (a run that knew of no module to import first)."""
        self.widened = False
        self.import_problems: List[str] = []
        self._startup_codes: Optional[Set[Any]] = None
        self._test_files: Set[str] = set()
        self._python_files: List[str] = []
        self.trace_collection = bool(options.get("trace_collection", True))
        """False when the server expects every test to run untraced (a full run, nothing changed):
        start-up and collection then run untraced too, and a test it did not expect (new) gets
        no record (it runs, and is recorded, next time)."""
        self._startup = self.tracer is not None and self.trace_collection
        if self.tracer is not None and self._startup:  # start-up: conftest files and what they import
            self.tracer.start(self.tracer.imports.shared)

    def pytest_configure(self, config: Any) -> None:
        try:
            self._python_files = [str(p) for p in config.getini("python_files")]
        except (ValueError, KeyError):
            self._python_files = ["test_*.py", "*_test.py"]
        shard = self.shard
        if isinstance(shard, dict) and int(shard.get("count", 1)) > 1:
            config.pluginmanager.register(ShardFilter(shard), "mcp-code-tools-shard")

    # --- where code lives ------------------------------------------------------------------------

    def _root_test(self) -> Callable[[Any], bool]:
        """`is_root(code)` for the tracers: whether it is project code (cached by file name)."""
        known: Dict[Any, bool] = {}
        find = self._file

        def is_root(code: Any) -> bool:
            filename = getattr(code, "co_filename", None)
            found = known.get(filename)
            if found is None:
                found = known[filename] = isinstance(filename, str) and find(filename) is not None
            return found

        return is_root

    def _file(self, filename: str) -> Optional[int]:
        index = self._file_index.get(filename, -1)
        if index != -1:
            return index
        found: Optional[int] = None
        path = filename if os.path.isabs(filename) else os.path.join(self.root, filename)
        path = os.path.normpath(path)
        if path.startswith(self.prefix) and path.endswith(".py"):
            rel = path[len(self.prefix) :]
            # A file, not a module inside an archive under the root (`res/pkg.zip/mod.py`, imported
            # by zipimport): the archive is one of the root's other files, which the selection
            # watches whole; a path with no file behind it would leave the test without a record.
            if not (set(rel.split(os.sep)) & OUTSIDE) and os.path.isfile(path):
                found = len(self.files)
                self.files.append(rel)
        self._file_index[filename] = found
        return found

    def _keys(self, codes: Set[Any]) -> List[int]:
        out: List[int] = []
        keys = self._code_keys
        for code in codes:
            key = keys.get(code, -1)
            if key == -1:
                key = None
                filename = code if isinstance(code, str) else getattr(code, "co_filename", None)
                index = self._file(filename) if isinstance(filename, str) else None
                if index is not None:  # a file name stands for its module's code (`tracers.member`)
                    line = 0 if isinstance(code, str) or code.co_name == "<module>" else code.co_firstlineno
                    pair = (index, line)
                    key = self._pair_index.get(pair)
                    if key is None:
                        key = self._pair_index[pair] = len(self._pairs)
                        self._pairs.append([index, line])
                keys[code] = key
            if key is not None:
                out.append(key)
        return out

    def _rel(self, path: Any) -> Optional[str]:
        full = os.path.normpath(str(path))
        return full[len(self.prefix) :] if full.startswith(self.prefix) else None

    # --- the project's import-time state ---------------------------------------------------------

    def _project_modules(self) -> Dict[str, Any]:
        """The project's imported modules (not test modules nor conftest files), by name, in
        `sys.modules` order (an import's parents first)."""
        import fnmatch

        found: Dict[str, Any] = {}
        for name, module in list(sys.modules.items()):
            filename = getattr(module, "__file__", None)
            if not isinstance(filename, str) or self._file(filename) is None:
                continue
            path = os.path.normpath(filename if os.path.isabs(filename) else os.path.join(self.root, filename))
            base = os.path.basename(path)
            if base == "conftest.py" or path in self._test_files or path in self.skip_files:
                continue
            if any(fnmatch.fnmatch(base, pattern) for pattern in self._python_files):
                continue
            found[name] = module
        return found

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection(self, session: Any) -> None:
        """Before any test module is imported: import the project's modules the last run had by
        the end of its collection (so their state is taken at the same point every run, whatever
        this run collects), digest what they hold, and compare with `verify`. A run that knows of
        no module takes its digests at the end of its collection instead (a test module that
        changes the project's state as it is imported then makes the next check fail: the
        tests run, never the other way round)."""
        if not (self.import_modules or self.verify is not None):
            return  # the first run: its digests are taken at the end of its collection
        files = dict(self.import_modules)
        for name in files:
            self._import(name, files)
        self.digests = STATE.module_digests(self._project_modules(), lambda f: self._file(f) is not None)
        self.digests_at = "import"
        if self.verify is not None and not self._same_state():
            self.widened = True
            self.skip_files = set()
            self.skip_nodeids = set()
            self.keep_modules = set()
            self.keep_prefixes = set()

    def _import(self, name: str, files: Dict[str, str]) -> bool:
        """Import `name` if it is still the file it was (its parents first: `sys.modules` order
        need not put them first, a package re-imported after a failed import comes after its
        submodules); False, and a problem noted, if not."""
        import importlib
        import importlib.util

        if name in sys.modules:
            return True
        if name in self.import_problems:
            return False
        parent = name.rpartition(".")[0]
        if parent and parent not in sys.modules and not (parent in files and self._import(parent, files)):
            self.import_problems.append(name)  # find_spec would import the parent: maybe another file
            return False
        try:
            spec = importlib.util.find_spec(name)
            origin = getattr(spec, "origin", None)
            if not isinstance(origin, str) or os.path.normpath(origin) != os.path.join(self.root, files[name]):
                self.import_problems.append(name)  # not that file under this name now
                return False
            importlib.import_module(name)
        except Exception:  # it fails again when a test module imports it: reported there
            self.import_problems.append(name)
            return False
        return True

    def _same_state(self) -> bool:
        now, then = self.digests or {}, self.verify or {}
        if self.import_problems or set(now) != set(then):
            return False
        return all(now[name] is not None and now[name] == then[name] for name in now)

    # --- collection ------------------------------------------------------------------------------

    def pytest_ignore_collect(self, collection_path: Any, config: Any) -> Optional[bool]:
        path = str(collection_path)
        if path in self.skip_files:
            rel = self._rel(path)
            if rel is not None:
                self.ignored.append(rel)
            return True
        return None

    def pytest_collectstart(self, collector: Any) -> None:
        if isinstance(collector, pytest.Module):
            self._test_files.add(os.path.normpath(str(collector.path)))
        if self.tracer is None or not self.trace_collection or self._collecting is not None:
            return
        if not isinstance(collector, pytest.Module):
            return
        self._collecting = collector
        imports = self.tracer.imports
        imports.expect = str(collector.path)
        self._retarget(imports.modules.setdefault(imports.expect, set()))

    def _retarget(self, seen: Set[Any]) -> None:
        """Charge what runs from now on (outside module imports) to `seen`."""
        if self.tracer is not None:
            if not self.tracer.intact():
                self.shared_lost = True
            self.tracer.start(seen)

    def pytest_collectreport(self, report: Any) -> None:
        collector = self._collecting
        if collector is None or report.nodeid != collector.nodeid or self.tracer is None:
            return
        self._collecting = None
        imports = self.tracer.imports
        intact = self.tracer.stop()
        seen = imports.modules.pop(str(collector.path), set())
        imports.expect = None
        self.tracer.start(imports.shared)
        rel = self._rel(collector.path)
        if rel is None:
            return
        if not intact:
            self.modules[rel] = [-1]
            return
        self.modules[rel] = self._keys(seen)
        module = getattr(collector, "_obj", None)
        self.refs[rel] = self._references(module) if module is not None else []

    def _references(self, module: Any) -> List[int]:
        """Project files whose objects the test module's globals hold (`from pkg import thing`)."""
        found: Set[int] = set()
        for value in list(vars(module).values()):
            filename = getattr(value, "__file__", None)
            if not isinstance(filename, str):
                owner = sys.modules.get(getattr(value, "__module__", None) or "")
                filename = getattr(owner, "__file__", None)
            if isinstance(filename, str):
                index = self._file(filename)
                if index is not None:
                    found.add(index)
        return sorted(found)

    @pytest.hookimpl(tryfirst=True)
    def pytest_pycollect_makeitem(self, collector: Any, name: str, obj: Any) -> Optional[List[Any]]:
        """In a module with unaffected tests, a class or function holding none of the tests that
        run is not collected at all (no items, no fixture resolution for its tests)."""
        if not self.keep_modules:
            return None
        nodeid = str(collector.nodeid)
        module = nodeid.split("::")[0]
        if module not in self.keep_modules or nodeid + "::" + name in self.keep_prefixes:
            return None
        self.pruned.add(module)
        return []

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_modifyitems(self, session: Any, config: Any, items: List[Any]) -> None:
        root = self.root
        for item in items:
            if item.nodeid.split("::")[0] in self.pruned:
                continue  # only part of it was collected: what it holds is known from last time
            rel = self._rel(getattr(item, "path", os.path.join(root, item.nodeid.split("::")[0])))
            if rel is not None:
                self.collected.setdefault(rel, []).append(item.nodeid)
        if self.skip_nodeids:
            kept = [item for item in items if item.nodeid not in self.skip_nodeids]
            present = set(item.nodeid for item in items)
            pruned = [n for n in self.skip_nodeids if n not in present and n.split("::")[0] in self.pruned]
            self.unaffected += len(items) - len(kept) + len(pruned)
            items[:] = kept

    def pytest_collection_finish(self, session: Any) -> None:
        self.selected = [item.nodeid for item in session.items]
        self._end_startup()
        modules = self._project_modules()
        self.modules_now = [[name, self._rel(m.__file__)] for name, m in modules.items()]
        if self.digests is None and self.record:  # nothing was known to import before collecting
            self.digests = STATE.module_digests(modules, lambda f: self._file(f) is not None)
            self.digests_at = "collection"

    def _end_startup(self) -> None:
        """Collection is over: stop the tracer that ran since start-up (once). What ran until now
        (start-up, the project's imports) is kept apart from what later imports run (a module a
        test imports lazily), whose state is not digested."""
        if self.tracer is not None and self._startup:
            self._startup = False
            if not self.tracer.stop():
                self.shared_lost = True
            self._startup_codes = set(self.tracer.imports.shared)

    # --- tests -----------------------------------------------------------------------------------

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Any:
        """A class/module/session fixture runs once for many tests: what its setup executes is
        recorded apart and added to every test that uses it (not only to the first one)."""
        tracer = self.tracer
        if tracer is None or not self.trace_collection or str(getattr(fixturedef, "scope", "function")) == "function":
            yield
            return
        if not self._tracing:  # an untraced test: its shared fixtures are still traced (others use them)
            tracer.begin()
            try:
                yield
            finally:
                seen, intact = tracer.end()
                keys = set(self._keys(seen)) if intact else {-1}
                self.fixtures.setdefault(str(fixturedef.argname), set()).update(keys)
            return
        paused = tracer.paused  # set up outside a phase (by a plugin's hook): traced all the same
        tracer.resume()
        saved = tracer.push()
        try:
            yield
        finally:
            inner, intact = tracer.pop(saved)
            if paused:
                tracer.pause()
            keys = set(self._keys(inner)) if intact else {-1}
            self.fixtures.setdefault(str(fixturedef.argname), set()).update(keys)

    # A test's window opens at its logstart and closes at its logfinish, but is traced only inside
    # its setup, call and teardown (innermost of the wrappers: capture, logging and the reports
    # run untraced). Project code runs inside those three; what a plugin or conftest runs around
    # them (conftest changes select every test anyway) is not charged to the test.

    def _phase(self) -> Any:
        tracer = self.tracer
        if tracer is None or not self._tracing:
            yield
            return
        tracer.resume()
        try:
            yield
        finally:
            tracer.pause()

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_setup(self, item: Any) -> Any:
        if self.tracer is not None:
            self.uses[item.nodeid] = list(getattr(item, "fixturenames", ()))
        yield from self._phase()

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_call(self, item: Any) -> Any:
        yield from self._phase()

    @pytest.hookimpl(hookwrapper=True, trylast=True)
    def pytest_runtest_teardown(self, item: Any, nextitem: Any) -> Any:
        yield from self._phase()

    def pytest_runtest_logstart(self, nodeid: str, location: Any) -> None:
        self._tracing = self.tracer is not None and self.trace_collection and nodeid not in self.no_trace
        if self._tracing:
            self.tracer.begin()  # type: ignore[union-attr]
            self.tracer.pause()  # type: ignore[union-attr]
        self._module_count = len(sys.modules)

    def pytest_runtest_logfinish(self, nodeid: str, location: Any) -> None:
        if self.tracer is None:
            return
        if not self._tracing:
            if nodeid not in self.no_trace:
                self.lost.append(nodeid)  # not expected by a run that traces nothing: no record
                return
            self.untraced.append(nodeid)
            if len(sys.modules) != self._module_count and not self._unseen_imports:
                self._unseen_imports = self._imported_project_code()
            return
        self._tracing = False
        seen, intact = self.tracer.end()
        if intact and not self._unseen_imports:
            self.tests[nodeid] = self._keys(seen)
        else:
            self.lost.append(nodeid)

    def _imported_project_code(self) -> bool:
        """Whether an untraced test imported a project module: what that import ran is unknown,
        so the tests after it, which may use the module, get no record (they run next time)."""
        count = len(sys.modules)
        if count < self._module_count:
            return True
        new = list(sys.modules.values())[self._module_count :]  # insertion order: the new ones
        return any(self._file(str(getattr(m, "__file__", None) or "")) is not None for m in new)

    def _edges(self) -> List[List[int]]:
        """The recorded caller -> callee pairs as (file, line) keys, one per distinct pair."""
        if self.tracer is None:
            return []
        found: Set[Tuple[int, int]] = set()
        keys = self._keys
        for caller, callee in self.tracer.edges:
            pair = keys({caller}) + keys({callee})
            if len(pair) == 2 and pair[0] != pair[1]:
                found.add((pair[0], pair[1]))
        return [list(pair) for pair in sorted(found)]

    def _startup_shared(self) -> Set[Any]:
        shared = self.tracer.imports.shared if self.tracer is not None else set()
        return shared if self._startup_codes is None else self._startup_codes

    def _lazy_shared(self) -> Set[Any]:
        if self.tracer is None or self._startup_codes is None:
            return set()
        shared: Set[Any] = self.tracer.imports.shared
        return shared - self._startup_codes

    def event(self) -> Dict[str, Any]:
        self._end_startup()  # collection failed (no collection_finish): the tracer still runs
        return {
            "e": "record",
            "tracer": self.tracer.name if self.tracer is not None else None,
            "files": self.files,
            "pairs": self._pairs,
            "tests": self.tests if self.record else {},
            "lost": self.lost,
            "untraced": self.untraced,
            "fixtures": {name: sorted(keys) for name, keys in self.fixtures.items()},
            "uses": {nodeid: [n for n in names if n in self.fixtures] for nodeid, names in self.uses.items()},
            "modules": self.modules,
            "shared": [-1] if self.shared_lost else self._keys(self._startup_shared()) if self.tracer else [],
            "lazy": self._keys(self._lazy_shared()) if self.tracer else [],
            "traced_startup": self.tracer is not None and self.trace_collection,
            "digests": self.digests,
            "digests_at": self.digests_at,
            "import_modules": self.modules_now,
            "widened": self.widened,
            "edges": self._edges(),
            "leaves": sorted(set(self._keys(self.tracer.leaves))) if self.tracer else [],
            "refs": self.refs,
            "collected": self.collected,
            "selected": self.selected,
            "ignored": self.ignored,
            "unaffected": self.unaffected,
        }


def assign_shards(nodeids: List[str], durations: Dict[str, float], count: int) -> List[int]:
    """Each test's shard: longest first to the least loaded shard (ties: the lower index), with
    the median recorded duration for tests never timed. Deterministic: every shard computes it
    from the same collected list and keeps its own part, in collection order."""
    known = sorted(float(durations[n]) for n in nodeids if n in durations)
    default = known[len(known) // 2] if known else 1.0
    weights = [max(float(durations.get(n, default)), 1e-4) for n in nodeids]
    order = sorted(range(len(nodeids)), key=lambda i: (-weights[i], i))
    loads = [0.0] * count
    owner = [0] * len(nodeids)
    for i in order:
        target = min(range(count), key=lambda k: (loads[k], k))
        owner[i] = target
        loads[target] += weights[i]
    return owner


class ShardFilter:
    """Keeps this shard's share of the tests, after every other selection (`-k`, `-m`, affected)."""

    def __init__(self, shard: Dict[str, Any]) -> None:
        self.index = int(shard.get("index", 0))
        self.count = int(shard.get("count", 1))
        self.durations: Dict[str, float] = dict(shard.get("durations") or {})
        self.done = set(shard.get("done") or ())
        """Tests of this share that a child before this one (it died) already ran."""

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, session: Any, config: Any, items: List[Any]) -> None:
        owner = assign_shards([item.nodeid for item in items], self.durations, self.count)
        items[:] = [item for i, item in enumerate(items) if owner[i] == self.index and item.nodeid not in self.done]


if int(str(pytest.__version__).split(".")[0]) < 7:  # no `collection_path` yet: modules are collected
    del Recorder.pytest_ignore_collect
