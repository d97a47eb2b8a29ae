"""A Python file as checksummed blocks: each function (with its decorators and signature), the
module level (everything outside function bodies), and the whole file.

A test depends on the checksums of the blocks it executed. Editing one function changes that
function's checksum only, so only the tests that ran it are selected; moving code (line shifts)
changes nothing (checksums come from the syntax tree without positions). A file that does not
parse has only its whole-file checksum, so any edit selects every test that touched it.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass, field

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
        return [self.file_hash, self.module, [list(s) for s in self.spans]]

    @classmethod
    def from_json(cls, data: list[object]) -> FileBlocks:
        file_hash, module, spans = data
        assert isinstance(spans, list)
        parsed = tuple((int(s[0]), int(s[1]), str(s[2])) for s in spans)
        return cls.build(str(file_hash), str(module), parsed)

    @classmethod
    def build(cls, file_hash: str, module: str, spans: tuple[tuple[int, int, str], ...]) -> FileBlocks:
        checksums = frozenset({FILE_PREFIX + file_hash, module, *(s[2] for s in spans)})
        return cls(file_hash, module, spans, checksums)


class _StripBodies(ast.NodeTransformer):
    """The module level: function bodies replaced by `...` (signatures, decorators, class bodies stay)."""

    def _strip(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        node.body = [ast.Expr(ast.Constant(...))]
        return node

    visit_FunctionDef = _strip
    visit_AsyncFunctionDef = _strip


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
                dump = ast.dump(child)
                spans.append((start, end, _hash(f"{qualname}#{n}\n{dump}".encode())))
                visit(child, qualname + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    try:
        visit(tree, "")
        module = MODULE_PREFIX + _hash(ast.dump(_StripBodies().visit(tree)).encode())
    except RecursionError:
        return FileBlocks.build(file_hash, FILE_PREFIX + file_hash, ())
    spans.sort()
    return FileBlocks.build(file_hash, module, tuple(spans))
