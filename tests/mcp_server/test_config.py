"""Configuration: CLI > environment > pyproject > defaults; bad values are one line and exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mcp_server.config import SettingsError, env_name, load_settings
from tests.conftest import settings_env


def write_pyproject(root: Path, body: str) -> None:
    (root / "pyproject.toml").write_text(f"[project]\nname = 'x'\n\n[tool.mcp-code-tools]\n{body}\n")


def env_for(root: Path, **values: str) -> dict[str, str]:
    env = {env_name("roots"): str(root)}
    env.update({env_name(k): v for k, v in values.items()})
    return env


def test_precedence_cli_over_env_over_pyproject_over_defaults(tmp_path: Path) -> None:
    assert load_settings({}, environ=env_for(tmp_path)).page_size == 100  # the default
    write_pyproject(tmp_path, "page_size = 7\noutput-budget = 5000")
    assert load_settings({}, environ=env_for(tmp_path)).page_size == 7
    assert load_settings({}, environ=env_for(tmp_path)).output_budget == 5000  # dashes work too
    assert load_settings({}, environ=env_for(tmp_path, page_size="8")).page_size == 8
    assert load_settings({"page_size": "9"}, environ=env_for(tmp_path, page_size="8")).page_size == 9
    # A flag that was not given (None) does not override anything.
    assert load_settings({"page_size": None}, environ=env_for(tmp_path, page_size="8")).page_size == 8


def test_the_served_project_cannot_loosen_the_policy(tmp_path: Path) -> None:
    write_pyproject(
        tmp_path,
        'allow_test_execution = true\nallow_writes = true\ntoken = "from-the-repo"\npass_env = ["HOME_SECRET"]\n'
        'audit_log = "/tmp/elsewhere.jsonl"\nallowed_origins = ["http://evil.example"]\nhost = "0.0.0.0"',
    )
    settings = load_settings({"transport": "websocket"}, environ=env_for(tmp_path))
    assert settings.test_execution_allowed is False
    assert settings.allow_writes is False
    assert settings.token is None
    assert settings.pass_env == ()
    assert settings.allowed_origins == ()
    assert settings.host == "127.0.0.1"
    assert settings.audit_log != Path("/tmp/elsewhere.jsonl")


def test_test_execution_defaults_by_transport(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    assert load_settings({}, environ=env).test_execution_allowed is True
    assert load_settings({"transport": "websocket"}, environ=env).test_execution_allowed is False
    assert load_settings({"transport": "http"}, environ=env).test_execution_allowed is False
    explicit = env_for(tmp_path, allow_test_execution="true")
    assert load_settings({"transport": "http"}, environ=explicit).test_execution_allowed is True
    off = env_for(tmp_path, allow_test_execution="false")
    assert load_settings({}, environ=off).test_execution_allowed is False


def test_lists_and_paths_from_the_environment(tmp_path: Path) -> None:
    other = tmp_path / "b"
    other.mkdir()
    env = {
        env_name("roots"): f"{tmp_path}:{other}",
        env_name("pass_env"): "DATABASE_URL, , DJANGO_SETTINGS_MODULE",
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }
    settings = load_settings({}, environ=env)
    assert settings.roots == (tmp_path.resolve(), other.resolve())
    assert settings.pass_env == ("DATABASE_URL", "DJANGO_SETTINGS_MODULE")


def test_the_default_audit_log_is_under_the_state_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    settings = load_settings({}, environ=env_for(tmp_path))
    assert settings.audit_log == tmp_path / "state" / "mcp-code-tools" / "audit.jsonl"


@pytest.mark.parametrize(
    ("source", "setting"),
    [
        ("env", "page_size"),
        ("cli", "page_size"),
        ("pyproject", "page_size"),
        ("env", "rate_limit_rps"),
        ("env", "rate_limit_store"),
        ("env", "redis_url"),
        ("env", "max_concurrent_runs"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting_and_its_source(tmp_path: Path, source: str, setting: str) -> None:
    bad = {"redis_url": "http://cache:6379", "rate_limit_store": "memcached"}.get(setting, "0")
    cli: dict[str, str] = {}
    env = env_for(tmp_path)
    if source == "env":
        env[env_name(setting)] = bad
    elif source == "cli":
        cli[setting] = bad
    else:
        write_pyproject(tmp_path, f"{setting} = {bad}")
    with pytest.raises(SettingsError) as err:
        load_settings(cli, environ=env)
    message = str(err.value)
    assert "\n" not in message
    assert setting in message
    expected_source = {"env": env_name(setting), "cli": "--" + setting.replace("_", "-"), "pyproject": "[tool."}
    assert expected_source[source] in message


def test_unknown_keys_in_pyproject_are_named(tmp_path: Path) -> None:
    write_pyproject(tmp_path, "page_sizes = 3")
    with pytest.raises(SettingsError, match="unknown setting 'page_sizes'"):
        load_settings({}, environ=env_for(tmp_path))


def test_a_root_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="roots"):
        load_settings({}, environ=env_for(tmp_path / "missing"))


def test_settings_are_frozen(tmp_path: Path) -> None:
    settings = load_settings({}, environ=env_for(tmp_path))
    with pytest.raises(ValidationError):
        settings.page_size = 3  # type: ignore[misc]


# --- the command line, in a real process ---------------------------------------------------------


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mcp_server", *args],
        env=settings_env(tmp_path, tmp_path, **env),
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--page-size", "0"], {}, "page_size"),
        ([], {"page_size": "lots"}, "page_size"),
        (["--rate-limit-burst", "-1"], {}, "rate_limit_burst"),
        (["--transport", "carrier-pigeon"], {}, "transport"),
    ],
)
def test_bad_settings_exit_2_with_one_line(tmp_path: Path, args: list[str], env: dict[str, str], named: str) -> None:
    done = run_cli(tmp_path, *args, **env)
    assert done.returncode == 2
    assert done.stdout == ""  # nothing but protocol on stdout, and there is no protocol
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("transport", ["websocket", "http"])
def test_a_network_bind_beyond_loopback_without_a_token_is_refused(tmp_path: Path, transport: str) -> None:
    done = run_cli(tmp_path, "--transport", transport, "--host", "0.0.0.0", "--port", "0")
    assert done.returncode == 2
    assert "MCP_CODE_TOOLS_TOKEN" in done.stderr and "0.0.0.0" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""
