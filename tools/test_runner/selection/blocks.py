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

Two marks per function, for state cached across tests (`plan.py`): `stateful`, a function that
stores into state outliving the call (a subscript or attribute of something not created in it,
a `global`/`nonlocal`, a mutating method of such an object: `self._instances[key] = value`,
`func._cached = value`, `TABLE.setdefault(...)`; `self.x = ...` in `__init__` does not count,
nor a store into a local or parameter other than `self` and `cls`, `*args` and `**kwargs` included);
`cached`, a function behind a caching decorator (`functools.lru_cache`, `cache`,
`cached_property`), whose callers find its result without running it.
"""

from __future__ import annotations

import ast
import hashlib
import io
import tokenize
from dataclasses import dataclass, field

VERSION = 6
"""Bumped when checksums are computed differently, or records hold other kinds of dependencies
(5: import-time blocks apart, with the state digests; 6: `*args`, `**kwargs` and a local named
`cls` are not outliving state): records and parse-cache entries made by another version are not
used."""
FILE_PREFIX = "F:"
MODULE_PREFIX = "M:"
CACHING_DECORATORS = frozenset({"lru_cache", "cache", "cached_property", "memoize", "memoized"})
MUTATORS = frozenset(
    {"setdefault", "update", "append", "add", "extend", "insert", "move_to_end", "pop", "popitem", "__setitem__"}
)


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
    stateful: frozenset[str] = frozenset()
    """Checksums of the functions that store into state outliving the call."""
    cached: frozenset[str] = frozenset()
    """Checksums of the functions behind a caching decorator."""

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
        spans = [list(s) for s in self.spans]
        return [self.file_hash, self.module, spans, VERSION, sorted(self.stateful), sorted(self.cached)]

    @classmethod
    def from_json(cls, data: list[object]) -> FileBlocks:
        """Raises ValueError for blocks parsed by another version (a stale parse cache entry)."""
        file_hash, module, spans, version, stateful, cached = data
        if version != VERSION:
            raise ValueError(f"blocks of version {version}")
        assert isinstance(spans, list) and isinstance(stateful, list) and isinstance(cached, list)
        parsed = tuple((int(s[0]), int(s[1]), str(s[2])) for s in spans)
        return cls.build(
            str(file_hash), str(module), parsed, frozenset(map(str, stateful)), frozenset(map(str, cached))
        )

    @classmethod
    def build(
        cls,
        file_hash: str,
        module: str,
        spans: tuple[tuple[int, int, str], ...],
        stateful: frozenset[str] = frozenset(),
        cached: frozenset[str] = frozenset(),
    ) -> FileBlocks:
        checksums = frozenset({FILE_PREFIX + file_hash, module, *(s[2] for s in spans)})
        return cls(file_hash, module, spans, checksums, stateful, cached)


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


def _root_name(node: ast.expr) -> str | None:
    while isinstance(node, ast.Subscript | ast.Attribute | ast.Call):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _own_nodes(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.AST]:
    """The nodes of a function's own body (not of the functions and classes defined in it)."""
    found: list[ast.AST] = []
    stack: list[ast.AST] = [*function.body]
    while stack:
        node = stack.pop()
        found.append(node)
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            stack.extend(ast.iter_child_nodes(node))
    return found


def is_stateful(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the function stores into state that outlives the call (see the module's text)."""
    nodes = _own_nodes(function)
    arguments = function.args
    params = {a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]}
    packed = {a.arg for a in (arguments.vararg, arguments.kwarg) if a is not None}
    """`*args` and `**kwargs`: a new tuple and dict on every call."""
    local = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    fresh = local - params | packed | (params - {"self", "cls", "mcs", "metacls"})
    for node in nodes:
        if isinstance(node, ast.Global | ast.Nonlocal):
            return True
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            targets = [node.func]
        for target in targets:
            if not isinstance(target, ast.Subscript | ast.Attribute):
                continue
            base = _root_name(target)
            if base in fresh:
                continue
            if function.name == "__init__" and isinstance(target, ast.Attribute) and base == "self":
                continue  # a new instance's own attributes
            if isinstance(node, ast.Call) and isinstance(target.value, ast.Name) and base in ("self", "cls"):
                continue  # `self.append(...)`, `cls.update(...)`: the object's own method, not a store into it
            return True
    return False


def is_cached(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for decorator in function.decorator_list:
        node = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
        if name in CACHING_DECORATORS:
            return True
    return False


_FUNCTION_CACHE: dict[bytes, tuple[str, bool, bool]] = {}
"""A function's (checksum, stateful, cached) by a digest of its name and its lines' text: an edit
re-parses its file, and the functions whose text did not change need no `ast.dump` again (on
python-dateutil's tz.py, 1,800 lines, that was most of the 90 ms an edit's plan took)."""
FUNCTION_CACHE_MAX = 50_000


def _function_facts(function: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str, n: int) -> tuple[str, bool, bool]:
    dump = _dump_without_inner_bodies(function)
    return _hash(f"{qualname}#{n}\n{dump}".encode()), is_stateful(function), is_cached(function)


def _cache_key(lines: list[bytes], encoding: str, qualname: str, n: int, start: int, end: int) -> bytes:
    """The same name and the same text give the same tree (a statement's tree is its tokens'; a
    function's lines hold nothing but it and its decorators); the same bytes are the same text
    under the same encoding (the file's declaration, or UTF-8)."""
    digest = hashlib.blake2b(f"{encoding}\n{qualname}#{n}\n".encode(), digest_size=20)
    for line in lines[start - 1 : end]:
        digest.update(line)
    return digest.digest()


def parse_blocks(source: bytes) -> FileBlocks:
    file_hash = _hash(source)
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return FileBlocks.build(file_hash, FILE_PREFIX + file_hash, ())
    spans: list[tuple[int, int, str]] = []
    seen: dict[str, int] = {}
    stateful: set[str] = set()
    cached: set[str] = set()
    try:
        encoding = tokenize.detect_encoding(io.BytesIO(source).readline)[0]
    except SyntaxError:  # parsed anyway: then it is not worth caching
        encoding = ""
    lines = source.splitlines(keepends=True)
    cache = _FUNCTION_CACHE

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                qualname = prefix + child.name
                n = seen.get(qualname, 0)
                seen[qualname] = n + 1
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                end = getattr(child, "end_lineno", None) or child.lineno
                key = _cache_key(lines, encoding, qualname, n, start, end) if encoding else None
                facts = cache.get(key) if key is not None else None
                if facts is None:
                    facts = _function_facts(child, qualname, n)
                    if key is not None:
                        if len(cache) >= FUNCTION_CACHE_MAX:
                            cache.clear()
                        cache[key] = facts
                checksum, is_stateful_, is_cached_ = facts
                spans.append((start, end, checksum))
                if is_stateful_:
                    stateful.add(checksum)
                if is_cached_:
                    cached.add(checksum)
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
    return FileBlocks.build(file_hash, module, tuple(spans), frozenset(stateful), frozenset(cached))
