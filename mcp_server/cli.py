"""Command line: `mcp-code-tools [--transport stdio|websocket|http] [--root DIR ...] [--SETTING VALUE ...]`.

Every setting of `Settings` is a flag (`page_size` is `--page-size`); the token is read from the
environment only (`MCP_CODE_TOOLS_TOKEN`), never from the command line where `ps` shows it.
A bad setting is one line on stderr naming it, and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

import anyio

from mcp_server import __version__
from mcp_server.config import Settings, SettingsError, env_name, flag_name, load_settings
from mcp_server.telemetry import configure_telemetry

EXIT_USAGE = 2
_NOT_FLAGS = frozenset({"roots", "token"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mcp-code-tools",
        description="MCP server for ruff-based code analysis and pytest runs.",
        epilog=f"Every flag is also an environment variable, e.g. {env_name('page_size')}; "
        "and a key of [tool.mcp-code-tools] in the root's pyproject.toml.",
    )
    parser.add_argument("--version", action="version", version=f"mcp-code-tools {__version__}")
    parser.add_argument(
        "--root", dest="roots", action="append", metavar="DIR", help="a workspace root (repeatable; default: .)"
    )
    for name, field in Settings.model_fields.items():
        if name in _NOT_FLAGS:
            continue
        kwargs: dict[str, Any] = {"dest": name, "default": None, "metavar": name.upper()}
        if name in ("allowed_origins", "pass_env"):
            kwargs["type"] = lambda s: [p.strip() for p in s.split(",") if p.strip()]
            kwargs["help"] = "comma-separated list"
        elif field.description:
            kwargs["help"] = field.description
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
