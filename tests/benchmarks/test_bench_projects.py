"""The project benchmark's judge of a mutation: whether a failing test was planned to run."""

from __future__ import annotations

from benchmarks.bench_projects import _ran


def test_a_failure_counts_as_planned_by_its_id_a_subtest_or_its_module() -> None:
    planned = {'tests/test_filters.py::test_min_max[{{ ["a", "B"]|max }}-B]', "tests/test_a.py::TestX::test_y"}
    assert _ran('tests/test_filters.py::test_min_max[{{ ["a", "B"]|max }}-B]', planned)  # " [" in its id
    assert _ran("tests/test_a.py::TestX::test_y [custom message] (i=1)", planned)  # a subtest of it
    assert _ran("tests/test_a.py", planned)  # the module's collection error
    assert not _ran("tests/test_a.py::TestX::test_z", planned)
    assert not _ran('tests/test_filters.py::test_min_max[{{ ["a", "B"]|min }}-a]', planned)
