"""Command line: `mcp-code-tools [--transport stdio|websocket|http] [--root DIR ...] [--SETTING VALUE ...]`.

The parser is generated from `Settings`: every setting is a flag (`page_size` is `--page-size`) whose help
shows its description, default, allowed values and environment variable; booleans are `--flag` /
`--no-flag`. The token is read from the environment or the user config only, never from the command
line where `ps` shows it. A bad setting or flag is one line on stderr naming it, and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio
from pydantic.fields import FieldInfo

from mcp_server import __version__
from mcp_server.config import (
    PROJECT_SETTINGS,
    PYPROJECT_TABLE,
    Settings,
    SettingsError,
    env_name,
    flag_name,
    load_settings,
)
from mcp_server.redact import install_log_filter
from mcp_server.telemetry import configure_telemetry

EXIT_USAGE = 2
_NOT_FLAGS = frozenset({"token"})


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (with the closest flag for a misspelt one), exit 2."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            import difflib  # only on this path: not worth its import at every start

            flags = [opt for action in self._actions for opt in action.option_strings]
            for word in message.split(":", 1)[1].split():
                close = difflib.get_close_matches(word.split("=", 1)[0], flags, n=1, cutoff=0.6)
                if close:
                    message += f" (did you mean {close[0]}?)"
                    break
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def _choices(annotation: Any) -> list[str] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return [str(arg) for arg in typing.get_args(annotation)]
    return None


def _is_bool(annotation: Any) -> bool:
    if annotation is bool:
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return set(typing.get_args(annotation)) == {bool, type(None)}
    return False


def _default_text(name: str, field: FieldInfo) -> str:
    if name == "roots":
        return "the current directory"
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def _bounds(field: FieldInfo) -> str:
    """A number's allowed range, from its `Field(ge=..., le=...)` constraints: ">= 1, <= 10000"."""
    parts = []
    for constraint in field.metadata:
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(constraint, attr, None)
            if value is not None:
                parts.append(f"{symbol} {value}")
    return ", ".join(parts)


def _help(name: str, field: FieldInfo) -> str:
    text = field.description or ""
    text += f" [default: {_default_text(name, field)}"
    if bounds := _bounds(field):
        text += f"; allowed: {bounds}"
    text += f"; env {env_name(name)}"
    if name in PROJECT_SETTINGS:
        text += f"; a project's [tool.{PYPROJECT_TABLE}] may set it"
    return text.replace("%", "%%") + "]"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mcp-code-tools",
        usage="%(prog)s [--transport {stdio,websocket,http}] [--root DIR ...] [--SETTING VALUE ...]",
        description="MCP server for ruff-based code analysis and pytest runs.",
        epilog="Sources, later ones win: defaults < $XDG_CONFIG_HOME/mcp-code-tools/config.toml (the operator's, "
        f"every setting) < [tool.{PYPROJECT_TABLE}] in the first root's pyproject.toml (only: "
        f"{', '.join(sorted(PROJECT_SETTINGS))}) < environment variables {env_name('<name>')} < flags. "
        f"The token is only read from {env_name('token')} or the user config.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"mcp-code-tools {__version__}")
    for name, field in Settings.model_fields.items():
        if name in _NOT_FLAGS:
            continue
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": _help(name, field)}
        choices = _choices(field.annotation)
        if name == "roots":
            kwargs.update(action="append", metavar="DIR")
        elif _is_bool(field.annotation):
            kwargs["action"] = argparse.BooleanOptionalAction
        elif choices:
            kwargs["choices"] = choices
        elif typing.get_origin(field.annotation) is tuple:
            kwargs["metavar"] = "A,B"
        elif Path in (field.annotation, *typing.get_args(field.annotation)):
            kwargs["metavar"] = "PATH"
        else:
            kwargs["metavar"] = name.upper()
        parser.add_argument(flag_name(name), **kwargs)
    return parser


def _check_network_policy(settings: Settings) -> None:
    if settings.is_network and not settings.is_loopback and settings.token is None:
        raise SettingsError(
            f"binding {settings.transport} to {settings.host} (not loopback) requires a token: set {env_name('token')}"
        )


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    install_log_filter()  # our stderr logs leave redacted


async def _serve(settings: Settings) -> None:
    from mcp_server.server import CodeToolsServer

    app = CodeToolsServer(settings)
    if settings.transport == "stdio":
        from mcp_server.transports.stdio import serve_stdio

        await serve_stdio(app)
    elif settings.transport == "websocket":
        from mcp_server.transports.websocket import serve_websocket

        await serve_websocket(app)
    else:
        from mcp_server.transports.http import serve_http

        await serve_http(app)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(vars(args))
        _check_network_policy(settings)
    except SettingsError as exc:
        print(f"mcp-code-tools: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(settings.log_level)
    configure_telemetry(settings)
    try:
        anyio.run(_serve, settings)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # e.g. the port is taken
        print(f"mcp-code-tools: {exc}", file=sys.stderr)
        return 1
    return 0
