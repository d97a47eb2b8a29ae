"""Real projects from PyPI: affected-test selection, recording, pre-imports and shards (issue 13).

attrs and python-dateutil, pinned sdists (`pip download --no-deps --no-binary :all:`), each
installed editable with its test dependencies (and pytest-testmon) into `<root>/.venv` under the
benchmark workdir (kept between runs). On each, through one server over stdio:

- edit loop: 10 functions the suite executes (fixed seed), each edited in turn (a statement
  added to its body: tests still pass), `run_tests(affected=true)` against cold
  `python -m pytest -q` of the whole suite (targets: <= 0.1x dateutil, <= 0.2x attrs), and
  side by side with `pytest --testmon` on the same edits (ours faster);
- correctness: single-function mutations (a comparison flipped, a constant changed) that make
  at least one test fail; the failures of `affected=true` must equal those of a full run
  (misses: 0); the mean fraction of the suite selected;
- recording overhead: a full run with recording against one without (setting record_tests):
  <= 1.3x;
- full warm run against cold pytest: <= 0.95x serial, <= 0.6x with workers=2;
- learned pre-imports: one test on a zygote that pre-imported what the suite imports, against
  one that did not (setting learn_imports; informative: the gain).

Medians, interleaved. `--quick` edits 3 functions, tries a few mutations, one sample each.
`BENCH_PROJECTS=attrs` (names, comma-separated) measures only those projects and
`BENCH_PARTS=full,first,preimports,edit,mutations` only those parts (full runs, shards and
recording overhead; the first recording; one test with and without learned pre-imports; the edit
loop; the mutations): a full run of both takes ~40 min.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from benchmarks.common import Options, Result, interleave, median_ms, time_command
from benchmarks.jsonrpc_client import StdioJsonRpc, bench_env
from mcp_server.cachedir import root_key
from tools.test_runner.selection.plan import real_file
from tools.test_runner.selection.store import ID_TYPE

SEED = 13
PARTS = ("full", "first", "preimports", "edit", "mutations")
_T = TypeVar("_T")
EDIT_MARK = "_bench_edit = None"


@dataclass(frozen=True)
class Project:
    name: str
    dist: str
    version: str
    deps: tuple[str, ...]
    source: str
    """The package folder under the root whose functions are edited and mutated."""
    edit_target: float


PROJECTS = (
    Project(
        "python-dateutil",
        "python-dateutil",
        "2.9.0.post0",
        (
            "pytest<9",
            "pytest-cov",
            "hypothesis",
            "six",
            "freezegun",
            "pytest-testmon",
        ),  # its config errors on pytest 9 deprecations
        "src/dateutil",
        0.1,
    ),
    Project(
        "attrs",
        "attrs",
        "25.4.0",
        ("pytest", "hypothesis", "pympler", "cloudpickle", "pytest-testmon"),
        "src",
        0.2,
    ),
)


# --- setup ---------------------------------------------------------------------------------------


def ensure_project(base: Path, project: Project) -> Path:
    """The project's sdist, extracted, with `.venv` (editable install + test dependencies)."""
    root = base / f"{project.dist}-{project.version}"
    marker = root / ".bench-installed"
    if marker.exists():
        return root
    downloads = base / "dl"
    downloads.mkdir(parents=True, exist_ok=True)
    spec = f"{project.dist}=={project.version}"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:", spec, "-d", downloads],
        check=True,
    )
    archive = next(downloads.glob(f"{project.dist}-{project.version}.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(base, filter="data")
    venv = root / ".venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "-e", str(root), *project.deps], check=True)
    marker.write_text(spec + "\n")
    return root


# --- the suite's functions, edits and mutations --------------------------------------------------


def executed_functions(db: Path, root: Path, source: str) -> list[tuple[str, int]]:
    """(file, first line) of every function under `source` that some test executed, from the
    affected-test records (block checksums present in a dependency set)."""
    conn = sqlite3.connect(db)
    try:
        used: set[int] = set()
        for (blob,) in conn.execute("SELECT blocks FROM aff_deps"):
            ids = array(ID_TYPE)
            ids.frombytes(blob)
            used.update(ids)
        executed = {
            (real_file(f), c) for i, f, c in conn.execute("SELECT id, file, checksum FROM aff_blocks") if i in used
        }
        found = []
        for path, blocks in conn.execute("SELECT path, blocks FROM aff_files"):
            if not path.startswith(source + "/"):
                continue
            for start, _end, checksum in json.loads(blocks)[2]:
                if (path, checksum) in executed:
                    found.append((path, int(start)))
    finally:
        conn.close()
    return sorted(found)


def seeded_order(items: list[_T]) -> list[_T]:
    """`items` in a fixed pseudo-random order in which each item's place depends on itself only
    (a hash of SEED and the item): which functions count as executed (what the recorder charges
    to a test) can change without reshuffling the sample of the others, as a shuffle would."""
    return sorted(items, key=lambda item: hashlib.blake2b(f"{SEED}|{item!r}".encode(), digest_size=8).digest())


def _function_at(tree: ast.AST, start: int) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if first == start:
                return node
    return None


def body_edit(text: str, start: int) -> str | None:
    """The file with a harmless statement added at the start of the function's body."""
    node = _function_at(ast.parse(text), start)
    if node is None:
        return None
    body = node.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        if len(body) < 2:
            return None
        first = body[1]
    if first.lineno == node.lineno:
        return None  # a one-line function
    lines = text.splitlines(keepends=True)
    lines.insert(first.lineno - 1, " " * first.col_offset + EDIT_MARK + "\n")
    return "".join(lines)


_NEGATE: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}


def _mutable(node: ast.AST) -> bool:
    if isinstance(node, ast.Compare):
        return len(node.ops) == 1 and type(node.ops[0]) in _NEGATE
    if isinstance(node, ast.Constant):
        return isinstance(node.value, bool) or (isinstance(node.value, int) and node.value in range(-2, 100))
    return False


def mutations_in(text: str, start: int) -> list[int]:
    node = _function_at(ast.parse(text), start)
    if node is None:
        return []
    return [i for i, sub in enumerate(ast.walk(node)) if _mutable(sub)]


def mutate(text: str, start: int, index: int) -> str | None:
    """The file with one node of the function changed: a comparison negated, a constant moved."""
    tree = ast.parse(text)
    node = _function_at(tree, start)
    if node is None:
        return None
    target = list(ast.walk(node))[index]
    if isinstance(target, ast.Compare):
        target.ops = [_NEGATE[type(target.ops[0])]()]
    elif isinstance(target, ast.Constant):
        value = target.value
        if isinstance(value, bool):
            target.value = not value
        elif isinstance(value, int):
            target.value = value + 1
    first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    end = node.end_lineno or node.lineno
    indent = " " * node.col_offset
    new = "".join(indent + line + "\n" if line else "\n" for line in ast.unparse(node).splitlines())
    lines = text.splitlines(keepends=True)
    mutated = "".join(lines[: first - 1]) + new + "".join(lines[end:])
    try:
        compile(mutated, "<mutant>", "exec")
    except SyntaxError:
        return None
    return mutated


# --- measuring -----------------------------------------------------------------------------------


class Server:
    def __init__(self, client: StdioJsonRpc) -> None:
        self.client = client

    @classmethod
    async def start(cls, base: Path, cache: Path, **settings: str) -> Server:
        env = bench_env(base, cache_dir=str(cache), **settings)
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        client = await StdioJsonRpc.spawn([sys.executable, "-m", "mcp_server"], cwd=base, env=env)
        await client.initialize()
        return cls(client)

    async def run(self, root: Path, **args: Any) -> tuple[float, dict[str, Any]]:
        started = time.perf_counter()
        reply = await self.client.request(
            "tools/call", {"name": "run_tests", "arguments": {"root": str(root), **args}}, wait_s=1800
        )
        elapsed = time.perf_counter() - started
        result = reply["result"]
        if "structuredContent" not in result:  # a usage error (a mutant that breaks conftest) has one
            raise RuntimeError(f"run_tests failed: {result}")
        return elapsed, result["structuredContent"]

    async def all_failures(self, result: dict[str, Any]) -> set[str]:
        """Every failure's node id: a result cut to the output budget (`truncated`) is paged
        through `get_run` (its visible list is only the first ones)."""
        if not result.get("truncated"):
            return failures(result)
        return await self._paged(result, "failures")

    async def planned(self, root: Path) -> set[str]:
        """The node ids `run_tests(affected=true)` would run now (`list_tests(affected=true)`)."""
        reply = await self.client.request(
            "tools/call", {"name": "list_tests", "arguments": {"root": str(root), "affected": True}}, wait_s=600
        )
        result = reply["result"].get("structuredContent", {})
        if not result.get("truncated"):
            return {str(n) for n in result.get("tests", [])}
        return await self._paged(result, "tests")

    async def _paged(self, result: dict[str, Any], section: str) -> set[str]:
        found: set[str] = set()
        offset = 0
        while True:
            reply = await self.client.request(
                "tools/call",
                {
                    "name": "get_run",
                    "arguments": {"run_id": result["run_id"], "section": section, "offset": offset, "limit": 200},
                },
                wait_s=120,
            )
            if reply["result"].get("isError") or "structuredContent" not in reply["result"]:
                # never "no failures": a run dropped from the store would hide a miss
                raise RuntimeError(f"get_run({result['run_id']}, {section}) failed: {reply['result']}")
            items = reply["result"]["structuredContent"].get("items", [])
            for item in items:
                found.add(str(item["nodeid"]) if isinstance(item, dict) and "nodeid" in item else str(item))
            if not items:  # a page may hold fewer than asked (the output budget): go on until none
                return found
            offset += len(items)

    async def close(self) -> None:
        await self.client.close()


def _ran(nodeid: str, planned: set[str]) -> bool:
    """Whether a failure's test was among those planned to run: its id, or a subtest's failure
    (its test's id, a space, then ` [msg]`; a parametrized id may hold ` [` itself, as jinja2's
    `test_min_max[{{ ["a", "B"]|max }}-B]`), or a module's collection error (the module's path)."""
    if nodeid in planned or any(nodeid.startswith(p + " ") for p in planned):
        return True
    return any(p.startswith(nodeid + "::") for p in planned)


def failures(result: dict[str, Any]) -> set[str]:
    return {f["nodeid"] for f in result.get("failures", [])}


def note(results: list[Result], result: Result) -> None:
    """Keep a figure, and show it at once (a long run's early figures survive its interruption)."""
    results.append(result)
    ratio = f"{result.ratio:.3f}x" if result.ratio is not None else "-"
    print(f"    {result.name}: {result.ours_ms:.1f} vs {result.baseline_ms} -> {ratio} {result.extra}", file=sys.stderr)


def _wanted(variable: str, known: tuple[str, ...]) -> set[str]:
    value = os.environ.get(variable, "").strip()
    return {v.strip() for v in value.split(",") if v.strip()} if value else set(known)


async def bench_project(opts: Options, base: Path, project: Project) -> list[Result]:
    parts = _wanted("BENCH_PARTS", PARTS)
    root = ensure_project(base, project)
    cache = opts.workdir / "projects-cache"
    shutil.rmtree(cache, ignore_errors=True)
    for leftover in (root / ".testmondata", root / ".testmondata-shm", root / ".testmondata-wal"):
        leftover.unlink(missing_ok=True)
    db = cache / root_key(root) / "tests.sqlite3"
    env = {k: v for k, v in bench_env(base).items() if k != "PYTHONDONTWRITEBYTECODE"}
    cold = [str(root / ".venv" / "bin" / "python"), "-m", "pytest", "-q"]
    testmon = [*cold, "--testmon"]
    results: list[Result] = []
    server = await Server.start(base, cache)
    plain = await Server.start(base, cache, record_tests="false")
    try:
        # Record (a never-recorded root runs everything), learn pre-imports; testmon's first run.
        _, first = await server.run(root, affected=True)
        assert first["selection"]["mode"] == "all", first["selection"]
        total = sum(v for k, v in first["counts"].items() if k not in ("deselected",) and not k.startswith("sub"))
        _, baseline = await server.run(root)
        known = failures(baseline)  # tests that fail before any edit (attrs 25.4.0 has one here)
        time_command(testmon, cwd=root, env=env)
        time_command(cold, cwd=root, env=env)

        # Full warm runs against cold pytest; recording overhead; shards.
        n = opts.n(5, 1)

        async def full() -> float:
            return (await server.run(root))[0]

        async def full_plain() -> float:
            return (await plain.run(root))[0]

        async def full_sharded() -> float:
            return (await server.run(root, workers=2))[0]

        async def cold_run() -> float:
            return time_command(cold, cwd=root, env=env)

        await plain.run(root)  # its zygote, warm
        if "full" in parts:
            await _full_runs(results, project, n, full, full_plain, full_sharded, cold_run)
        if "first" in parts:
            await _first_recording(results, opts, base, project, root, full_plain)
        if "preimports" in parts:
            await _preimports(results, opts, base, project, root, db, plain)
        if "edit" in parts or "mutations" in parts:
            functions = seeded_order(executed_functions(db, root, project.source))
        if "edit" in parts:
            await _edit_loop(results, opts, server, project, root, functions, known, total, cold, testmon, env)
        if "mutations" in parts:
            await _mutations(results, opts, server, project, root, functions, known, total)
    finally:
        await server.close()
        await plain.close()
    return results


async def _full_runs(
    results: list[Result],
    project: Project,
    n: int,
    full: Callable[[], Awaitable[float]],
    full_plain: Callable[[], Awaitable[float]],
    full_sharded: Callable[[], Awaitable[float]],
    cold_run: Callable[[], Awaitable[float]],
) -> None:
    a, b = await interleave(n, full, cold_run)
    note(
        results,
        Result(
            f"{project.name}: full run_tests, serial", median_ms(a), median_ms(b), "cold pytest -q", "≤ 0.95×", 0.95
        ),
    )
    c, d = await interleave(n, full_sharded, cold_run)
    note(
        results,
        Result(
            f"{project.name}: full run_tests, workers=2",
            median_ms(c),
            median_ms(d),
            "cold pytest -q",
            "≤ 0.6×",
            0.6,
        ),
    )
    e, f = await interleave(n, full, full_plain)
    note(
        results,
        Result(
            f"{project.name}: recording overhead (full run)",
            median_ms(e),
            median_ms(f),
            "same, record_tests=false",
            "≤ 1.3×",
            1.3,
        ),
    )


async def _first_recording(
    results: list[Result],
    opts: Options,
    base: Path,
    project: Project,
    root: Path,
    full_plain: Callable[[], Awaitable[float]],
) -> None:
    # The first recording of a root: every test traced (later full runs trace only what changed).
    fresh_cache = opts.workdir / "projects-cache-fresh"
    fresh = await Server.start(base, fresh_cache)
    try:

        async def first_recording() -> float:
            shutil.rmtree(fresh_cache / root_key(root), ignore_errors=True)
            return (await fresh.run(root))[0]

        g, h = await interleave(opts.n(3, 1), first_recording, full_plain)
    finally:
        await fresh.close()
    note(
        results,
        Result(
            f"{project.name}: first recording (every test traced)",
            median_ms(g),
            median_ms(h),
            "same, record_tests=false",
            "(informative)",
            extra={"tracer": "cProfile (_lsprof)" if sys.version_info < (3, 12) else "sys.monitoring"},
        ),
    )


async def _preimports(
    results: list[Result], opts: Options, base: Path, project: Project, root: Path, db: Path, plain: Server
) -> None:
    """What learned pre-imports save a short run: one test (the first node id recorded) on a warm
    zygote that pre-imported what the runs before imported, against one that did not
    (`learn_imports=false`); neither records. Little here: the zygote's pytest warm-up already
    imports hypothesis (`bench_preimports` measures a suite importing pydantic and httpx)."""
    conn = sqlite3.connect(db)
    try:
        (nodeid,) = conn.execute("SELECT min(nodeid) FROM aff_tests").fetchone()
    finally:
        conn.close()
    bare = await Server.start(base, opts.workdir / "projects-cache", record_tests="false", learn_imports="false")
    try:

        async def learned() -> float:
            return (await plain.run(root, select=[nodeid]))[0]

        async def unlearned() -> float:
            return (await bare.run(root, select=[nodeid]))[0]

        await learned()
        await unlearned()  # both zygotes warm
        a, b = await interleave(opts.n(10, 3), learned, unlearned)
    finally:
        await bare.close()
    note(
        results,
        Result(
            f"{project.name}: one test, zygote with learned pre-imports",
            median_ms(a),
            median_ms(b),
            "same, learn_imports=false",
            "(informative: the gain)",
            extra={"nodeid": nodeid},
        ),
    )


async def _edit_loop(
    results: list[Result],
    opts: Options,
    server: Server,
    project: Project,
    root: Path,
    functions: list[tuple[str, int]],
    known: set[str],
    total: int,
    cold: list[str],
    testmon: list[str],
    env: dict[str, str],
) -> None:
    # Edit loop.
    ours_s: list[float] = []
    testmon_s: list[float] = []
    cold_s: list[float] = []
    selected: list[int] = []
    edits = opts.n(10, 3)
    for file, start in functions:
        if len(ours_s) >= edits:
            break
        path = root / file
        original = path.read_text()
        edited = body_edit(original, start)
        if edited is None:
            continue
        path.write_text(edited)
        try:
            elapsed, result = await server.run(root, affected=True)
            if result["status"] == "error" or not failures(result) <= known:
                continue  # an edit that changed behaviour: not an edit-loop sample
            ours_s.append(elapsed)
            selected.append(int(result["selection"]["selected"]))
            testmon_s.append(time_command(testmon, cwd=root, env=env))
            cold_s.append(time_command(cold, cwd=root, env=env))
        finally:
            path.write_text(original)
            await server.run(root, affected=True)
            time_command(testmon, cwd=root, env=env)
    if ours_s:
        note(
            results,
            Result(
                f"{project.name}: edit loop, run_tests(affected=true)",
                median_ms(ours_s),
                median_ms(cold_s),
                "cold pytest -q (whole suite)",
                f"≤ {project.edit_target}×",
                project.edit_target,
                extra={
                    "edits": len(ours_s),
                    "selected_median": sorted(selected)[len(selected) // 2],
                    "tests": total,
                },
            ),
        )
        note(
            results,
            Result(
                f"{project.name}: edit loop, ours vs pytest --testmon",
                median_ms(ours_s),
                median_ms(testmon_s),
                "pytest --testmon -q",
                "< 1.0×",
                1.0,
                extra={"edits": len(ours_s)},
            ),
        )


async def _mutations(
    results: list[Result],
    opts: Options,
    server: Server,
    project: Project,
    root: Path,
    functions: list[tuple[str, int]],
    known: set[str],
    total: int,
) -> None:
    # Mutations: affected=true must find every failure a full run finds.
    wanted = opts.n(30, 3)
    attempts = opts.n(80, 8)
    candidates = seeded_order(
        [(file, start, i) for file, start in functions for i in mutations_in((root / file).read_text(), start)]
    )
    killing = misses = tried = hung = 0
    fractions: list[float] = []
    missed: list[str] = []
    flaky: list[str] = []
    # A mutant can hang the suite (python-dateutil's rrule cache: an exception raised while its
    # lock is held leaves it held, and the next test waits on it forever, as under plain pytest):
    # such runs end at their timeout, each after a different number of tests, so there is no
    # full run to judge the selection against. Bounded well above a full run's time, and counted.
    started = time.perf_counter()
    await server.run(root)
    timeout_s = max(60.0, 10 * (time.perf_counter() - started))
    for file, start, index in candidates:
        if killing >= wanted or tried >= attempts:
            break
        path = root / file
        original = path.read_text()
        mutated = mutate(original, start, index)
        if mutated is None:
            continue
        tried += 1
        path.write_text(mutated)
        try:
            planned = await server.planned(root)
            # Each run's failures read at once: a large result may leave the store once the next
            # large one is stored (the per-owner byte budget), and then it cannot be paged.
            _, affected = await server.run(root, affected=True, timeout_s=timeout_s)
            affected_failures = await server.all_failures(affected)
            _, whole = await server.run(root, timeout_s=timeout_s)
            found = await server.all_failures(whole)
        finally:
            path.write_text(original)
            await server.run(root, affected=True)
        if "timeout" in (affected["status"], whole["status"]):
            hung += 1
            continue
        if whole["status"] == "error" or not found - known:
            continue  # no test fails (or nothing can even be collected: no selection to judge)
        killing += 1
        fractions.append(int(affected["selection"]["selected"]) / max(1, total))
        differ = found ^ affected_failures
        if differ:
            # A miss: a test that fails in the full run and that the affected run did not run.
            # A test both ran, with two outcomes, is not the selection's error: attrs' hypothesis
            # tests (`@given`) draw other examples each run, and found a mutant's failing one in
            # only one of the two runs (attrs _funcs.py:232#263, test_recurse_retain).
            unrun = {n for n in differ & found if not _ran(n, planned)}
            if unrun:
                misses += 1
                missed.append(f"{file}:{start}#{index}")
            else:
                flaky.append(f"{file}:{start}#{index}: {sorted(differ)[:3]}")
    note(
        results,
        Result(
            f"{project.name}: mutations missed by affected=true",
            float(misses),
            unit="misses",
            target="0 misses",
            max_ms=0.0,
            extra={
                "failing_before": sorted(known),
                "killing_mutations": killing,
                "tried": tried,
                "hung": hung,
                "mean_fraction_selected": round(sum(fractions) / len(fractions), 4) if fractions else None,
                "missed": missed,
                "outcome_differed_in_tests_both_ran": flaky,
            },
        ),
    )


async def run(opts: Options) -> list[Result]:
    base = opts.workdir / "projects"
    base.mkdir(parents=True, exist_ok=True)
    results: list[Result] = []
    names = _wanted("BENCH_PROJECTS", tuple(p.name for p in PROJECTS))
    for project in PROJECTS:
        if project.name not in names:
            continue
        print(f"  {project.name} ...", file=sys.stderr, flush=True)
        results.extend(await bench_project(opts, base, project))
    return results
