"""The pure parts of affected-test selection and sharding: block checksums, the plan, the shard
assignment, merging the shards' records. No processes (the behaviour is in test_affected.py)."""

from __future__ import annotations

import pytest

from tools.test_runner.affected import merge_records
from tools.test_runner.recorder import assign_shards
from tools.test_runner.selection import blocks as blocks_module
from tools.test_runner.selection.blocks import parse_blocks
from tools.test_runner.selection.plan import TestRecord, make_plan

SOURCE = b"""
import os

LIMIT = 3


@decorator
def first(a=1):
    return [i for i in range(a)]


class Thing:
    size = 2

    def method(self):
        return lambda: self.size
"""


def test_blocks_follow_functions_not_lines() -> None:
    blocks = parse_blocks(SOURCE)
    f_start = blocks.spans[0][0]
    assert f_start == 7  # the decorator's line: where the code object starts
    assert blocks.checksum_at(9) == blocks.spans[0][2]  # the comprehension inside `first`
    assert blocks.checksum_at(16) == blocks.spans[1][2]  # the lambda inside `method`
    assert blocks.checksum_at(0) == blocks.module  # module code
    shifted = parse_blocks(b"\n\n# a comment\n" + SOURCE)
    assert shifted.checksums - {shifted.file_checksum} == blocks.checksums - {blocks.file_checksum}
    body = parse_blocks(SOURCE.replace(b"range(a)", b"range(a + 1)"))
    assert body.module == blocks.module and body.spans[1][2] == blocks.spans[1][2]
    assert body.spans[0][2] != blocks.spans[0][2]
    constant = parse_blocks(SOURCE.replace(b"size = 2", b"size = 3"))
    assert constant.module != blocks.module and constant.spans == blocks.spans
    broken = parse_blocks(b"def broken(:\n")
    assert broken.module == broken.file_checksum and not broken.spans


def test_same_body_under_two_names_are_two_blocks() -> None:
    blocks = parse_blocks(
        b"class A:\n    def f(self):\n        return 1\n\n\nclass B:\n    def f(self):\n        return 1\n"
    )
    assert len({s[2] for s in blocks.spans}) == 2


def test_the_per_function_cache_gives_what_a_cold_parse_gives() -> None:
    """Re-parsing an edited file takes unchanged functions' facts from the cache: every variant
    must equal a parse with an empty cache (checksums, spans, stateful and cached marks)."""
    extra = b"\n\nclass Store:\n    @lru_cache\n    def get(self, k):\n        CACHE[k] = 1\n        return CACHE\n"
    variants = [
        SOURCE + extra,
        (SOURCE + extra).replace(b"range(a)", b"range(a + 1)"),  # one body edited
        (SOURCE + extra).replace(b"CACHE[k] = 1", b"pass"),  # no longer stateful
        (SOURCE + extra).replace(b"def method(self):", b"def renamed(self):"),
        b"\r\n".join((SOURCE + extra).split(b"\n")),  # other line endings: other lines, same trees
        b"# -*- coding: latin-1 -*-\nNAME = '\xe9'\n" + SOURCE,  # an encoding declaration
        b"# -*- coding: latin-1 -*-\ndef f():\n    return '\xe9'\n",  # the same bytes as text of two encodings
        b"def f():\n    return '\xc3\xa9'\n",
        b"# -*- coding: latin-1 -*-\ndef f():\n    return '\xc3\xa9'\n",
        b"def f(): return 1; x = 2\ndef g():\n    return 2\n",
    ]
    warm = [parse_blocks(v) for v in variants]
    again = [parse_blocks(v) for v in variants]  # every function is in the cache now
    blocks_module._FUNCTION_CACHE.clear()
    cold = []
    for v in variants:
        blocks_module._FUNCTION_CACHE.clear()
        cold.append(parse_blocks(v))
    assert warm == cold and again == cold
    assert cold[0].stateful and not cold[2].stateful and cold[0].cached and cold[2].cached
    assert cold[1].spans[0][2] != cold[0].spans[0][2] and cold[1].spans[1:] == cold[0].spans[1:]
    assert cold[-2].spans != cold[-1].spans  # 'é' in UTF-8, 'Ã©' in latin-1


def record(nodeid: str, depset: int | None, outcome: str = "passed", env: str = "E") -> TestRecord:
    return TestRecord(nodeid, nodeid.split("::")[0], outcome, 0.1, env, depset)


def test_plan() -> None:
    records = {
        "t.py::a": record("t.py::a", 1),
        "t.py::b": record("t.py::b", 2),
        "u.py::c": record("u.py::c", 1, outcome="failed"),
        "v.py::d": record("v.py::d", None),
        "w.py::e": record("w.py::e", 1),
    }
    blocks = {10: ("m.py", "x"), 11: ("m.py", "y"), 12: ("gone.py", "z")}
    depsets = {1: [10], 2: [11, 12]}
    current = {"m.py": frozenset({"x", "q"})}
    collected = {"t.py": ["t.py::a", "t.py::b"], "w.py": ["w.py::e"], "v.py": ["v.py::d"]}
    plan = make_plan(records, depsets, blocks, current.get, "E", collected)
    assert plan.mode == "affected"
    assert plan.skip_nodeids == {"t.py::a", "w.py::e"}  # b: a file is gone; c failed; d has no data
    assert plan.valid == {"t.py::a", "w.py::e", "u.py::c"}  # c's record holds: a full run need not trace it
    assert plan.skip_files == ["w.py"]
    assert plan.changed_files == ["gone.py", "m.py"]
    assert plan.command() == {"skip_files": ["w.py"], "skip_nodeids": ["t.py::a"], "keep": ["t.py::b"]}
    reasons = plan.reasons(["t.py::b", "u.py::c", "v.py::d", "new.py::n"])
    assert (reasons["new_tests"], reasons["failed_last"], reasons["no_data"]) == (1, 1, 1)
    other = make_plan(records, depsets, blocks, current.get, "another environment", collected)
    assert other.mode == "all" and not other.skip_nodeids


def test_a_record_of_another_environment_is_a_reason_too() -> None:
    # A test recorded under an older environment (the others of its run are): selected, and the
    # selection said nothing of why (every reason empty; jinja2: 81 tests).
    records = {"t.py::a": record("t.py::a", 1), "t.py::old": record("t.py::old", 1, env="older")}
    plan = make_plan(records, {1: [10]}, {10: ("m.py", "x")}, {"m.py": frozenset({"x"})}.get, "E", {})
    assert plan.mode == "affected" and plan.skip_nodeids == {"t.py::a"}
    assert plan.reasons(["t.py::old"])["no_data"] == 1


def test_shards_balance_by_duration_and_agree() -> None:
    ids = [f"t::{i}" for i in range(6)]
    durations = {"t::0": 5.0, "t::1": 1.0, "t::2": 1.0, "t::3": 1.0, "t::4": 1.0}
    owner = assign_shards(ids, durations, 2)
    assert owner == assign_shards(list(ids), dict(durations), 2)  # every child computes the same
    loads = [sum(durations.get(n, 1.0) for n, o in zip(ids, owner, strict=True) if o == k) for k in (0, 1)]
    assert sorted(loads) == [5.0, 5.0]
    assert assign_shards(ids, {}, 3) == [0, 1, 2, 0, 1, 2]


def test_merge_records_reindexes() -> None:
    one = {
        "files": ["a.py"],
        "pairs": [[0, 3]],
        "tests": {"t::1": [0]},
        "collected": {"t.py": ["t::1", "t::2"]},
        "selected": ["t::1"],
    }
    two = {"files": ["b.py", "a.py"], "pairs": [[1, 3], [0, 7]], "tests": {"t::2": [1, 0]}, "selected": ["t::2"]}
    merged = merge_records([one, None, two])
    assert merged is not None
    pairs = [(merged["files"][f], line) for f, line in merged["pairs"]]
    assert {n: [pairs[k] for k in ks] for n, ks in merged["tests"].items()} == {
        "t::1": [("a.py", 3)],
        "t::2": [("b.py", 7), ("a.py", 3)],
    }
    assert merged["selected"] == ["t::1", "t::2"] and merged["collected"] == one["collected"]
    assert merge_records([None]) is None


def test_an_inner_functions_body_is_its_own_block_only() -> None:
    source = b"def outer(a=1):\n    b = a\n\n    @wrap(b)\n    def inner(x=b):\n        return x\n\n    return inner\n"
    blocks = parse_blocks(source)
    body = parse_blocks(source.replace(b"return x", b"return x + 1"))
    assert body.spans[0][2] == blocks.spans[0][2] and body.module == blocks.module
    assert body.spans[1][2] != blocks.spans[1][2]
    for old, new in ((b"b = a", b"b = a + 0"), (b"@wrap(b)", b"@wrap(a)"), (b"x=b", b"x=a")):
        changed = parse_blocks(source.replace(old, new))
        assert changed.spans[0][2] != blocks.spans[0][2], new


def test_blocks_of_another_version_are_not_reused() -> None:
    import json

    from tools.test_runner.selection.blocks import FileBlocks

    blocks = parse_blocks(SOURCE)
    assert FileBlocks.from_json(json.loads(json.dumps(blocks.to_json()))) == blocks
    with pytest.raises(ValueError):
        FileBlocks.from_json(blocks.to_json()[:3])


def test_import_time_changes_are_pending_on_the_state() -> None:
    """A test that depends on a changed block only through the project's import (`/import/`) is
    pending on the state it ran with (`/state/`); one that ran the block itself, one of a lazy
    import (`/lazy/`, not digested) and one with no state recorded are affected."""
    records = {n: record(n, d) for n, d in [("a.py::calls", 1), ("a.py::uses", 2), ("b.py::lazy", 3)]}
    records["c.py::nostate"] = record("c.py::nostate", 4)
    blocks = {
        1: ("m.py", "init-old"),
        2: ("/import/m.py", "init-old"),
        3: ("/lazy/m.py", "init-old"),
        4: ("/state/m", "D1"),
        5: ("m.py", "other"),
    }
    depsets = {1: [1, 2, 4], 2: [2, 4, 5], 3: [3, 4, 5], 4: [2, 5]}
    current = {"m.py": frozenset({"init-new", "other"})}
    collected = {f: [n] for n, f in ((n, n.split("::")[0]) for n in records)}
    plan = make_plan(records, depsets, blocks, current.get, "E", collected)
    assert plan.pending == {"a.py::uses"} and plan.valid == {"a.py::uses"}
    assert plan.verify == {"m": "D1"}
    assert plan.command()["verify"] == {"m": "D1"} and plan.skip_nodeids == {"a.py::uses"}
    assert plan.changed_files == ["m.py"]
    plan.widen()  # a sharded run: no child checks alone
    assert not plan.pending and not plan.valid and plan.verify is None and "verify" not in plan.command()
    assert not plan.skip_nodeids and not plan.skip_files

    # Two tests that ran with different states: there is no one state to check.
    depsets[5] = [2, 5, 6]
    blocks[6] = ("/state/m", "D2")
    records["d.py::other_state"] = record("d.py::other_state", 5)
    collected["d.py"] = ["d.py::other_state"]
    plan = make_plan(records, depsets, blocks, current.get, "E", collected)
    assert not plan.pending and plan.verify is None and not plan.valid

    # Nothing import-time changed: no check, and state entries are not files.
    current = {"m.py": frozenset({"init-old", "other"})}
    plan = make_plan(records, depsets, blocks, current.get, "E", collected)
    assert plan.verify is None and plan.valid == set(records)
