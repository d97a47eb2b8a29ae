import pytest
from sample.shapes import classify


@pytest.mark.parametrize(("n", "expected"), [(-1, "negative"), (0, "zero"), (2, "even"), (3, "odd")])
def test_classify(n, expected):
    assert classify(n) == expected


def test_deliberately_failing():
    assert classify(4) == "odd"
