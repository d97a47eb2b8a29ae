"""The command line generated from `Settings`: help for every setting, --flag/--no-flag, one-line errors
that name the real flag."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_server.cli import build_parser
from mcp_server.config import PROJECT_SETTINGS, Settings, env_name, flag_name, load_settings
from tests.conftest import settings_env


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_server", *args],
        env=settings_env(tmp_path, tmp_path) | {"COLUMNS": "1000"},  # help lines unwrapped
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def parse(tmp_path: Path, *argv: str) -> Settings:
    args = build_parser().parse_args(list(argv))
    return load_settings(vars(args), environ=settings_env(tmp_path, tmp_path))


def test_help_shows_every_setting_with_description_default_choices_and_variable(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--help")
    assert done.returncode == 0
    text = re.sub(r"\s+", " ", done.stdout)
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no description"
        if name == "token":
            assert env_name("token") in text and "--token" not in text  # never on a command line
            continue
        assert flag_name(name) in text
        assert env_name(name) in text
        assert field.description in text
    assert (
        "[default: 100; allowed: >= 1, <= 10000; env MCP_CODE_TOOLS_PAGE_SIZE; a project's [tool.mcp-code-tools] "
        "may set it]"
    ) in text
    assert "[default: 600.0; allowed: > 0; env MCP_CODE_TOOLS_RUN_TIMEOUT_MAX_S]" in text
    assert "[default: 127.0.0.1; env MCP_CODE_TOOLS_HOST]" in text
    assert "{stdio,websocket,http}" in text and "{memory,redis}" in text
    assert "--allow-writes, --no-allow-writes" in text
    for name in PROJECT_SETTINGS:
        assert name in text  # the epilog lists what a project may set


def test_booleans_are_flags_and_no_flags(tmp_path: Path) -> None:
    assert parse(tmp_path).allow_writes is False
    assert parse(tmp_path, "--allow-writes").allow_writes is True
    assert parse(tmp_path, "--allow-writes", "--no-allow-writes").allow_writes is False
    assert parse(tmp_path).allow_test_execution is None  # unset stays unset: the transport decides
    assert parse(tmp_path, "--no-allow-test-execution").test_execution_allowed is False
    assert parse(tmp_path, "--transport", "http", "--allow-test-execution").test_execution_allowed is True
    assert parse(tmp_path, "--no-check-lint-clean").check_lint_clean is False


def test_lists_and_repeatable_roots(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    settings = parse(tmp_path, "--root", str(tmp_path), "--root", str(other), "--pass-env", "A, B")
    assert settings.roots == (tmp_path.resolve(), other.resolve())
    assert settings.pass_env == ("A", "B")


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--root", "/no/such/dir"], "--root"),  # it used to name a --roots flag that does not exist
        (["--page-size", "0"], "--page-size"),
        (["--transport", "carrier-pigeon"], "--transport"),
        (["--page-sise", "5"], "did you mean --page-size?"),
        (["--allow-writes=yes"], "--allow-writes"),
        (["--token", "secret"], "--token"),
    ],
)
def test_errors_are_one_line_naming_the_real_flag(tmp_path: Path, args: list[str], named: str) -> None:
    done = run_cli(tmp_path, *args)
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert named in lines[0]
    assert "--roots" not in lines[0]
