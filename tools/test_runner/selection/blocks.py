"""A Python file as checksummed blocks: each function (with its decorators and signature), the
module level (everything outside function bodies), and the whole file.

A test depends on the checksums of the blocks it executed. Editing one function changes that
function's checksum only, so only the tests that ran it are selected; moving code (line shifts)
changes nothing (checksums come from the syntax tree without positions). A function's checksum
leaves out the bodies of the functions defined in it, as the module level leaves out every
function body: running the outer function only creates the inner one (its decorators, defaults
and signature stay in the outer checksum), and whoever calls the inner one executes, and is
charged, the inner block. So editing a method that a class factory defines (attrs' `__ge__`
inside `_make_order`) selects the tests that compared instances, not every test that built a
class. A file that does not
parse has only its whole-file checksum, so any edit selects every test that touched it.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field

VERSION = 3
"""Bumped when checksums are computed differently: records and parse-cache entries made by
another version are not used."""
FILE_PREFIX = "F:"
MODULE_PREFIX = "M:"


def _hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=10).hexdigest()


@dataclass(frozen=True, slots=True)
class FileBlocks:
    """The blocks of one file's current content."""

    file_hash: str
    module: str
    spans: tuple[tuple[int, int, str], ...] = ()
    """(first line incl. decorators, last line, checksum) per function, ordered by first line."""
    checksums: frozenset[str] = field(default_factory=frozenset)

    @property
    def file_checksum(self) -> str:
        return FILE_PREFIX + self.file_hash

    def checksum_at(self, firstlineno: int) -> str:
        """The block a code object starting at `firstlineno` belongs to: the function starting
        there, else the innermost function containing the line (lambdas, comprehensions, nested
        classes), else the module level."""
        found: str | None = None
        for start, end, checksum in self.spans:
            if start > firstlineno:
                break
            if start == firstlineno:
                return checksum
            if end >= firstlineno:
                found = checksum  # a later start inside is more inner
        return found or self.module

    def to_json(self) -> list[object]:
        return [self.file_hash, self.module, [list(s) for s in self.spans], VERSION]

    @classmethod
    def from_json(cls, data: list[object]) -> FileBlocks:
        """Raises ValueError for blocks parsed by another version (a stale parse cache entry)."""
        file_hash, module, spans, version = data
        if version != VERSION:
            raise ValueError(f"blocks of version {version}")
        assert isinstance(spans, list)
        parsed = tuple((int(s[0]), int(s[1]), str(s[2])) for s in spans)
        return cls.build(str(file_hash), str(module), parsed)

    @classmethod
    def build(cls, file_hash: str, module: str, spans: tuple[tuple[int, int, str], ...]) -> FileBlocks:
        checksums = frozenset({FILE_PREFIX + file_hash, module, *(s[2] for s in spans)})
        return cls(file_hash, module, spans, checksums)


_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)
_ELIDED: list[ast.stmt] = [ast.Expr(ast.Constant(...))]


def _dump_without_inner_bodies(node: ast.AST) -> str:
    """`ast.dump(node)` with the bodies of the functions it contains (not its own) as `...`:
    signatures, decorators and class bodies stay. The tree is restored before returning."""
    inner: list[ast.FunctionDef | ast.AsyncFunctionDef] = []
    stack = list(ast.iter_child_nodes(node))
    while stack:
        child = stack.pop()
        if isinstance(child, _FUNCTIONS):
            inner.append(child)
        else:
            stack.extend(ast.iter_child_nodes(child))
    saved = [function.body for function in inner]
    try:
        for function in inner:
            function.body = _ELIDED
        return ast.dump(node)
    finally:
        for function, body in zip(inner, saved, strict=True):
            function.body = body


def parse_blocks(source: bytes) -> FileBlocks:
    file_hash = _hash(source)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return FileBlocks.build(file_hash, FILE_PREFIX + file_hash, ())
    spans: list[tuple[int, int, str]] = []
    seen: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qualname = prefix + child.name
                n = seen.get(qualname, 0)
                seen[qualname] = n + 1
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                end = getattr(child, "end_lineno", None) or child.lineno
                dump = _dump_without_inner_bodies(child)
                spans.append((start, end, _hash(f"{qualname}#{n}\n{dump}".encode())))
                visit(child, qualname + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    try:
        visit(tree, "")
        module = MODULE_PREFIX + _hash(_dump_without_inner_bodies(tree).encode())
    except RecursionError:
        return FileBlocks.build(file_hash, FILE_PREFIX + file_hash, ())
    spans.sort()
    return FileBlocks.build(file_hash, module, tuple(spans))
