"""Settings: one frozen pydantic model, and who may set what.

Every setting has one name, used in three spellings: `page_size` in a TOML file,
`MCP_CODE_TOOLS_PAGE_SIZE` in the environment, `--page-size` on the command line (`roots` is `--root`).

Sources, later ones win: defaults < the operator's user config (`$XDG_CONFIG_HOME/mcp-code-tools/config.toml`,
optional, every setting) < the served project's `[tool.mcp-code-tools]` in the first root's `pyproject.toml`
(only `PROJECT_SETTINGS`; any other key there is ignored with a warning) < environment < flags.
Flags, environment and the user config are the operator's; a repository is not trusted to reconfigure the server.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "MCP_CODE_TOOLS_"
PYPROJECT_TABLE = "mcp-code-tools"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})

Transport = Literal["stdio", "websocket", "http"]

PROJECT_SETTINGS = frozenset(
    {
        "page_size",
        "output_budget",
        "python",
        "check_lint_clean",
        "check_format_clean",
        "check_max_complexity",
        "check_tests_pass",
        "check_require_tests",
    }
)
"""The only settings a served project's `[tool.mcp-code-tools]` may set: how results are paged and sized,
the `check` workflow's gates, the interpreter its tests run with. Everything else (transport, host, port,
token, origins, roots, limits, audit, cache_dir, pools, policy) is the operator's. A new setting is
operator-only unless it is added here."""

NOT_SETTINGS = frozenset(
    {
        "MCP_CODE_TOOLS_REQUIRE_REDIS",
        "MCP_CODE_TOOLS_REQUIRE_NPM",
        "MCP_CODE_TOOLS_TEST_REDIS_URL",
        "MCP_CODE_TOOLS_TEST_TRANSPORTS",
    }
)
"""Variables with our prefix that are not settings (the test suite's own); no warning for them."""

Warn = Callable[[str], None]


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "mcp-code-tools"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mcp-code-tools"


def user_config_path(environ: Mapping[str, str]) -> Path:
    """The operator's optional config file: `$XDG_CONFIG_HOME/mcp-code-tools/config.toml`."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mcp-code-tools" / "config.toml"


def _split(sep: str) -> Callable[[Any], Any]:
    def split(value: Any) -> Any:
        if isinstance(value, str):  # from the environment or a flag: a separated list
            return [part.strip() for part in value.split(sep) if part.strip()]
        return value

    return split


PathList = Annotated[tuple[Path, ...], NoDecode]
NameList = Annotated[tuple[str, ...], NoDecode]


class Settings(BaseSettings):
    """All configuration. Frozen: a running server never changes its settings.

    Built by `load_settings` (which names the source of a bad value); `Settings(**values)` takes only
    its arguments and defaults, never the process environment.
    """

    model_config = SettingsConfigDict(
        frozen=True,
        extra="forbid",
        env_prefix=ENV_PREFIX,
        case_sensitive=False,
    )

    # Where and how to serve.
    roots: PathList = Field(
        default_factory=lambda: (Path.cwd(),),
        description="workspace roots the tools may touch (flag repeatable; environment: separated by os.pathsep)",
    )
    transport: Transport = Field(default="stdio", description="how clients connect")
    host: str = Field(default="127.0.0.1", description="address network transports listen on")
    port: int | None = Field(
        default=None, ge=0, le=65535, description="port for network transports (none: 8765 websocket, 8766 http)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(default="warning", description="stderr log level")

    # Protocol surface.
    page_size: int = Field(default=100, ge=1, le=10_000, description="tools per tools/list page")
    output_budget: int = Field(
        default=20_000, ge=1_000, le=10_000_000, description="max characters of a result's text and structuredContent"
    )
    tool_poll_interval_s: float = Field(
        default=10.0, gt=0, description="seconds between checks of tool availability (list_changed)"
    )

    # Run contexts.
    run_ttl_s: float = Field(default=900.0, gt=0, description="a run context lives this long after its last access")
    max_runs: int = Field(default=256, ge=1, description="run contexts kept at once")
    max_run_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, description="bytes of run results kept at once")
    max_log_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="bytes of one run's log kept")
    max_runs_per_owner: int = Field(
        default=64, ge=1, description="runs one client (connection, HTTP session or token) may hold at once"
    )
    max_run_bytes_per_owner: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="bytes of run results one client may hold at once"
    )
    max_subscriptions_per_connection: int = Field(
        default=100, ge=1, description="run:// subscriptions one connection (or listen stream) may hold"
    )

    # Policy.
    allow_test_execution: bool | None = Field(
        default=None, description="whether tools may run project code (tests); unset: on for stdio, off for network"
    )
    allow_writes: bool = Field(default=False, description="whether fixes may be written (otherwise only diffs)")
    max_source_bytes: int = Field(default=1024 * 1024, ge=1, description="largest source text or file analysed (bytes)")
    max_walk_files: int = Field(
        default=20_000, ge=1, description="files one call checks when it walks a folder or the root (more are skipped)"
    )
    max_diagnostics: int = Field(
        default=20_000, ge=1, description="diagnostics one lint call collects; past it the result says truncated"
    )
    result_cache_max_bytes: int = Field(
        default=64 * 1024 * 1024, ge=0, description="bytes of tool results (diagnostics, diffs) kept in memory"
    )
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="largest protocol message (bytes)")
    run_timeout_max_s: float = Field(default=600.0, gt=0, description="ceiling on any run's timeout (seconds)")
    max_concurrent_runs: int = Field(
        default_factory=lambda: os.cpu_count() or 2, ge=1, description="runs at once (default: CPU count)"
    )
    max_queued_runs: int = Field(default=64, ge=0, description="runs that may wait (FIFO) before calls get 'busy'")
    python: Path | None = Field(
        default=None, description="interpreter for tests when the root has no .venv/venv (default: the server's)"
    )
    pass_env: NameList = Field(
        default=(), description="extra environment variables passed to project code (comma-separated names)"
    )

    # Network transports.
    token: SecretStr | None = Field(
        default=None, description="bearer token required on network transports (environment or user config only)"
    )
    allowed_origins: NameList = Field(
        default=(), description="browser origins allowed on network transports, comma-separated (default: loopback)"
    )
    max_connections_per_client: int = Field(default=32, ge=1, description="concurrent connections per client")
    max_http_connections: int = Field(
        default=256,
        ge=1,
        description="open TCP connections on the HTTP port, all clients together (past it: 503 and closed)",
    )
    rate_limit_rps: float = Field(default=50.0, gt=0, description="tool calls per second per client (token bucket)")
    rate_limit_burst: int = Field(default=100, ge=1, description="token bucket size per client")
    rate_limit_store: Literal["memory", "redis"] = Field(
        default="memory", description="where rate-limit buckets live (redis: shared by several instances)"
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis for rate_limit_store=redis")
    ws_ping_interval_s: float = Field(
        default=20.0, gt=0, description="WebSocket ping interval; a peer that does not answer within it is closed"
    )
    readiness_interval_s: float = Field(default=5.0, gt=0, description="seconds between /readyz probes")
    http_session_idle_s: float = Field(
        default=600.0,
        gt=0,
        description="an HTTP session with no request in progress and no run still running for this long ends "
        "(its runs go)",
    )
    http_idle_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="an HTTP connection idle between requests, or still sending its request head, is closed after "
        "this long",
    )
    http_body_timeout_s: float = Field(
        default=30.0, gt=0, description="time an HTTP request's whole body may take to arrive (else 408)"
    )
    max_requests_per_client: int = Field(
        default=64, ge=1, description="HTTP requests one client may have in progress at once (else 429)"
    )
    stdio_eof_grace_s: float = Field(
        default=0.25,
        ge=0,
        description="stdio: after end of input, how long requests already read may run before they are cancelled",
    )

    # What the server keeps on disk per root (ruff's cache, affected-test data, test history): one
    # subfolder per root named by a hash of its resolved path, never inside a repository.
    cache_dir: Path = Field(
        default_factory=_default_cache_dir,
        description="where the server keeps per-root data (ruff cache, test history, affected-test data)",
    )

    # Audit.
    audit_log: Path | None = Field(
        default_factory=lambda: _default_state_dir() / "audit.jsonl",
        description="the audit log: one JSON line per executed command",
    )
    audit_max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, description="audit log size before it rotates")
    audit_backups: int = Field(default=3, ge=0, description="rotated audit logs kept (0: start over)")

    # Warm pools.
    ruff_pool_size: int = Field(default=4, ge=1, description="warm `ruff server` instances")
    ruff_idle_ttl_s: float = Field(default=600.0, gt=0, description="an idle ruff server stops after this long")
    zygote_pool_size: int = Field(default=4, ge=1, description="warm pytest zygotes")
    zygote_idle_ttl_s: float = Field(default=600.0, gt=0, description="an idle zygote stops after this long")
    test_workers: int = Field(
        default=1,
        ge=1,
        le=256,
        description="run_tests children per run (shards; capped at the CPU count); "
        "session fixtures then run once per child, as with pytest-xdist",
    )
    record_tests: bool = Field(
        default=True,
        description="record what each test executes (for run_tests affected=true); off: affected runs run everything",
    )
    learn_imports: bool = Field(
        default=True,
        description="pre-import in each project's zygote what its test runs imported from outside the root "
        "(learned pre-imports); off: every run imports them itself",
    )

    # Telemetry: OTEL_* environment variables configure the exporters further (endpoint, protocol, ...).
    otel_exporter: Literal["none", "console", "otlp"] = Field(
        default="none", description="OpenTelemetry spans: none, to stderr (console), or OTLP (OTEL_* variables)"
    )

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

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the sources are composed by `load_settings`, which knows who said what

    @field_validator("roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        return _split(os.pathsep)(value)

    @field_validator("allowed_origins", "pass_env", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        return _split(",")(value)

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

    @field_validator("token", mode="before")
    @classmethod
    def _refuse_empty_token(cls, token: Any) -> Any:
        # An empty token is not "no token": a server meant to be protected would answer 401 to everyone.
        if isinstance(token, str) and not token.strip():
            raise ValueError("is set but empty; give a token or unset it")
        return token

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
    """A bad setting; `str()` is one line naming it and where it came from."""


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--root" if field == "roots" else "--" + field.replace("_", "-")


def _warn_stderr(message: str) -> None:
    print(f"mcp-code-tools: warning: {message}", file=sys.stderr)


class _EnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of `os.environ`."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        super().__init__(Settings)
        self.env_vars = parse_env_vars(environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def _warn_unknown_env(environ: Mapping[str, str], warn: Warn) -> None:
    fields = list(Settings.model_fields)
    for key in environ:
        upper = key.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS:
            continue
        name = upper[len(ENV_PREFIX) :].lower()
        if name in Settings.model_fields:
            continue
        import difflib  # only for an unknown variable (rare): not worth its import at every start

        close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
        hint = f"; did you mean {env_name(close[0])}?" if close else ""
        warn(f"{key} is not a setting and is ignored{hint}")


def _table_keys(table: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key).replace("-", "_"): value for key, value in table.items()}


def _from_user_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = TomlConfigSettingsSource(Settings, toml_file=path).toml_data
    except (OSError, ValueError) as exc:  # tomllib.TOMLDecodeError is a ValueError
        raise SettingsError(f"{path}: {exc}") from None
    return _table_keys(data)


def _from_pyproject(root: Path, warn: Warn) -> dict[str, Any]:
    """The allow-listed keys of the project's table; the others are named in a warning and dropped."""
    path = root / "pyproject.toml"
    try:
        if PYPROJECT_TABLE not in path.read_text(encoding="utf-8"):
            return {}  # no table of ours: not worth the TOML parser at start-up
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        data = TomlConfigSettingsSource(Settings, toml_file=path).toml_data
    except (OSError, ValueError):
        return {}  # a broken pyproject is the project's problem, not a reason to refuse to start
    tool = data.get("tool")
    table: Any = tool.get(PYPROJECT_TABLE, {}) if isinstance(tool, dict) else {}
    if not isinstance(table, dict):
        raise SettingsError(f"[tool.{PYPROJECT_TABLE}] in {path} must be a table")
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for field, value in _table_keys(table).items():
        if field in Settings.model_fields and field not in PROJECT_SETTINGS:
            ignored.append(field)
        else:
            values[field] = value  # an unknown key is reported by validation, naming this file
    if ignored:
        warn(
            f"{path} [tool.{PYPROJECT_TABLE}] sets {', '.join(ignored)}: operator settings (flags, environment, "
            f"user config), never taken from a project; ignored"
        )
    return values


def _first_root(cli: Mapping[str, Any], env: Mapping[str, Any], user: Mapping[str, Any]) -> Path:
    for values in (cli, env, user):
        roots = values.get("roots")
        if roots:
            first = _split(os.pathsep)(roots)
            if first:
                return Path(str(first[0])).expanduser()
    return Path.cwd()


def _describe_error(exc: ValidationError, sources: list[tuple[Callable[[str], str], dict[str, Any]]]) -> str:
    err = exc.errors()[0]
    field = str(err["loc"][0]) if err["loc"] else "?"
    origin = "default"
    for label, values in reversed(sources):
        if field in values:
            origin = label(field)
            break
    if err["type"] == "extra_forbidden":
        return f"unknown setting {field!r} (from {origin})"
    message = str(err["msg"]).removeprefix("Value error, ")
    value = err.get("input")
    if field != "token" and isinstance(value, (str, int, float)) and len(str(value)) <= 80:
        message += f" (got {value!r})"
    return f"invalid setting {field} (from {origin}): {message}"


def load_settings(
    cli: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None, *, warn: Warn | None = None
) -> Settings:
    """Merge defaults < user config < project (allow-listed) < environment < flags, and validate.

    Raises `SettingsError` with a one-line message naming the first bad setting and its flag, variable or
    file. Warnings (an ignored project setting, an unknown variable) go to `warn` (default: stderr).
    """
    environ = os.environ if environ is None else environ
    warn = warn or _warn_stderr
    cli_values = {k: v for k, v in (cli or {}).items() if v is not None}
    env_values = _EnvSource(environ)()
    _warn_unknown_env(environ, warn)
    user_path = user_config_path(environ)
    user_values = _from_user_config(user_path)
    first_root = _first_root(cli_values, env_values, user_values)
    project_path = first_root / "pyproject.toml"
    project_values = _from_pyproject(first_root, warn) if first_root.is_dir() else {}
    sources: list[tuple[Callable[[str], str], dict[str, Any]]] = [
        (lambda f: f"{user_path} {f}", user_values),
        (lambda f: f"{project_path} [tool.{PYPROJECT_TABLE}] {f}", project_values),
        (env_name, env_values),
        (flag_name, cli_values),
    ]
    merged: dict[str, Any] = {}
    for label, values in sources:
        for key in values:
            if key.startswith("_"):  # pydantic-settings reads `_env_file`, `_cli_parse_args`... as instructions
                raise SettingsError(f"unknown setting {key!r} (from {label(key)})")
        merged.update(values)
    try:
        return Settings(**merged)
    except ValidationError as exc:
        raise SettingsError(_describe_error(exc, sources)) from None
