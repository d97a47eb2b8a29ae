"""State cached by one test for later ones: the recorder's caller -> callee edges select the later
tests too when what filled the cache is edited (a temporary project recorded by a full run, then
edited); and the pure parts (reachability in the plan, contracting profiler statistics)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

from tests.tools.test_runner.conftest import write_project
from tests.tools.test_runner.test_affected import edit, plan, run
from tools.test_runner.selection.plan import pack_edge, reaching
from tools.test_runner.tracers import contract

CACHE = """
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
"""
USES = """
from pkg.cache import Zone, decoded, lookup


def test_lookup():
    assert lookup("x")["offset"] == 1


def test_zone():
    assert Zone("3").hours == 3


def test_decoded():
    assert decoded('{"a": 1}')["scale"] == 2
"""
OTHER = """
from pkg.cache import unrelated


def test_other():
    assert unrelated() == 0
"""


def both(name: str) -> set[str]:
    return {f"tests/test_a.py::{name}", f"tests/test_b.py::{name}"}


pytestmark = pytest.mark.anyio


async def test_an_edit_of_what_filled_a_cache_selects_the_tests_that_hit_it(memory_client: Any, tmp_path: Path) -> None:
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
        },
    )
    cache = root / "pkg/cache.py"
    with anyio.fail_after(120):
        async with memory_client(root) as client:
            assert (await run(client))["counts"]["passed"] == 7
            assert await plan(client) == set()
            for old, new, name in (
                ('"offset": 1', '"offset": 2', "test_lookup"),
                ("int(spec) + 0", "int(spec) + 1", "test_zone"),
                ('obj["scale"] = 2', 'obj["scale"] = 3', "test_decoded"),
            ):
                edit(cache, old, new)
                assert await plan(client) == both(name), name
                result = await run(client)
                assert {f["nodeid"] for f in result["failures"]} == both(name)
                edit(cache, new, old)
                assert await plan(client) == both(name), name  # they failed: they run until they pass
                assert (await run(client))["counts"]["passed"] == 2
                assert await plan(client) == set(), name  # re-recorded: the edited version's edges went
            edit(cache, "return 0", "return 0 + 0")
            assert await plan(client) == {"tests/test_c.py::test_other"}


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
    contract(entries, lambda code: code.co_filename.startswith("/proj/"), edges)
    assert edges == {(f, g), (f, h)}
