"""`lint` over every transport, with real ruff on a real project that has its own ruff config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import ClientFactory
from tests.tools.code_analysis.conftest import MOD, call, call_error, codes_at

pytestmark = pytest.mark.anyio

EXPECTED_MOD = [
    # (line, column, end_line, end_column, code, fixable: what `fix: true` applies)
    (1, 1, 2, 10, "I001", True),
    (1, 8, 1, 11, "F401", True),
    (2, 8, 2, 10, "F401", True),
    (5, 10, 5, 11, "E702", False),
    (6, 61, 6, 65, "E501", False),
    (8, 17, 8, 21, "E711", False),  # its fix is unsafe: `fix: true` does not apply it
]


def positions(diagnostics: list[dict[str, Any]], path: str) -> list[tuple[Any, ...]]:
    return [
        (d["line"], d["column"], d["end_line"], d["end_column"], d["code"], d["fixable"])
        for d in diagnostics
        if d["path"] == path
    ]


def without_timing(result: dict[str, Any]) -> list[dict[str, Any]]:
    return list(result["diagnostics"])


async def test_project_config_is_honoured_on_every_path(mcp_client: ClientFactory, project: Path) -> None:
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            # One file: the warm ruff server.
            single = await call(client, "lint", {"paths": ["pkg/mod.py"]})
            assert single["engine"] == "ruff server"
            assert positions(single["diagnostics"], "pkg/mod.py") == EXPECTED_MOD  # sorted, 1-based
            assert single["counts"] == {"E501": 1, "E702": 1, "E711": 1, "F401": 2, "I001": 1}
            assert single["total"] == 6 and single["truncated"] is False
            first = single["diagnostics"][1]
            assert first["message"] == "`sys` imported but unused"
            assert first["url"] == "https://docs.astral.sh/ruff/rules/unused-import"

            # The per-file ignore of legacy/*.py: F401 is not reported there, on the server path...
            legacy = await call(client, "lint", {"paths": ["legacy/old.py"]})
            assert legacy["diagnostics"] == [] and legacy["files_checked"] == 1

            # ... nor for unsaved text given that file name, while another name gets it.
            text = "import json\n"
            as_legacy = await call(client, "lint", {"source": text, "filename": "legacy/new.py"})
            as_other = await call(client, "lint", {"source": text, "filename": "pkg/new.py"})
            assert as_legacy["diagnostics"] == []
            assert codes_at(as_other["diagnostics"], "pkg/new.py") == ["F401"]

            # The whole root: `ruff check` plus the cache; same answers, root-relative `/` paths.
            tree = await call(client, "lint", {})
            assert {d["path"] for d in tree["diagnostics"]} == {"pkg/mod.py"}
            assert positions(tree["diagnostics"], "pkg/mod.py") == EXPECTED_MOD
            assert tree["files_checked"] >= 4  # mod, clean, __init__, legacy/old (and pyproject.toml)


async def test_server_and_cli_paths_agree(mcp_client: ClientFactory, project: Path) -> None:
    """The CLI answers a folder first; then the server answers the same text (one comment line more)."""
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            by_cli = await call(client, "lint", {"paths": ["pkg"]})
            assert "ruff check" in by_cli["engine"]
            by_server = await call(client, "lint", {"source": MOD + "# end\n", "filename": "pkg/mod.py"})
            assert by_server["engine"] == "ruff server"
            assert without_timing(by_server) == [d for d in by_cli["diagnostics"] if d["path"] == "pkg/mod.py"]


async def test_select_and_ignore_arguments(mcp_client: ClientFactory, project: Path) -> None:
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            for paths in (["pkg/mod.py"], ["pkg"]):  # server path, then CLI path
                only = await call(client, "lint", {"paths": paths, "select": ["E501"]})
                assert [d["code"] for d in only["diagnostics"]] == ["E501"]
                # `select` replaces the project's selection: B006 (not selected there) appears.
                bugbear = await call(client, "lint", {"paths": paths, "select": ["B"]})
                assert [d["code"] for d in bugbear["diagnostics"]] == ["B006"]
                # `ignore` adds to the project's ignores; E741 stays ignored.
                ignored = await call(client, "lint", {"paths": paths, "ignore": ["F401", "I"]})
                assert sorted(ignored["counts"]) == ["E501", "E702", "E711"]
            message = await call_error(client, "lint", {"paths": ["pkg/mod.py"], "select": ["E501", "XYZ123"]})
            assert "XYZ123" in message and "select" in message
            message = await call_error(client, "lint", {"paths": ["pkg"], "ignore": ["NOPE"]})
            assert "NOPE" in message and "ignore" in message


async def test_fix_returns_a_diff_and_writes_nothing(mcp_client: ClientFactory, project: Path) -> None:
    mod = project / "pkg" / "mod.py"
    before = mod.read_bytes()
    with anyio.fail_after(60):
        async with mcp_client(project, allow_writes=True) as client:
            single = await call(client, "lint", {"paths": ["pkg/mod.py"], "fix": True})
            diff = single["fix_diff"]
            assert diff.startswith("--- a/pkg/mod.py\n+++ b/pkg/mod.py\n")
            assert "-import sys\n" in diff and "-import os\n" in diff
            assert "x is None" not in diff  # E711's fix is unsafe: not applied, as `ruff check --fix`
            tree = await call(client, "lint", {"paths": ["pkg", "legacy"], "fix": True})
            assert tree["fix_diff"] == diff and tree["fixed_files"] == 1
            clean = await call(client, "lint", {"source": "X = 1\n", "fix": True})
            assert clean["fix_diff"] == ""
    assert mod.read_bytes() == before


async def test_unchanged_files_come_from_the_cache(mcp_client: ClientFactory, project: Path) -> None:
    mod = project / "pkg" / "mod.py"
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            first = await call(client, "lint", {"paths": ["pkg/mod.py"]})
            again = await call(client, "lint", {"paths": ["pkg/mod.py"]})
            assert first["engine"] == "ruff server" and again["engine"] == "cache"
            assert again["diagnostics"] == first["diagnostics"]

            mod.write_text(MOD.replace("import os\n", ""), encoding="utf-8")
            changed = await call(client, "lint", {"paths": ["pkg/mod.py"]})
            assert changed["engine"] == "ruff server"
            assert changed["counts"]["F401"] == 1

            tree = await call(client, "lint", {})
            tree_again = await call(client, "lint", {})
            assert tree_again["engine"] == "cache"
            assert tree_again["diagnostics"] == tree["diagnostics"]

            # A new file under the tree is found and linted; the others stay cached.
            (project / "pkg" / "extra.py").write_text("import re\n", encoding="utf-8")
            grown = await call(client, "lint", {})
            assert codes_at(grown["diagnostics"], "pkg/extra.py") == ["F401"]
            assert grown["files_checked"] == tree["files_checked"] + 1


async def test_config_changes_are_picked_up(mcp_client: ClientFactory, project: Path) -> None:
    pyproject = project / "pyproject.toml"
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            assert "E501" in (await call(client, "lint", {"paths": ["pkg/mod.py"]}))["counts"]
            assert "E501" in (await call(client, "lint", {}))["counts"]
            pyproject.write_text(pyproject.read_text().replace("line-length = 60", "line-length = 100"))
            assert "E501" not in (await call(client, "lint", {"paths": ["pkg/mod.py"]}))["counts"]
            assert "E501" not in (await call(client, "lint", {}))["counts"]
            # A ruff.toml nearer to the file wins over pyproject.toml, as in ruff.
            (project / "pkg" / "ruff.toml").write_text('[lint]\nselect = ["E711"]\n')
            nested = await call(client, "lint", {"paths": ["pkg/mod.py"]})
            assert nested["counts"] == {"E711": 1}
            tree = await call(client, "lint", {})
            assert tree["counts"] == {"E711": 1}


async def test_big_results_are_cut_and_paged_through_get_run(mcp_client: ClientFactory, tmp_path: Path) -> None:
    root = tmp_path / "many"
    root.mkdir()
    (root / "pyproject.toml").write_text('[tool.ruff.lint]\nselect = ["F401"]\n')
    (root / "imports.py").write_text("".join(f"import mod{i}\n" for i in range(300)))
    with anyio.fail_after(60):
        async with mcp_client(root, output_budget=4000) as client:
            for arguments in ({"paths": ["imports.py"]}, {}):
                result = await call(client, "lint", arguments)
                assert result["truncated"] is True and result["total"] == 300
                assert result["counts"] == {"F401": 300}
                shown = result["diagnostics"]
                assert 0 < len(shown) < 300
                assert [d["line"] for d in shown] == list(range(1, len(shown) + 1))  # first ones first
                run_id = result["run_id"]
                lines: list[int] = []
                offset: int | None = 0
                while offset is not None:
                    page = await call(
                        client, "get_run", {"run_id": run_id, "section": "diagnostics", "offset": offset, "limit": 40}
                    )
                    lines += [d["line"] for d in page["items"]]
                    offset = page["next_offset"]
                assert lines == list(range(1, 301))


async def test_notebooks_go_through_the_cli_with_cell_numbers(mcp_client: ClientFactory, project: Path) -> None:
    def cell(source: str) -> dict[str, Any]:
        return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": [source]}

    notebook = {"cells": [cell("import os\n"), cell("print(y)\n")], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (project / "notes.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            for arguments in ({"paths": ["notes.ipynb"]}, {"source": json.dumps(notebook), "filename": "notes.ipynb"}):
                result = await call(client, "lint", arguments)
                found = [(d["cell"], d["line"], d["code"]) for d in result["diagnostics"]]
                assert found == [(1, 1, "F401"), (2, 1, "F821")]


async def test_fixable_means_what_fix_applies(mcp_client: ClientFactory, project: Path) -> None:
    """Issue 11 item 10: `fixable` was true for unsafe fixes that `fix: true` never applied."""
    with anyio.fail_after(90):
        async with mcp_client(project) as client:
            for paths in (["pkg/mod.py"], ["pkg"]):  # the warm server, and the CLI
                plain = await call(client, "lint", {"paths": paths, "fix": True})
                by_code = {d["code"]: d for d in plain["diagnostics"] if d["path"] == "pkg/mod.py"}
                assert by_code["F401"]["fix_applicability"] == "safe" and by_code["F401"]["fixable"] is True
                assert by_code["E711"]["fix_applicability"] == "unsafe" and by_code["E711"]["fixable"] is False
                assert by_code["E501"]["fix_applicability"] is None and by_code["E501"]["fixable"] is False
                assert "-import sys" in plain["fix_diff"] and "is None" not in plain["fix_diff"]
                assert plain["fixable_count"] == 3  # I001, F401 x2, and not E711

                unsafe = await call(client, "lint", {"paths": paths, "fix": True, "unsafe_fixes": True})
                by_code = {d["code"]: d for d in unsafe["diagnostics"] if d["path"] == "pkg/mod.py"}
                assert by_code["E711"]["fixable"] is True and by_code["E711"]["fix_applicability"] == "unsafe"
                assert "+    return x is None" in unsafe["fix_diff"] and "-import sys" in unsafe["fix_diff"]
                assert unsafe["fixable_count"] == 4
