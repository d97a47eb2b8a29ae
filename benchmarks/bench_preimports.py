"""Learned pre-imports on a suite that imports heavy libraries (issue 13.2): pydantic and httpx.

attrs' and python-dateutil's tests import little that the zygote does not hold before it learns
anything (its pytest warm-up loads the hypothesis plugin, which imports hypothesis), so the rows
of `bench_projects` show no gain there. This project, made here with its own venv (pytest,
pydantic, httpx from PyPI, kept between runs under the benchmark workdir), has a test module that
imports pydantic and httpx, as an API client's suite does. One test, on a warm zygote that
pre-imported what the runs before imported, against one that did not (setting
`learn_imports=false`); neither records (`record_tests=false`), so both runs do the same work
but the imports. Target: a gain (< 1.0x).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from benchmarks.bench_projects import Server
from benchmarks.common import Options, Result, interleave, median_ms

DEPS = ("pytest>=8,<10", "pydantic>=2.7,<3", "httpx>=0.27,<1")
TESTS = """
import httpx
import pydantic


class Item(pydantic.BaseModel):
    name: str
    price: float = pydantic.Field(gt=0)


def handler(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"name": "pen", "price": 1.5})


def test_model_from_a_response():
    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://shop") as client:
        item = Item.model_validate(client.get("/items/1").json())
    assert item.price == 1.5


def test_validation_error():
    try:
        Item(name="pen", price=-1)
    except pydantic.ValidationError as exc:
        assert exc.error_count() == 1
    else:
        raise AssertionError("no validation error")
"""


def ensure_heavy_project(base: Path) -> Path:
    root = base / "heavy-imports"
    marker = root / ".bench-installed"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "tests").mkdir(parents=True)
    (root / "pytest.ini").write_text("[pytest]\n")  # the rootdir: not the benchmark's own pyproject.toml above
    (root / "tests" / "test_client.py").write_text(textwrap.dedent(TESTS).lstrip())
    venv = root / ".venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *DEPS], check=True)
    marker.write_text(" ".join(DEPS) + "\n")
    return root


async def run(opts: Options) -> list[Result]:
    base = opts.workdir / "preimports"
    root = ensure_heavy_project(base)
    cache = opts.workdir / "preimports-cache"
    shutil.rmtree(cache, ignore_errors=True)
    nodeid = "tests/test_client.py::test_model_from_a_response"
    learned = await Server.start(base, cache, record_tests="false")
    bare = await Server.start(base, cache, record_tests="false", learn_imports="false")
    try:
        for server in (learned, learned, bare, bare):  # the first run learns; every zygote warm
            _, result = await server.run(root, select=[nodeid])
            assert result["counts"]["passed"] == 1, result

        async def with_learned() -> float:
            return (await learned.run(root, select=[nodeid]))[0]

        async def without() -> float:
            return (await bare.run(root, select=[nodeid]))[0]

        a, b = await interleave(opts.n(15, 3), with_learned, without)
    finally:
        await learned.close()
        await bare.close()
    return [
        Result(
            "one test importing pydantic and httpx, zygote with learned pre-imports",
            median_ms(a),
            median_ms(b),
            "same, learn_imports=false",
            "< 1.0×",
            1.0,
        )
    ]
