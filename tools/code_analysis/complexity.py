"""Per-function metrics from the standard library's `ast`: pure, in-process, no I/O.

Cyclomatic complexity is counted the way mccabe and ruff's C901 count it: one, plus one per
`if`/`elif`, loop, `except` handler, `try ... else`, `match`, and nested function (whose own
decisions count towards the enclosing function too). Boolean operators, comprehensions and
conditional expressions do not count, and a `with` adds nothing.
"""

from __future__ import annotations

import ast
import warnings
from dataclasses import dataclass, field
from typing import Any

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


def _is_irrefutable(pattern: ast.pattern) -> bool:
    if isinstance(pattern, ast.MatchAs):
        return pattern.pattern is None or _is_irrefutable(pattern.pattern)
    if isinstance(pattern, ast.MatchOr):
        return any(_is_irrefutable(p) for p in pattern.patterns)
    return False


def statements_complexity(body: list[ast.stmt]) -> int:
    """The decision points of a block of statements (ruff's `get_complexity_number`)."""
    total = 0
    for stmt in body:
        if isinstance(stmt, ast.If):
            # `elif` is an `If` inside `orelse`, so each one counts once; an `else` block adds none.
            total += 1 + statements_complexity(stmt.body) + statements_complexity(stmt.orelse)
        elif isinstance(stmt, (ast.For, ast.AsyncFor, ast.While)):
            total += 1 + statements_complexity(stmt.body) + statements_complexity(stmt.orelse)
        elif isinstance(stmt, (ast.With, ast.AsyncWith)):
            total += statements_complexity(stmt.body)
        elif isinstance(stmt, ast.Match):
            total += _match_complexity(stmt)
        elif isinstance(stmt, (ast.Try, ast.TryStar)):
            total += statements_complexity(stmt.body)
            total += (1 if stmt.orelse else 0) + statements_complexity(stmt.orelse)
            total += statements_complexity(stmt.finalbody)
            for handler in stmt.handlers:
                total += 1 + statements_complexity(handler.body)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            total += 1 + statements_complexity(stmt.body)
        elif isinstance(stmt, ast.ClassDef):
            total += statements_complexity(stmt.body)
    return total


def _match_complexity(stmt: ast.Match) -> int:
    total = 0
    for case in stmt.cases:
        total += 1 + statements_complexity(case.body)
    last = stmt.cases[-1] if stmt.cases else None
    if last is not None and last.guard is None and _is_irrefutable(last.pattern):
        total -= 1  # a catch-all last case is the `else` of the match
    return total


def function_complexity(node: FunctionNode) -> int:
    return 1 + statements_complexity(node.body)


@dataclass
class FileMetrics:
    functions: list[dict[str, Any]] = field(default_factory=list)
    classes: int = 0
    code_lines: int = 0
    error: dict[str, Any] | None = None


class _Collector(ast.NodeVisitor):
    def __init__(self) -> None:
        self.scope: list[str] = []
        self.functions: list[dict[str, Any]] = []
        self.classes = 0

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes += 1
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def _function(self, node: FunctionNode) -> None:
        end = node.end_lineno or node.lineno
        self.functions.append(
            {
                "name": node.name,
                "qualname": ".".join([*self.scope, node.name]),
                "line": node.lineno,
                "end_line": end,
                "complexity": function_complexity(node),
                "lines": end - node.lineno + 1,
            }
        )
        self.scope += [node.name, "<locals>"]
        self.generic_visit(node)
        del self.scope[-2:]

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function


def count_code_lines(text: str) -> int:
    """Lines that are neither blank nor only a comment."""
    return sum(1 for line in text.splitlines() if (s := line.strip()) and not s.startswith("#"))


def analyze_source(text: str, filename: str = "<source>") -> FileMetrics:
    """Functions (with complexity and size), class count and code lines of one module."""
    metrics = FileMetrics(code_lines=count_code_lines(text))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings of the analysed code are not ours
            tree = ast.parse(text, filename=filename)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        message = getattr(exc, "msg", None) or str(exc)
        metrics.error = {"line": line, "message": f"syntax error: {message}"}
        return metrics
    except RecursionError:
        metrics.error = {"line": None, "message": "too deeply nested to parse"}
        return metrics
    collector = _Collector()
    collector.visit(tree)
    metrics.functions = collector.functions
    metrics.classes = collector.classes
    return metrics
