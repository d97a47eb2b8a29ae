"""Settings: one frozen pydantic model, filled from defaults < pyproject < environment < CLI flags.

Every setting has one name, used in three spellings: `page_size` in `[tool.mcp-code-tools]`,
`MCP_CODE_TOOLS_PAGE_SIZE` in the environment, `--page-size` on the command line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

ENV_PREFIX = "MCP_CODE_TOOLS_"
PYPROJECT_TABLE = "mcp-code-tools"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

Transport = Literal["stdio", "websocket", "http"]


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mcp-code-tools"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mcp-code-tools"


class Settings(BaseModel):
    """All configuration. Frozen: a running server never changes its settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Where and how to serve.
    roots: tuple[Path, ...] = Field(default_factory=lambda: (Path.cwd(),))
    transport: Transport = "stdio"
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    log_level: Literal["debug", "info", "warning", "error"] = "warning"

    # Protocol surface.
    page_size: int = Field(default=100, ge=1, le=10_000)
    output_budget: int = Field(default=20_000, ge=1_000, le=10_000_000)
    tool_poll_interval_s: float = Field(default=10.0, gt=0)

    # Run contexts.
    run_ttl_s: float = Field(default=900.0, gt=0)
    max_runs: int = Field(default=256, ge=1)
    max_run_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    max_log_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    max_runs_per_owner: int = Field(
        default=64, ge=1, description="runs one client (connection, HTTP session or token) may hold at once"
    )
    max_run_bytes_per_owner: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="bytes of run results one client may hold at once"
    )

    # Policy.
    allow_test_execution: bool | None = None
    allow_writes: bool = False
    max_source_bytes: int = Field(default=1024 * 1024, ge=1)
    max_walk_files: int = Field(
        default=20_000, ge=1, description="files one call checks when it walks a folder or the root (more are skipped)"
    )
    max_diagnostics: int = Field(
        default=20_000, ge=1, description="diagnostics one lint call collects; past it the result says truncated"
    )
    result_cache_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="bytes of tool results (diagnostics, diffs) kept in memory"
    )
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    run_timeout_max_s: float = Field(default=600.0, gt=0)
    max_concurrent_runs: int = Field(default_factory=lambda: os.cpu_count() or 2, ge=1)
    max_queued_runs: int = Field(default=64, ge=0)
    python: Path | None = None
    pass_env: tuple[str, ...] = ()

    # Network transports.
    token: SecretStr | None = None
    allowed_origins: tuple[str, ...] = ()
    max_connections_per_client: int = Field(default=32, ge=1)
    rate_limit_rps: float = Field(default=50.0, gt=0)
    rate_limit_burst: int = Field(default=100, ge=1)
    rate_limit_store: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    ws_ping_interval_s: float = Field(default=20.0, gt=0)
    readiness_interval_s: float = Field(default=5.0, gt=0)
    http_session_idle_s: float = Field(
        default=1800.0, gt=0, description="an HTTP session with no request for this long ends (its runs go)"
    )

    # What the server keeps on disk per root (ruff's cache, affected-test data, test history): one
    # subfolder per root named by a hash of its resolved path, never inside a repository.
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="where the server keeps per-root data (ruff cache, test history, affected-test data)",
    )

    # Audit.
    audit_log: Path | None = Field(default_factory=lambda: _default_state_dir() / "audit.jsonl")
    audit_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    audit_backups: int = Field(default=3, ge=0)

    # Warm pools.
    ruff_pool_size: int = Field(default=4, ge=1)
    ruff_idle_ttl_s: float = Field(default=600.0, gt=0)
    zygote_pool_size: int = Field(default=4, ge=1)
    zygote_idle_ttl_s: float = Field(default=600.0, gt=0)

    # Telemetry: OTEL_* environment variables configure the exporters further (endpoint, protocol, ...).
    otel_exporter: Literal["none", "console", "otlp"] = "none"

    # The `check` workflow's gates (project-scoped: a project may set them in its pyproject).
    check_lint_clean: bool = Field(default=True, description="check fails when lint reports any diagnostic")
    check_format_clean: bool = Field(default=True, description="check fails when ruff format would change a file")
    check_max_complexity: int | None = Field(
        default=None, ge=1, description="check fails when a function's complexity exceeds this (None: no gate)"
    )
    check_tests_pass: bool = Field(default=True, description="check fails when the tests fail")
    check_require_tests: bool = Field(default=False, description="check fails on a root where no tests ran")
    check_history_size: int = Field(default=100, ge=1, description="check runs kept in the server's history")

    # Test history (in the cache_dir's per-root database).
    test_history_max_tests: int = Field(
        default=20_000, ge=10, description="tests kept in a root's history (least recently run dropped first)"
    )

    @field_validator("roots")
    @classmethod
    def _resolve_roots(cls, roots: tuple[Path, ...]) -> tuple[Path, ...]:
        if not roots:
            raise ValueError("at least one root is required")
        resolved: list[Path] = []
        for root in roots:
            path = Path(root).expanduser().resolve()
            if not path.is_dir():
                raise ValueError(f"root {str(root)!r} is not a directory")
            if path not in resolved:
                resolved.append(path)
        return tuple(resolved)

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, url: str) -> str:
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url

    @property
    def is_network(self) -> bool:
        return self.transport != "stdio"

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def test_execution_allowed(self) -> bool:
        """Explicit setting wins; otherwise only stdio (the user's own process) runs tests."""
        if self.allow_test_execution is not None:
            return self.allow_test_execution
        return not self.is_network

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8766 if self.transport == "http" else 8765

    @property
    def primary_root(self) -> Path:
        return self.roots[0]


class SettingsError(ValueError):
    """A bad setting; `str()` is one line naming it."""


_LIST_FIELDS = frozenset({"roots", "allowed_origins", "pass_env"})


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for field in Settings.model_fields:
        raw = environ.get(env_name(field))
        if raw is None:
            continue
        if field in _LIST_FIELDS:
            sep = os.pathsep if field == "roots" else ","
            values[field] = [part.strip() for part in raw.split(sep) if part.strip()]
        else:
            values[field] = raw
    return values


def _from_pyproject(root: Path) -> dict[str, Any]:
    path = root / "pyproject.toml"
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    if PYPROJECT_TABLE not in text:
        return {}  # no table of ours: not worth the TOML parser at start-up
    import tomllib

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}  # a broken pyproject is the project's problem, not a reason to refuse to start
    table = data.get("tool", {}).get(PYPROJECT_TABLE, {})
    if not isinstance(table, dict):
        raise SettingsError(f"[tool.{PYPROJECT_TABLE}] in {path} must be a table")
    # Security-relevant settings come from the operator, never from the served project.
    protected = {
        "token",
        "roots",
        "host",
        "allow_writes",
        "allow_test_execution",
        "allowed_origins",
        "audit_log",
        "pass_env",
        "cache_dir",
    }
    values = {}
    for key, value in table.items():
        field = key.replace("-", "_")
        if field in protected:
            continue
        values[field] = value
    return values


def _origin_of(field: str, sources: Sequence[tuple[str, dict[str, Any]]]) -> str:
    for label, values in reversed(sources):
        if field in values:
            return str(label).format(field=field, env=env_name(field), flag=flag_name(field))
    return "default"


def load_settings(cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Merge defaults < pyproject of the first root < environment < CLI, and validate.

    Raises `SettingsError` with a one-line message naming the first bad setting.
    """
    environ = os.environ if environ is None else environ
    cli_values = {k: v for k, v in (cli or {}).items() if v is not None}
    env_values = _from_env(environ)
    roots_raw = cli_values.get("roots") or env_values.get("roots") or [os.getcwd()]
    first_root = Path(str(roots_raw[0])).expanduser()
    project_values = _from_pyproject(first_root) if first_root.is_dir() else {}
    sources: list[tuple[str, dict[str, Any]]] = [
        (f"[tool.{PYPROJECT_TABLE}] {{field}}", project_values),
        ("{env}", env_values),
        ("{flag}", cli_values),
    ]
    merged: dict[str, Any] = {}
    for _, values in sources:
        merged.update(values)
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            raise SettingsError(f"unknown setting {field!r} (from {_origin_of(field, sources)})") from None
        message = err["msg"]
        raise SettingsError(f"invalid setting {field} (from {_origin_of(field, sources)}): {message}") from None
