"""Bad input to the code-analysis tools: a clear `isError` result (or a diagnostic), and the server keeps serving."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from tests.conftest import ClientFactory
from tests.tools.code_analysis.conftest import call, call_error

pytestmark = pytest.mark.anyio

TOOLS = ("lint", "format_check", "analyze")


async def test_bad_input_gets_clear_errors(mcp_client: ClientFactory, project: Path, tmp_path: Path) -> None:
    (project / "data.py").write_bytes(b"\x00\x01\x02binary\xff")
    (project / "latin1.py").write_bytes("x = 'caf\xe9'\n".encode("latin-1"))
    outside = tmp_path / "outside.py"
    outside.write_text("x = 1\n")
    cases = [
        ({"paths": [str(outside)]}, "outside every allowed root"),
        ({"paths": ["../outside.py"]}, "outside every allowed root"),
        ({"paths": ["missing.py"]}, "does not exist"),
        ({"paths": ["data.py"]}, "not a text file"),
        ({"paths": ["latin1.py"]}, "not UTF-8"),
        ({"source": "x = 1\n", "filename": "pkg"}, "is a directory"),
        ({"source": "x = 1\n", "filename": "../elsewhere.py"}, "outside every allowed root"),
        ({"source": "x = 1\n", "paths": ["pkg"]}, "not both"),
        ({"filename": "pkg/mod.py"}, "pass it in `paths`"),
        ({"source": "x" * 3000}, "over the limit of 2048 (setting max_source_bytes)"),
        ({"paths": "pkg"}, "paths"),
        ({"root": str(tmp_path)}, "outside every allowed root"),
    ]
    with anyio.fail_after(60):
        async with mcp_client(project, max_source_bytes=2048) as client:
            for tool in TOOLS:
                for arguments, expected in cases:
                    message = await call_error(client, tool, arguments)
                    assert expected in message, (tool, arguments, message)
            message = await call_error(client, "lint", {"paths": ["pkg"], "select": ["NOT_A_RULE"]})
            assert "select" in message  # rejected by the argument schema (a selector is letters and digits)
            message = await call_error(client, "lint", {"paths": ["pkg/mod.py"], "select": ["ZZZ9"]})
            assert "unknown rule selector 'ZZZ9' in select" in message
            # A syntax error is a diagnostic, not a failure.
            result = await call(client, "lint", {"source": "def f(:\n    pass\n"})
            assert {d["code"] for d in result["diagnostics"]} == {"invalid-syntax"}
            assert result["diagnostics"][0]["line"] == 1
            # ... and the server keeps serving.
            ok = await call(client, "lint", {"paths": ["pkg/mod.py"]})
            assert ok["total"] == 6


async def test_a_broken_project_config_is_a_clear_error_until_fixed(mcp_client: ClientFactory, project: Path) -> None:
    pyproject = project / "pyproject.toml"
    good = pyproject.read_text()
    with anyio.fail_after(60):
        async with mcp_client(project) as client:
            assert (await call(client, "lint", {"paths": ["pkg/mod.py"]}))["total"] == 6
            pyproject.write_text(good.replace("line-length = 60", 'line-length = "sixty"'))
            for tool, arguments in [
                ("lint", {"paths": ["pkg/mod.py"]}),  # the warm server notices, and defers to the CLI
                ("lint", {"source": "import os\n", "filename": "pkg/new.py"}),
                ("lint", {}),
                ("format_check", {"paths": ["pkg/mod.py"]}),
                ("format_check", {"paths": ["pkg"]}),
            ]:
                message = await call_error(client, tool, arguments)
                assert "pyproject.toml" in message and "line 6" in message, (tool, message)
            pyproject.write_text(good)
            assert (await call(client, "lint", {"paths": ["pkg/mod.py"]}))["total"] == 6
            assert (await call(client, "lint", {}))["total"] == 6
