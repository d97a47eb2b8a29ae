"""State cached by one test for later ones: the recorder's caller -> callee edges select the later
tests too when what filled the cache is edited, and only where a cache can be (a temporary
project recorded by a full run, then edited); and the pure parts (reachability in the plan,
contracting profiler statistics, which functions keep state)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project
from tests.tools.test_runner.test_affected import edit, plan, run
from tools.test_runner.selection.blocks import parse_blocks
from tools.test_runner.selection.plan import cache_points, pack_edge, reaching
from tools.test_runner.tracers import contract

CACHE = """
import functools
import json

_TABLE = {}
_DECODED = {}


def build(name):
    return {"name": name, "offset": 1}


def lookup(name):
    if name not in _TABLE:
        _TABLE[name] = build(name)
    return _TABLE[name]


def parse(spec):
    return int(spec) + 0


class _Factory(type):
    instances = {}

    def __call__(cls, spec):
        if spec not in cls.instances:
            cls.instances[spec] = super().__call__(spec)
        return cls.instances[spec]


class Zone(metaclass=_Factory):
    def __init__(self, spec):
        self.hours = parse(spec)


def hook(obj):
    obj["scale"] = 2
    return obj


def decoded(text):
    if text not in _DECODED:
        _DECODED[text] = json.loads(text, object_hook=hook)  # through the json module's Python code
    return _DECODED[text]


def unrelated():
    return 0


def square(n):
    return n * n


@functools.lru_cache(maxsize=None)
def cached_square(n):
    return square(n)


def compute(n):
    return cached_square(n) + 0


def step(n):
    return n + 1


def walk(n):
    if n > 0:
        return step(n)
    return 0
"""
USES = """
from pkg.cache import Zone, compute, decoded, lookup, walk


def test_lookup():
    assert lookup("x")["offset"] == 1


def test_zone():
    assert Zone("3").hours == 3


def test_decoded():
    assert decoded('{"a": 1}')["scale"] == 2


def test_compute():
    assert compute(3) == 9
"""
WALKS = """
from pkg.cache import walk


def test_walk_far():
    assert walk(2) == 3


def test_walk_not():
    assert walk(0) == 0
"""
OTHER = """
from pkg.cache import unrelated


def test_other():
    assert unrelated() == 0
"""


def both(name: str) -> set[str]:
    return {f"tests/test_a.py::{name}", f"tests/test_b.py::{name}"}


pytestmark = pytest.mark.anyio


async def test_an_edit_of_what_filled_a_cache_selects_the_tests_that_hit_it(
    memory_client: Any, tmp_path: Path, project_python: dict[str, str]
) -> None:
    """`test_a` fills three caches (a module dict, a metaclass's instances, a dict filled through
    the json module's Python code calling back into the project); `test_b` only hits them and
    never runs the function behind. Editing that function selects both (a full run fails in
    both), and once both ran again the old version's edges are gone (nothing stays selected)."""
    root = write_project(
        tmp_path / "proj",
        {
            "pkg/__init__.py": "",
            "pkg/cache.py": CACHE,
            "tests/test_a.py": USES,
            "tests/test_b.py": USES,
            "tests/test_c.py": OTHER,
            "tests/test_d.py": WALKS,
        },
    )
    cache = root / "pkg/cache.py"
    with anyio.fail_after(120):
        async with memory_client(root, **project_python) as client:
            assert (await run(client))["counts"]["passed"] == 11
            assert await plan(client) == set()
            for old, new, name in (
                ('"offset": 1', '"offset": 2', "test_lookup"),
                ("int(spec) + 0", "int(spec) + 1", "test_zone"),
                ('obj["scale"] = 2', 'obj["scale"] = 3', "test_decoded"),
                ("return n * n", "return n * n + 1", "test_compute"),
            ):
                edit(cache, old, new)
                assert await plan(client) == both(name), name
                result = await run(client)
                assert {f["nodeid"] for f in result["failures"]} == both(name)
                edit(cache, new, old)
                assert await plan(client) == both(name), name  # they failed: they run until they pass
                assert (await run(client))["counts"]["passed"] == 2
                assert await plan(client) == set(), name  # re-recorded: the edited version's edges went
            edit(cache, "return 0\n\n\ndef square", "return 0 + 0\n\n\ndef square")
            assert await plan(client) == {"tests/test_c.py::test_other"}
            await run(client)
            # A branch `test_walk_not` did not take is no cache: `walk` keeps no state.
            edit(cache, "return n + 1", "return 1 + n")
            assert await plan(client) == {"tests/test_d.py::test_walk_far"}


def test_reaching_follows_edges_backwards_from_the_changed_blocks() -> None:
    edges = sorted([pack_edge(1, 2), pack_edge(2, 3), pack_edge(3, 2), pack_edge(4, 5), pack_edge(6, 3)])
    assert reaching({3}, edges) == {3: 3, 2: 3, 1: 3, 6: 3}
    assert reaching({5}, edges) == {5: 5, 4: 5}
    assert reaching({7}, edges) == {7: 7}
    assert reaching(set(), edges) == {}


class _Code:
    """A code object's two attributes the tracers read (hashed by identity, as code objects are
    compared)."""

    def __init__(self, co_name: str, co_filename: str) -> None:
        self.co_name = co_name
        self.co_filename = co_filename


def _code(name: str, filename: str) -> Any:
    return _Code(name, filename)


def test_contract_draws_edges_through_other_code_but_not_through_hubs() -> None:
    """Project code calls library code that calls project code back: one edge between the two;
    pytest's own code (fixtures, hooks) calls everything and is not gone through."""
    f, g, h, k = (_code(n, f"/proj/pkg/m.py#{n}") for n in "fghk")
    lib, hub = _code("loads", "/usr/lib/python3/json/__init__.py"), _code("call", "/x/_pytest/fixtures.py")

    def entry(code: Any, *callees: Any) -> Any:
        return SimpleNamespace(code=code, calls=[SimpleNamespace(code=c) for c in callees] or None)

    entries = [entry(f, g, lib, hub, f), entry(lib, h), entry(hub, k), entry(g), entry(h), entry(k)]
    edges: set[tuple[Any, Any]] = set()
    leaves: set[Any] = set()
    contract(entries, lambda code: code.co_filename.startswith("/proj/"), edges, leaves)
    assert edges == {(f, g), (f, h)}
    assert leaves == {g, h, k}


def test_cache_points_are_stateful_leaves_and_callers_of_cached_functions() -> None:
    """Blocks 1 -> 2 -> 3 (changed); 4 -> 5 (cached) -> 3; 6 -> 3. Block 2 keeps state and was a
    leaf: a point; 1 reaches 3 only through 2 and is not; 5 is behind a cache: its caller 4 is a
    point; 6 keeps no state and is not."""
    edges = sorted(pack_edge(a, b) for a, b in [(1, 2), (2, 3), (4, 5), (5, 3), (6, 3)])
    blocks = {i: ("m.py", f"c{i}") for i in range(1, 7)}

    def marks(file: str) -> tuple[frozenset[str], frozenset[str]]:
        return frozenset({"c1", "c2"}), frozenset({"c5"})

    origin = reaching({3}, edges)
    assert cache_points(origin, {3}, edges, {2, 6}, blocks, marks) == {3: 3, 2: 3, 4: 3}
    assert cache_points(origin, {3}, edges, {2, 6}, blocks, None) == origin


def test_stateful_functions_store_into_what_outlives_the_call() -> None:
    source = b"""
import functools
TABLE = {}

def fills(key):
    if key not in TABLE:
        TABLE[key] = make(key)
    return TABLE[key]

def remembers(self, key):
    return self._cache.setdefault(key, key)

def marks_itself():
    marks_itself.done = True

def keeps_local(key):
    seen = {}
    seen[key] = 1
    out = []
    out.append(key)
    return seen, out

class Box:
    def __init__(self, size):
        self.size = size

@functools.lru_cache(maxsize=None)
def costly(n):
    return n

def factory(name, *args, **options):
    options["eq"] = True
    cls = type(name, (), {})
    cls.__annotations__ = {}
    return cls

class Meta:
    @classmethod
    def tag(cls, value):
        cls.tags = value
"""
    blocks = parse_blocks(source)
    names = ["fills", "remembers", "marks_itself", "keeps_local", "__init__", "costly", "factory", "tag"]
    by_name = dict(zip(names, (s[2] for s in blocks.spans), strict=True))
    # `factory` stores into its own `**options` dict and a class it just made (a local named `cls`,
    # as attrs' `make_class` does), not into anything that outlives it; `tag`'s `cls` is a parameter.
    stateful = {n for n, c in by_name.items() if c in blocks.stateful}
    assert stateful == {"fills", "remembers", "marks_itself", "tag"}
    assert {n for n, c in by_name.items() if c in blocks.cached} == {"costly"}


async def test_two_empty_init_files_are_two_dependencies(memory_client: Any, tmp_path: Path) -> None:
    """The `<module>` code of two empty `__init__.py` files compares equal (CPython leaves the
    file name out of code equality): the second package's import was lost, and code added to
    its `__init__.py` selected nothing."""
    root = write_project(
        tmp_path / "proj",
        {
            "pkg/__init__.py": "",
            "pkg/sub/__init__.py": "",
            "pkg/sub/thing.py": "VALUE = 1\n",
            "tests/test_thing.py": "from pkg.sub.thing import VALUE\n\n\ndef test_value():\n    assert VALUE == 1\n",
        },
    )
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 1
            assert await plan(client) == set()
            edit(root / "pkg/sub/__init__.py", "", "from pkg.sub import thing\n\nthing.VALUE = 2\n")
            assert await plan(client) == {"tests/test_thing.py::test_value"}
            assert (await run(client))["counts"]["failed"] == 1


LATE = """
_TABLE = {}


def build(name):
    return {"name": name, "offset": 1}


def lookup(name):
    if name not in _TABLE:
        _TABLE[name] = build(name)
    return _TABLE[name]
"""


async def test_a_cache_filled_after_its_filler_ran_elsewhere_selects_the_tests_that_hit_it(
    memory_client: Any, tmp_path: Path, project_python: dict[str, str]
) -> None:
    """`test_a` calls the filler itself before the cache lookup calls it: the lookup is not the
    filler's first caller in that test (with `sys.monitoring`, the only one it reported), and still
    the lookup -> filler edge is what selects `test_b`, which only hits the cache."""
    first = "from pkg.late import build, lookup\n\n\ndef test_fill():\n    assert build('y')['offset'] == 1\n"
    first += "    assert lookup('x')['offset'] == 1\n"
    hit = "from pkg.late import lookup\n\n\ndef test_hit():\n    assert lookup('x')['offset'] == 1\n"
    root = write_project(
        tmp_path / "proj",
        {"pkg/__init__.py": "", "pkg/late.py": LATE, "tests/test_a.py": first, "tests/test_b.py": hit},
    )
    with anyio.fail_after(120):
        async with memory_client(root, **project_python) as client:
            assert (await run(client))["counts"]["passed"] == 2
            edit(root / "pkg/late.py", '"offset": 1', '"offset": 2')
            expected = {"tests/test_a.py::test_fill", "tests/test_b.py::test_hit"}
            assert await plan(client) == expected
            result = await run(client)
            assert {f["nodeid"] for f in result["failures"]} == expected
