"""The rule selection a call asks for (`select`, `ignore`), in the two spellings ruff takes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Selection:
    """`None` (or an empty list) means "as the project's config says". A `select` list replaces the
    project's selection, as `--select` does; an `ignore` list adds to its ignores, as `--ignore` does."""

    select: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None

    @classmethod
    def of(cls, select: Sequence[str] | None, ignore: Sequence[str] | None) -> Selection:
        return cls(
            tuple(dict.fromkeys(select)) if select else None,
            tuple(dict.fromkeys(ignore)) if ignore else None,
        )

    @property
    def key(self) -> tuple[Any, ...]:
        return (self.select, self.ignore)

    @property
    def is_default(self) -> bool:
        return self.select is None and self.ignore is None

    def cli_args(self) -> list[str]:
        """Flags for `ruff check`; values joined into one argument so none can pass for a flag."""
        args: list[str] = []
        if self.select is not None:
            args.append("--select=" + ",".join(self.select))
        if self.ignore:
            args.append("--ignore=" + ",".join(self.ignore))
        return args

    def lsp_settings(self) -> dict[str, Any]:
        """`initializationOptions.settings` for `ruff server`: the editor layer over the project config."""
        lint: dict[str, Any] = {}
        if self.select is not None:
            lint["select"] = list(self.select)
        if self.ignore:
            lint["ignore"] = list(self.ignore)
        return {"configurationPreference": "editorFirst", "logLevel": "warn", "lint": lint}

    def describe(self) -> dict[str, Any]:
        return {"select": list(self.select) if self.select is not None else None, "ignore": list(self.ignore or ())}
