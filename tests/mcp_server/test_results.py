"""The one result pipeline: redaction at egress, one cut per stored result, paging inside an item,
and the run log's exact cap. In process, with tools of the test's own."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp.client import Client
from pydantic import Field

from mcp_server import output
from mcp_server.api import ToolArgs, ToolContext, ToolError, ToolOutput, ToolSpec
from mcp_server.builtin_tools import load_builtin_tools
from mcp_server.redact import REDACTED, WITHHELD, Redactor
from mcp_server.results import NOT_KEPT
from mcp_server.runs import RunLog
from mcp_server.server import CodeToolsServer, default_loaders
from mcp_server.transports.memory import memory_transport
from tests.conftest import make_settings

pytestmark = pytest.mark.anyio

GHP = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"
AKIA = "AKIAIOSFODNN7EXAMPLE"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0." + "Q" * 700
SECRETS = [GHP, AKIA, "hunter2quoted", "hunter2json", "tok9secret", JWT[-40:], "ghp_a1B2c3"]


class Args(ToolArgs):
    n: int = Field(default=0, ge=0)


def secret_result(n: int) -> dict[str, Any]:
    items = [
        {
            "nodeid": f"tests/test_x.py::test_p[{GHP}]",
            "i": i,
            "ok": True,
            "score": 1.5,
            "none": None,
            "message": "A" * 470 + GHP + "B" * 2600,  # clipping must not cut the token in half
            "nested": {"password = 'hunter2quoted'": [1, '{"password": "hunter2json"}', f"token={JWT}"]},
        }
        for i in range(n)
    ]
    return {"status": "failed", "count": n, "note": f"key {AKIA}", "items": items}


async def secrets_tool(ctx: ToolContext, args: Args) -> ToolOutput:
    await ctx.progress(1, 2, f"tests/test_x.py::test_p[{GHP}] passed")
    return ToolOutput(secret_result(args.n), pageable=("items",))


async def failing_tool(ctx: ToolContext, args: Args) -> ToolOutput:
    raise ToolError(f"list_tests: timed out while running tests/t.py::test[{AKIA}]")


async def diff_tool(ctx: ToolContext, args: Args) -> ToolOutput:
    diff = "".join(f"-line {i}\n+line  {i}\n" for i in range(args.n))
    files = [{"path": "big.py", "changed": True, "diff": diff}]
    return ToolOutput({"changed_count": 1, "files_checked": 1, "truncated": False, "files": files}, pageable=("files",))


def loaders() -> list[Any]:
    def extra() -> list[ToolSpec[Any]]:
        return [
            ToolSpec(name="secrets", title="S", description="Secrets everywhere.", args=Args, handler=secrets_tool),
            ToolSpec(name="failing", title="F", description="Fails.", args=Args, handler=failing_tool),
            ToolSpec(name="diff", title="D", description="One huge item.", args=Args, handler=diff_tool),
        ]

    return [load_builtin_tools, extra]


@asynccontextmanager
async def serve(tmp_path: Path, **settings: Any) -> AsyncIterator[CodeToolsServer]:
    app = CodeToolsServer(make_settings(tmp_path, tmp_path, **settings), loaders=loaders())
    async with app.running():
        yield app


def structured(result: types.CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def text_of(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


def assert_clean(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# --- redaction at egress ---------------------------------------------------------------------


async def test_every_string_of_a_result_is_redacted_and_the_shape_kept(tmp_path: Path) -> None:
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    with anyio.fail_after(30):
        async with serve(tmp_path, output_budget=200_000) as app, Client(memory_transport(app)) as client:
            result = await client.call_tool("secrets", {"n": 3}, progress_callback=on_progress)
            data = structured(result)
            assert data["truncated"] is False and "run_id" not in data
            item = data["items"][0]
            assert item["i"] == 0 and item["ok"] is True and item["score"] == 1.5 and item["none"] is None
            assert item["nodeid"] == f"tests/test_x.py::test_p[{REDACTED}]"
            assert list(item["nested"]) == [f"password = '{REDACTED}'"]
            assert item["nested"][f"password = '{REDACTED}'"][0] == 1
            assert data["note"] == f"key {REDACTED}"
            assert_clean(json.dumps(data), text_of(result), *messages)
            assert messages and REDACTED in messages[0]
            error = await client.call_tool("failing", {})
            assert error.is_error and REDACTED in text_of(error)
            assert_clean(text_of(error))


async def test_a_cut_result_redacts_before_clipping_and_pages_redacted(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with serve(tmp_path, output_budget=4000) as app, Client(memory_transport(app)) as client:
            result = await client.call_tool("secrets", {"n": 40})
            data = structured(result)
            assert data["truncated"] is True and data["count"] == 40 and data["omitted"]["items"] > 0
            assert len(text_of(result)) <= 4000
            assert_clean(json.dumps(data), text_of(result))  # no half token ("ghp_a1B2c3") either
            run_id = data["run_id"]
            page = structured(await client.call_tool("get_run", {"run_id": run_id, "section": "items", "limit": 3}))
            summary = structured(await client.call_tool("get_run", {"run_id": run_id}))
            body = await client.read_resource(f"run://{run_id}", cache_mode="bypass")
            body_text = body.contents[0].text  # type: ignore[union-attr]
            assert_clean(json.dumps(page), json.dumps(summary), body_text)
            assert json.loads(body_text)["result"]["items"][39]["i"] == 39  # the resource keeps the shape
            assert len(app.app.runs) == 1  # pages and summaries never make a run of their own


async def test_get_run_summary_is_cut_once_per_stored_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real_cut = output.cut

    def counting_cut(full: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += len(full.get("items", [])) == 40  # a cut of the whole result (not of a small answer)
        return real_cut(full, *args, **kwargs)

    monkeypatch.setattr("mcp_server.results.cut", counting_cut)
    with anyio.fail_after(30):
        async with serve(tmp_path, output_budget=4000) as app, Client(memory_transport(app)) as client:
            first = structured(await client.call_tool("secrets", {"n": 40}))
            assert calls == 1
            summaries = [structured(await client.call_tool("get_run", {"run_id": first["run_id"]})) for _ in range(5)]
            assert calls == 1  # the answer's cut is the summary's
            assert all(s == first for s in summaries)


# --- an item larger than a page ------------------------------------------------------------


async def test_an_item_larger_than_a_page_is_shown_clipped_and_paged_inside(tmp_path: Path) -> None:
    """format_check of one 3,000-line unformatted file used to show 0 files, and get_run(files)
    answered the same clipped diff under a new run_id for ever."""
    with anyio.fail_after(30):
        async with serve(tmp_path, output_budget=5000) as app, Client(memory_transport(app)) as client:
            data = structured(await client.call_tool("diff", {"n": 3000}))
            assert data["truncated"] is True
            assert [f["path"] for f in data["files"]] == ["big.py"]  # the file is shown, its diff clipped
            full_diff = "".join(f"-line {i}\n+line  {i}\n" for i in range(3000))
            assert data["clipped"] == {"files/0/diff": len(full_diff)}
            run_id = data["run_id"]
            page = structured(await client.call_tool("get_run", {"run_id": run_id, "section": "files"}))
            assert page["run_id"] == run_id and page["next_offset"] is None and page["total"] == 1
            assert page["items"][0]["path"] == "big.py" and "files/0/diff" in page["clipped"]
            text = ""
            offset: int | None = 0
            while offset is not None:
                chunk = structured(
                    await client.call_tool("get_run", {"run_id": run_id, "section": "files/0/diff", "offset": offset})
                )
                assert chunk["run_id"] == run_id
                text += chunk["text"]
                offset = chunk["next_offset"]
            assert text == full_diff
            assert len(app.app.runs) == 1


async def test_unknown_section_paths_are_a_clear_error(tmp_path: Path) -> None:
    async with serve(tmp_path, output_budget=5000) as app, Client(memory_transport(app)) as client:
        run_id = structured(await client.call_tool("diff", {"n": 3000}))["run_id"]
        for section in ("files/7/diff", "files/0/nope", "nope/0"):
            bad = await client.call_tool("get_run", {"run_id": run_id, "section": section})
            assert bad.is_error and "sections:" in text_of(bad)


# --- the run log --------------------------------------------------------------------------------


def test_run_log_is_capped_exactly_keeping_head_and_tail() -> None:
    for cap in (256, 1000, 4096, 10_000):
        log = RunLog(cap, Redactor([]))
        for i in range(3000):
            log.write(f"line {i:04d} é€\n")
        text = log.text()
        assert len(text.encode("utf-8")) <= cap
        assert text.startswith("line 0000")
        assert text.endswith("line 2999 é€\n")
        assert "characters dropped" in text
        head, _, rest = text.partition("\n[... ")
        dropped = int(rest.split(" ", 1)[0])
        tail = rest.split("...]\n", 1)[1]
        assert len(head) + dropped + len(tail) == log.total  # says exactly what was cut


def test_run_log_below_its_cap_is_whole() -> None:
    log = RunLog(10_000, Redactor([]))
    log.write("short\n")
    assert log.text() == "short\n"


def test_run_log_redacts_a_secret_split_across_writes_and_never_cuts_one() -> None:
    log = RunLog(2048, Redactor([]))
    log.write("x" * 500 + "\ntoken: " + GHP[:10])
    assert GHP[:10] not in log.text()  # what redaction still holds back is shown redacted
    log.write(GHP[10:] + "\n")
    for _ in range(2000):
        log.write(f"output {GHP}\n")
    text = log.text()
    assert GHP not in text and "ghp_a1B2" not in text
    assert len(text.encode()) <= 2048


# --- a project with secrets in every form, through the real tools --------------------------------

TREE_SECRETS = {
    "params": "AKIAIOSFODNN7EXAMPLE",
    "ghp": "ghp_Z9y8X7w6V5u4T3s2R1q0P9o8N7m6L5k4J3i2",
    "assert": "hunter2hunter2",
    "printed": "hunter2printed",
    "dict_token": "tok9secretvalue",
    "dict_password": "p4ssw0rdvalue",
    "quoted": "hunter2quoted",
    "django": "django-insecure-k3y9",
    "config": "apikeyvalue123",
    "env": "wJalrXUtnFEMIK7MDENGbPxRfiCYzz",
    "long": "ghp_L0ngL0ngL0ngL0ngL0ngL0ngL0ngL0ngL0ng",
    "key_body": "MIIEowIBAAKCAQEAk3yb0dyL1ne",
}
TREE = {
    "pyproject.toml": (
        f'[tool.ruff.lint]\nselect = ["B011", "F401", "E711"]\n\n[tool.myapp]\napi_key = "{TREE_SECRETS["config"]}"\n'
    ),
    "app/__init__.py": "",
    "app/settings.py": (
        "import os\n"
        f'KEY  =  "{TREE_SECRETS["params"]}"\n'
        f"SECRET_KEY = '{TREE_SECRETS['django']}'\n"
        f"password = '{TREE_SECRETS['quoted']}'\n"
        f'ENV_LINE = "AWS_SECRET_ACCESS_KEY={TREE_SECRETS["env"]}"\n'
        "if KEY == None:\n    pass\n"
    ),
    "app/keys.py": (
        f"KEY  =  '''-----BEGIN RSA PRIVATE KEY-----\n{TREE_SECRETS['key_body']}\n-----END RSA PRIVATE KEY-----'''\n"
    ),
    "tests/test_secrets.py": (
        "import pytest\n\n\n"
        f"@pytest.mark.parametrize('value', ['{TREE_SECRETS['params']}', '{TREE_SECRETS['ghp']}'])\n"
        "def test_param(value):\n"
        f"    print('password={TREE_SECRETS['printed']}')\n"
        "    assert value == 'x'\n\n\n"
        "def test_assert_message():\n"
        f'    assert False, "password={TREE_SECRETS["assert"]}"\n\n\n'
        "def test_dict():\n"
        f'    assert {{"token": "{TREE_SECRETS["dict_token"]}",'
        f' "password": "{TREE_SECRETS["dict_password"]}"}} == {{}}\n'
        "\n\n"
        "def test_long_message():\n"
        f'    raise AssertionError("A" * 470 + "{TREE_SECRETS["long"]}" + "B" * 2600)\n'
    ),
}


def assert_no_tree_secret(where: str, text: str) -> None:
    for name, secret in TREE_SECRETS.items():
        assert secret not in text, f"{name} in {where}"
        if name == "long":
            assert secret[:14] not in text, f"half of {name} in {where}"


async def test_no_secret_leaves_by_any_channel(tmp_path: Path) -> None:
    import shutil
    import sys

    root = tmp_path / "proj"
    for rel, text in TREE.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    messages: list[str] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message or "")

    seen: list[tuple[str, str]] = []
    app = CodeToolsServer(make_settings(root, tmp_path, output_budget=6000))
    with anyio.fail_after(120):
        async with Client(memory_transport(app)) as client:
            lint = await client.call_tool("lint", {})
            seen.append(("lint", json.dumps(lint.structured_content) + text_of(lint)))
            assert not lint.is_error, text_of(lint)
            fixed = await client.call_tool("lint", {"fix": True, "unsafe_fixes": True})
            seen.append(("lint fix", json.dumps(fixed.structured_content) + text_of(fixed)))
            fix_diff = (fixed.structured_content or {}).get("fix_diff", "")
            fmt = await client.call_tool("format_check", {})
            seen.append(("format_check", json.dumps(fmt.structured_content) + text_of(fmt)))
            listed = await client.call_tool("list_tests", {})
            seen.append(("list_tests", json.dumps(listed.structured_content) + text_of(listed)))
            ran = await client.call_tool("run_tests", {}, progress_callback=on_progress)
            data = structured(ran)
            seen.append(("run_tests", json.dumps(data) + text_of(ran)))
            run_id = data["run_id"]
            picked = f"tests/test_secrets.py::test_param[{TREE_SECRETS['params']}]"
            one = await client.call_tool("run_tests", {"select": [picked]})  # a secret in the argv
            seen.append(("run_tests select", json.dumps(one.structured_content) + text_of(one)))
            assert structured(one)["counts"]["failed"] == 1
            for section in ("summary", "log", "failures"):
                page = await client.call_tool("get_run", {"run_id": run_id, "section": section})
                seen.append((f"get_run {section}", json.dumps(page.structured_content) + text_of(page)))
            for uri in (f"run://{run_id}", f"run://{run_id}/log"):
                body = await client.read_resource(uri, cache_mode="bypass")
                seen.append((uri, body.contents[0].text))  # type: ignore[union-attr]
    seen.append(("progress", "\n".join(messages)))
    audit = (tmp_path / "audit.jsonl").read_text()
    assert f"test_param[{REDACTED}]" in audit  # the selected node id, audited redacted
    seen.append(("audit", audit))
    for where, text in seen:
        assert_no_tree_secret(where, text)
    # lint succeeds with ruff's own diagnostics (B011 in the test file's assert False, E711, F401).
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff is not None
    raw = await anyio.run_process([ruff, "check", "--output-format", "json", "--no-cache", "."], cwd=root, check=False)
    records = json.loads(raw.stdout)
    expected = sorted((Path(d["filename"]).relative_to(root).as_posix(), d["code"]) for d in records)
    got = sorted((d["path"], d["code"]) for d in (lint.structured_content or {})["diagnostics"])
    assert got == expected and ("tests/test_secrets.py", "B011") in got
    # The fix diff is ruff's real fix (B011 and F401), and never turns a value into [REDACTED].
    assert "+    raise AssertionError(" in fix_diff and "-import os" in fix_diff
    changed = [line for line in fix_diff.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert sum(REDACTED in line for line in changed if line[0] == "-") == sum(
        REDACTED in line for line in changed if line[0] == "+"
    )
    # format_check: the diff redacts the secret line identically on both sides.
    diff = next(f["diff"] for f in (fmt.structured_content or {})["files"] if f["path"] == "app/settings.py")
    assert f'-KEY  =  "{REDACTED}"' in diff and f'+KEY = "{REDACTED}"' in diff
    key_diff = next(f["diff"] for f in (fmt.structured_content or {})["files"] if f["path"] == "app/keys.py")
    assert WITHHELD in key_diff  # a hunk holding a private key is withheld, not cut across lines
    # Failures, node ids and the run's counts are all there, only the values are gone.
    assert data["counts"]["failed"] == 5
    assert any(REDACTED in f["nodeid"] for f in data["failures"])


async def test_timeout_messages_name_the_test_redacted(tmp_path: Path) -> None:
    root = tmp_path / "hang"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_hang.py").write_text(
        "import time\nimport pytest\n\n\n"
        f"@pytest.mark.parametrize('key', ['{AKIA}'])\n"
        "def test_hang(key):\n    time.sleep(60)\n"
    )
    app = CodeToolsServer(make_settings(root, tmp_path))
    with anyio.fail_after(90):
        async with Client(memory_transport(app)) as client:
            result = await client.call_tool("run_tests", {"timeout_s": 3})
            data = structured(result)
            assert data["status"] == "timeout"
            text = json.dumps(data) + text_of(result)
            assert f"test_hang[{REDACTED}]" in text and AKIA not in text
            log = await client.call_tool("get_run", {"run_id": data["run_id"], "section": "log"})
            assert AKIA not in json.dumps(log.structured_content)


def test_run_log_tail_is_redacted_when_read_and_keys_across_the_head_stay_hidden() -> None:
    body = "".join(f"MIIEvQIBADANBgkqhkiG9w0BAQEFAASC{i:06d}\n" for i in range(200))
    log = RunLog(8192, Redactor([]))
    log.write("x" * 3000 + "\n")
    log.write("-----BEGIN PRIVATE KEY-----\n" + body[:2000])  # the key starts in the head
    for i in range(2000):
        log.write(f"after {i}\n")  # no END line: the rest is the key's, redacted to the end
    assert "MIIEvQ" not in log.text() and "after 1999" not in log.text()
    log = RunLog(8192, Redactor([]))
    for i in range(5000):
        log.write(f"noise line {i}\n")  # the head fills; the tail is kept raw
    log.write(f"password = 'hunter2quoted'\n{GHP}\n-----BEGIN RSA PRIVATE KEY-----\n{body}")
    log.write("-----END RSA PRIVATE KEY-----\nlast line\n")
    text = log.text()
    assert "hunter2quoted" not in text and GHP not in text and "MIIEvQ" not in text
    assert text.endswith(f"{REDACTED}\nlast line\n") and len(text.encode()) <= 8192


# --- output.cut / page_items / resolve -----------------------------------------------------------


@pytest.mark.parametrize("budget", [1000, 3000, 20_000])
@pytest.mark.parametrize("shape", ["many-small", "few-huge", "mixed", "strings"])
def test_cut_always_fits_keeps_scalars_and_first_items(budget: int, shape: str) -> None:
    from mcp_server.output import cut, size_of

    full: dict[str, Any] = {"status": "failed", "total": 7, "flag": True}
    if shape in ("many-small", "mixed"):
        full["diagnostics"] = [{"line": i, "code": "F401", "message": f"unused {i}"} for i in range(5000)]
    if shape in ("few-huge", "mixed"):
        full["files"] = [{"path": f"f{i}.py", "diff": "+x\n" * 20_000} for i in range(3)]
    if shape == "strings":
        full["fix_diff"] = "-a\n+b\n" * 50_000
        full["slowest"] = [{"nodeid": f"t{i}", "duration_s": 0.1} for i in range(10)]
    result = cut(full, budget, pageable=("diagnostics", "files"))
    value = result.value
    assert result.truncated and value["truncated"] is True
    assert size_of(value) <= budget
    assert {k: value[k] for k in ("status", "total", "flag")} == {"status": "failed", "total": 7, "flag": True}
    for key in ("diagnostics", "files"):
        if key in value:
            shown = value[key]
            for item, original in zip(shown, full[key], strict=False):  # the first ones, in order
                assert item.keys() == original.keys()
                for k, v in original.items():
                    got = item[k]
                    assert got == v or (isinstance(v, str) and got.endswith("…[truncated]") and v.startswith(got[:-12]))
            assert value.get("omitted", {}).get(key, 0) == len(full[key]) - len(shown)
    if shape == "few-huge" and budget >= 3000:
        assert len(value["files"]) >= 1 and "files/0/diff" in value["clipped"]  # shown, clipped
    assert result.full_size >= size_of(full) * 0.8


def test_cut_redacts_before_it_clips() -> None:
    from mcp_server.output import cut

    red = Redactor([])
    full = {"failures": [{"message": "A" * 470 + GHP + "B" * 2600} for _ in range(50)]}
    value = cut(full, 2000, redact=red.redact_value).value
    assert "ghp_" not in json.dumps(value) and value["failures"]


def test_a_result_that_fits_is_only_redacted() -> None:
    from mcp_server.output import cut

    full = {"items": [1, 2, 3], "note": f"token={GHP}", "truncated": False}
    result = cut(full, 20_000, redact=Redactor([]).redact_value)
    assert result.value == {"items": [1, 2, 3], "note": f"token={REDACTED}", "truncated": False}
    assert not result.truncated


def test_resolve_sections() -> None:
    from mcp_server.output import resolve

    result = {"files": [{"diff": "d0"}, {"diff": "d1"}], "phases/lint/diagnostics": [{"m": "x"}], "n": 1}
    assert resolve(result, "files") == result["files"]
    assert resolve(result, "files/1/diff") == "d1"
    assert resolve(result, "phases/lint/diagnostics") == [{"m": "x"}]
    assert resolve(result, "phases/lint/diagnostics/0/m") == "x"
    for missing in ("files/2/diff", "files/x", "nope", "n/0", "files/0/diff/3"):
        assert resolve(result, missing) is None


async def test_crash_messages_name_the_test_redacted(tmp_path: Path) -> None:
    root = tmp_path / "crash"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_crash.py").write_text(
        "import os\nimport pytest\n\n\n"
        f"@pytest.mark.parametrize('key', ['{AKIA}'])\n"
        "def test_dies(key):\n    os._exit(3)\n"
    )
    app = CodeToolsServer(make_settings(root, tmp_path))
    with anyio.fail_after(90):
        async with Client(memory_transport(app)) as client:
            crashed = await client.call_tool("run_tests", {})
            data = structured(crashed)
            assert data["status"] == "crashed"
            text = json.dumps(data) + text_of(crashed)
            assert f"test_dies[{REDACTED}]" in text and AKIA not in text


# --- a result the caller's run-store caps cannot keep is still an answer ------------------------


async def hold_tool(ctx: ToolContext, args: Args) -> ToolOutput:
    """Leaves a run of the caller running (as a background run_tests would)."""
    run = ctx.new_run()
    return ToolOutput({"run_id": run.run_id, "status": "running"})


def many_diagnostics(root: Path) -> None:
    root.mkdir()
    for i in range(20):
        (root / f"m{i}.py").write_text("".join(f"import os{j}\n" for j in range(100)))


def assert_first_page_without_run(result: types.CallToolResult, why: str) -> dict[str, Any]:
    data = structured(result)
    assert data["truncated"] is True and "run_id" not in data
    assert data["total"] == 2000 and data["diagnostics"] and data["omitted"]["diagnostics"] > 0
    assert data["diagnostics"][0]["code"] == "F401"
    note = data[NOT_KEPT]
    assert "could not be kept" in note and why in note
    assert "get_run(" not in text_of(result)  # the answer never points at a run that does not exist
    return data


async def test_a_result_over_the_callers_byte_cap_is_answered_with_its_first_page(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    many_diagnostics(root)
    settings = make_settings(root, tmp_path, output_budget=6000, max_run_bytes_per_owner=20_000)
    app = CodeToolsServer(settings)
    with anyio.fail_after(60):
        async with Client(memory_transport(app)) as client:
            lint = await client.call_tool("lint", {})
            assert_first_page_without_run(lint, "max_run_bytes_per_owner")
            assert len(app.app.runs) == 0  # nothing half-kept


async def test_a_result_when_all_the_callers_runs_are_running_is_answered_with_its_first_page(
    tmp_path: Path,
) -> None:
    root = tmp_path / "proj"
    many_diagnostics(root)

    def extra() -> list[ToolSpec[Any]]:
        return [ToolSpec(name="hold", title="H", description="Holds a run.", args=Args, handler=hold_tool)]

    settings = make_settings(root, tmp_path, output_budget=6000, max_runs_per_owner=1)
    app = CodeToolsServer(settings, loaders=[*default_loaders(), extra])
    with anyio.fail_after(60):
        async with Client(memory_transport(app)) as client:
            held = structured(await client.call_tool("hold", {}))
            lint = await client.call_tool("lint", {})  # Busy when making its run: was an error
            assert_first_page_without_run(lint, "still running")
            assert held["status"] == "running" and len(app.app.runs) == 1  # the held run is untouched


async def test_a_large_result_is_never_serialized_whole_by_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sized (sampled estimate), stored (memory estimate) and cut without one json.dumps of it."""
    root = tmp_path / "proj"
    many_diagnostics(root)
    real = json.dumps
    whole: list[int] = []

    def counting(value: Any, *args: Any, **kwargs: Any) -> str:
        if isinstance(value, dict) and len(value.get("diagnostics") or ()) == 2000:
            whole.append(1)
        return real(value, *args, **kwargs)

    app = CodeToolsServer(make_settings(root, tmp_path, output_budget=6000))
    with anyio.fail_after(60):
        async with Client(memory_transport(app)) as client:
            monkeypatch.setattr(json, "dumps", counting)
            data = structured(await client.call_tool("lint", {}))
            monkeypatch.setattr(json, "dumps", real)
            assert data["truncated"] is True and data["run_id"]
    assert whole == []


async def test_a_test_run_over_the_callers_byte_cap_is_answered_not_an_error(tmp_path: Path) -> None:
    """run_tests stores its own result: over max_run_bytes_per_owner it is kept cut (first failures,
    counts, status, a not_kept note), and the run (its log) survives; it was a 'too large' error."""
    root = tmp_path / "proj"
    (root / "tests").mkdir(parents=True)
    (root / "tests" / "test_many.py").write_text(
        "import pytest\n\n\n@pytest.mark.parametrize('i', range(60))\n"
        "def test_fails(i):\n    assert 'x' * 300 == str(i)\n"
    )
    settings = make_settings(root, tmp_path, output_budget=6000, max_run_bytes_per_owner=16 * 1024, max_log_bytes=4096)
    app = CodeToolsServer(settings)
    with anyio.fail_after(120):
        async with Client(memory_transport(app)) as client:
            ran = await client.call_tool("run_tests", {})
            data = structured(ran)
            assert data["status"] == "failed" and data["counts"]["failed"] == 60
            assert data["truncated"] is True and 0 < len(data["failures"]) < 60
            assert "could not be kept" in data[NOT_KEPT] and "max_run_bytes_per_owner" in data[NOT_KEPT]
            log = structured(await client.call_tool("get_run", {"run_id": data["run_id"], "section": "log"}))
            assert log["total"] > 0


async def own_run_tool(ctx: ToolContext, args: Args) -> ToolOutput:
    """Like check: stores its full result in its own run and answers a summary of it."""
    run = ctx.new_run()
    result = secret_result(args.n)
    ctx.runs.store(run, summary={"status": result["status"]}, result=result)
    ctx.runs.finish(run)
    return ToolOutput({"status": result["status"], "count": result["count"]}, run=run)


async def test_a_tools_own_run_kept_cut_says_so_in_the_answer(tmp_path: Path) -> None:
    def extra() -> list[ToolSpec[Any]]:
        return [ToolSpec(name="own", title="O", description="Own run.", args=Args, handler=own_run_tool)]

    app = CodeToolsServer(
        make_settings(tmp_path, tmp_path, output_budget=6000, max_run_bytes_per_owner=32 * 1024),
        loaders=[load_builtin_tools, extra],
    )
    with anyio.fail_after(30):
        async with Client(memory_transport(app)) as client:
            data = structured(await client.call_tool("own", {"n": 200}))
            assert data["status"] == "failed" and data["count"] == 200 and data["run_id"]
            assert "could not be kept" in data[NOT_KEPT] and "items:" in data[NOT_KEPT]
            page = structured(await client.call_tool("get_run", {"run_id": data["run_id"], "section": "items"}))
            assert 0 < page["total"] < 200
            assert_clean(json.dumps(data), json.dumps(page))
