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


# --- operator settings vs project settings (issue 9 item 4) ----------------------------------------

HOSTILE = 'transport = "websocket"\nport = 18781\nrate_limit_burst = 1000000\naudit_backups = 0\naudit_max_bytes = 1024'


def test_a_project_sets_only_project_settings_and_the_rest_is_named_and_ignored(tmp_path: Path) -> None:
    write_pyproject(tmp_path, HOSTILE + "\npage_size = 7\ncheck_max_complexity = 12\npython = '/usr/bin/python3'")
    warnings: list[str] = []
    settings = load_settings({}, environ=env_for(tmp_path), warn=warnings.append)
    assert settings.transport == "stdio"
    assert settings.port is None
    assert settings.rate_limit_burst == 100
    assert settings.audit_backups == 3
    assert settings.audit_max_bytes == 10 * 1024 * 1024
    # What a project may set, it sets.
    assert settings.page_size == 7
    assert settings.check_max_complexity == 12
    assert settings.python == Path("/usr/bin/python3")
    assert len(warnings) == 1
    for name in ("transport", "port", "rate_limit_burst", "audit_backups", "audit_max_bytes", "pyproject.toml"):
        assert name in warnings[0]
    assert "page_size" not in warnings[0]


def test_every_setting_outside_the_allow_list_is_refused_from_a_project(tmp_path: Path) -> None:
    from mcp_server.config import PROJECT_SETTINGS, Settings

    operator_only = [name for name in Settings.model_fields if name not in PROJECT_SETTINGS]
    assert {"transport", "host", "port", "token", "allowed_origins", "roots", "rate_limit_rps", "audit_log"} <= set(
        operator_only
    )
    assert {"cache_dir", "max_source_bytes", "max_message_bytes", "ruff_pool_size", "allow_writes"} <= set(
        operator_only
    )
    write_pyproject(tmp_path, "\n".join(f"{name} = 1" for name in operator_only))
    warnings: list[str] = []
    settings = load_settings({}, environ=env_for(tmp_path), warn=warnings.append)
    baseline_root = tmp_path / "clean"
    baseline_root.mkdir()
    clean = load_settings({}, environ=env_for(baseline_root), warn=warnings.append)
    assert settings.model_dump(exclude={"roots"}) == clean.model_dump(exclude={"roots"})
    assert all(name in warnings[0] for name in operator_only)


def test_a_project_cannot_erase_the_operators_audit_log(tmp_path: Path) -> None:
    import json

    import anyio

    from mcp_server.audit import AuditLog, AuditRecord

    audit = tmp_path / "state" / "audit.jsonl"
    audit.parent.mkdir()
    history = [json.dumps({"n": i, "pad": "x" * 100}) for i in range(40)]  # ~4.5 KB of the operator's history
    audit.write_text("\n".join(history) + "\n")
    write_pyproject(tmp_path, "audit_backups = 0\naudit_max_bytes = 1024")
    settings = load_settings({}, environ=env_for(tmp_path, audit_log=str(audit)), warn=[].append)
    log = AuditLog(settings.audit_log, max_bytes=settings.audit_max_bytes, backups=settings.audit_backups)
    entry = AuditRecord(AuditRecord.now(), "stdio", "run_tests", ["python"], str(tmp_path), 0, 0.1, 10)
    for _ in range(5):
        anyio.run(log.record, entry)
    kept = audit.read_text().splitlines()
    assert kept[: len(history)] == history
    assert len(kept) == len(history) + 5


def test_a_hostile_project_still_gets_a_stdio_server_that_answers_initialize(tmp_path: Path) -> None:
    """The IDE's stdio launch in the repository: the project asked for an open WebSocket on 18781."""
    import json

    write_pyproject(tmp_path, HOSTILE)
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    done = subprocess.run(
        [sys.executable, "-m", "mcp_server"],
        env=settings_env(tmp_path, tmp_path),
        cwd=tmp_path,
        input=json.dumps(initialize) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    answer = json.loads(done.stdout.splitlines()[0])
    assert answer["id"] == 1 and "serverInfo" in answer["result"]
    assert "transport" in done.stderr and "port" in done.stderr and "rate_limit_burst" in done.stderr
    assert "ignored" in done.stderr
    assert done.returncode == 0


# --- the operator's user config --------------------------------------------------------------------


def user_config(tmp_path: Path, body: str) -> dict[str, str]:
    path = tmp_path / "xdg-config" / "mcp-code-tools" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    return {"XDG_CONFIG_HOME": str(tmp_path / "xdg-config")}


def test_the_user_config_sets_anything_and_the_environment_and_flags_override_it(tmp_path: Path) -> None:
    env = env_for(tmp_path) | user_config(
        tmp_path, 'transport = "http"\nport = 9999\ntoken = "from-the-operator"\nrate-limit-burst = 7\npage_size = 5'
    )
    settings = load_settings({}, environ=env)
    assert (settings.transport, settings.port, settings.rate_limit_burst, settings.page_size) == ("http", 9999, 7, 5)
    assert settings.token is not None and settings.token.get_secret_value() == "from-the-operator"
    write_pyproject(tmp_path, "page_size = 6\nport = 1")  # the project's page size wins over the user's; port never
    settings = load_settings({"port": "8000"}, environ=env | {env_name("rate_limit_burst"): "8"}, warn=[].append)
    assert (settings.port, settings.rate_limit_burst, settings.page_size) == (8000, 8, 6)


def test_a_bad_value_in_the_user_config_names_the_file(tmp_path: Path) -> None:
    env = env_for(tmp_path) | user_config(tmp_path, "page_size = 0")
    with pytest.raises(SettingsError, match=r"page_size \(from .*config\.toml page_size\)"):
        load_settings({}, environ=env)
    env = env_for(tmp_path) | user_config(tmp_path, "page_size = = 0")
    with pytest.raises(SettingsError, match=r"config\.toml"):
        load_settings({}, environ=env)


# --- start-up errors (issue 11 item 9) -------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_token_is_refused_naming_the_variable(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError, match="MCP_CODE_TOOLS_TOKEN") as err:
        load_settings({}, environ=env_for(tmp_path, token=value))
    assert "empty" in str(err.value)


def test_an_empty_token_stops_the_server_with_exit_2(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "--transport", "http", "--host", "0.0.0.0", "--port", "0", token="")
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "MCP_CODE_TOOLS_TOKEN" in lines[0] and "empty" in lines[0]


def test_an_unknown_variable_is_warned_about_with_the_closest_setting(tmp_path: Path) -> None:
    warnings: list[str] = []
    env = env_for(tmp_path) | {"MCP_CODE_TOOLS_PAGESIZE": "5", "MCP_CODE_TOOLS_ZZZ": "1", "OTHER_PAGESIZE": "1"}
    env |= {"MCP_CODE_TOOLS_REQUIRE_REDIS": "1"}  # the test suite's own variable is not a setting, and known
    settings = load_settings({}, environ=env, warn=warnings.append)
    assert settings.page_size == 100
    assert len(warnings) == 2
    assert "MCP_CODE_TOOLS_PAGESIZE" in warnings[0] and "did you mean MCP_CODE_TOOLS_PAGE_SIZE" in warnings[0]
    assert "MCP_CODE_TOOLS_ZZZ" in warnings[1] and "did you mean" not in warnings[1]


@pytest.mark.parametrize("key", ["_cli_parse_args = true", '_secrets_dir = "/etc"', '_env_file = "/etc/passwd"'])
def test_a_project_cannot_reach_the_settings_librarys_own_arguments(tmp_path: Path, key: str) -> None:
    """pydantic-settings takes `_cli_parse_args`, `_env_file`, `_secrets_dir`... as constructor arguments: a
    table that passed them through could make the server parse its own argv (and exit) or read any file."""
    write_pyproject(tmp_path, key)
    with pytest.raises(SettingsError, match=f"unknown setting '{key.split(' ')[0]}'.*pyproject.toml"):
        load_settings({}, environ=env_for(tmp_path), warn=[].append)
    user = tmp_path / "user"
    user.mkdir()
    env = env_for(user) | user_config(tmp_path, key)
    with pytest.raises(SettingsError, match=r"config\.toml"):
        load_settings({}, environ=env)
