# ruff: noqa: UP006, UP035, UP045  (this file runs in any Python >= 3.8 with pytest)
"""In the forked child: a digest of the state a project module holds after its import.

Standard library only, Python 3.8 syntax (loaded by `recorder.py` in the project's interpreter).

A function that runs while the project imports itself (`MO = weekday(0)`, a decorator, a cache
filled at import) affects every test through what it leaves in the modules' namespaces, not
through a call the test makes. Its edit need not select every test: if the modules hold the same
state after importing the edited code, only the tests that call it afterwards are affected. This
module computes what "the same state" means, as a digest of everything reachable from a module's
globals:

- values (None, bools, numbers, strings, bytes) by value; lists, tuples, dicts, sets and any
  `Mapping`, `Sequence` or `Set` by type and content (sets order-free);
- functions by module and qualified name plus what can differ between two imports: defaults,
  closure cells, attributes (`functools.wraps`' `__wrapped__`, a `singledispatch` registry); not
  the code of a file (the project's edits are what `selection/blocks.py` sees: a test calling
  the function is charged its block; another library's are the environment fingerprint's), but
  the code of text compiled at run time (attrs' generated `__init__`), which nothing else sees;
- the project's classes by name, bases and class dictionary; instances of project classes by
  type and `__dict__`/`__slots__` values (so `weekday(0)` is `weekday` with `weekday=0, n=None`);
- other libraries' classes and modules by name only; their instances by type, plus the
  value of the well-known value types (`datetime`, `Decimal`, `re.Pattern`, `Enum` members, ...);
  weak references by their referent; locks by type;
- an object seen before in the same digest by its first position (cycles, shared objects).

Never an address, an id or a hash-randomized order. Anything else (a `functools.lru_cache` that
holds results, a generator, a frame, more than `MAX_NODES` objects) makes the module's digest
None: unknown, which callers must treat as changed. What a function leaves outside the project's
namespaces (a registry of another library, `os.environ`, `warnings` filters) is not seen: the
README names that limit.
"""

from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import hashlib
import re
import types
import weakref
from collections import abc
from typing import Any, Callable, Dict, List, Optional

MAX_NODES = 200_000
SKIPPED_GLOBALS = frozenset(
    {"__builtins__", "__loader__", "__spec__", "__cached__", "__file__", "__path__", "__package__"}
)
SKIPPED_ATTRIBUTES = frozenset({"__dict__", "__weakref__", "__module__", "__qualname__"})
VALUE_TYPES = (
    datetime.date,
    datetime.time,
    datetime.timedelta,
    datetime.timezone,
    decimal.Decimal,
    fractions.Fraction,
    range,
    slice,
    complex,
)
LOCK_TYPES = tuple({type(__import__("threading").Lock()), type(__import__("threading").RLock())})
OPAQUE_TYPES = (types.GeneratorType, types.CoroutineType, types.FrameType, types.TracebackType)


class Unknown(Exception):
    """The state cannot be compared (see the module's text)."""


class Digest:
    """One digest computation; `is_project(filename)` tells the project's code from the rest."""

    def __init__(self, is_project: Callable[[str], bool]) -> None:
        self._is_project = is_project
        self._module_files: Dict[str, bool] = {}
        self._seen: Dict[int, int] = {}
        self._keep: List[Any] = []
        self._nodes = 0
        self._hash: Any = None

    def module(self, module: Any) -> Optional[str]:
        """The digest of `module`'s namespace (hex), or None if it cannot be computed."""
        self._seen = {}
        self._keep = []
        self._nodes = 0
        self._hash = hashlib.blake2b(digest_size=16)
        try:
            namespace = vars(module)
            for key in list(namespace):
                if key in SKIPPED_GLOBALS:
                    continue
                self._emit("k", repr(key))
                self._walk(namespace[key])
        except Unknown:
            return None
        except Exception:  # a property or __getattr__ that raises: nothing sure can be said
            return None
        finally:
            self._seen = {}
            self._keep = []
        return str(self._hash.hexdigest())

    # --- output ---------------------------------------------------------------------------------

    def _emit(self, tag: str, text: str = "") -> None:
        data = text.encode("utf-8", "surrogatepass")
        self._hash.update(tag.encode() + str(len(data)).encode() + b":" + data)

    # --- what belongs to the project -------------------------------------------------------------

    def _project_module(self, name: Any) -> bool:
        if not isinstance(name, str):
            return False
        found = self._module_files.get(name)
        if found is None:
            import sys

            filename = getattr(sys.modules.get(name), "__file__", None)
            found = self._module_files[name] = isinstance(filename, str) and self._is_project(filename)
        return found

    @staticmethod
    def _name(obj: Any) -> str:
        return str(getattr(obj, "__module__", None)) + ":" + str(getattr(obj, "__qualname__", None))

    # --- the walk -------------------------------------------------------------------------------

    def _walk(self, obj: Any) -> None:
        if obj is None or obj is Ellipsis or obj is NotImplemented or isinstance(obj, bool):
            self._emit("c", repr(obj))
            return
        kind = type(obj)
        if kind in (int, float, str, bytes):
            self._emit(kind.__name__[0], repr(obj))
            return
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise Unknown("too many objects")
        seen = self._seen.get(id(obj))
        if seen is not None:
            self._emit("@", str(seen))
            return
        self._seen[id(obj)] = len(self._seen)
        self._keep.append(obj)  # alive until the end: no id is reused meanwhile
        self._object(obj, kind)

    def _object(self, obj: Any, kind: type) -> None:
        if isinstance(obj, types.ModuleType):
            self._emit("m", str(getattr(obj, "__name__", "")))
        elif isinstance(obj, enum.Enum):
            self._emit("e", self._name(kind) + "." + str(obj.name))
        elif isinstance(obj, (int, float, str, bytes)):  # their subclasses
            base: Any = next(b for b in (int, float, str, bytes) if isinstance(obj, b))
            self._emit("v", self._name(kind) + "=" + repr(base(obj)))
            self._instance_state(obj, kind)
        elif isinstance(obj, type):
            self._class(obj)
        elif isinstance(obj, (types.FunctionType, types.MethodType, types.BuiltinFunctionType)):
            self._function(obj)
        elif isinstance(obj, types.CodeType):
            self._code(obj)
        elif isinstance(obj, (staticmethod, classmethod)):
            self._emit("d", kind.__name__)
            self._walk(obj.__func__)
        elif isinstance(obj, property):
            self._emit("p")
            for part in (obj.fget, obj.fset, obj.fdel):
                self._walk(part)
        elif isinstance(obj, VALUE_TYPES):
            self._emit("v", self._name(kind) + "=" + repr(obj))
        elif isinstance(obj, re.Pattern):
            self._emit("r", repr(obj.pattern) + "/" + str(obj.flags))
        elif isinstance(obj, weakref.ref):
            self._emit("w")
            self._walk(obj())
        elif isinstance(obj, LOCK_TYPES):
            self._emit("l", kind.__name__)
        elif isinstance(obj, OPAQUE_TYPES):
            raise Unknown(kind.__name__)
        elif hasattr(obj, "cache_info") and hasattr(obj, "__wrapped__"):  # functools.lru_cache
            info = obj.cache_info()
            if getattr(info, "currsize", 1):
                raise Unknown("a filled lru_cache")  # its results cannot be read
            self._emit("lru")
            self._walk(obj.__wrapped__)
        elif self._project_module(getattr(kind, "__module__", None)):
            self._instance(obj, kind)
        else:
            self._foreign(obj, kind)

    def _class(self, cls: type) -> None:
        self._emit("C", self._name(cls))
        if not self._project_module(cls.__module__):
            return
        self._walk(type(cls))
        self._walk(cls.__bases__)
        for key, value in list(vars(cls).items()):
            if key in SKIPPED_ATTRIBUTES:
                continue
            self._emit("k", repr(key))
            self._walk(value)

    def _function(self, function: Any) -> None:
        if isinstance(function, types.MethodType):
            self._emit("M")
            self._walk(function.__func__)
            self._walk(function.__self__)
            return
        self._emit("F", self._name(function))
        if isinstance(function, types.BuiltinFunctionType):
            owner = getattr(function, "__self__", None)
            if owner is not None and not isinstance(owner, types.ModuleType):
                self._walk(owner)  # `{}.get`: a bound method of some object holds that object
            return
        code = function.__code__
        if not self._on_disk(code.co_filename):
            self._walk(code)  # generated (exec'd text): no block sees its code, so it is state
        self._walk(function.__defaults__)
        self._walk(function.__kwdefaults__)
        for cell in function.__closure__ or ():
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                self._emit("0")
            else:
                self._walk(contents)
        for key, value in list(vars(function).items()):  # `__wrapped__`, singledispatch's registry
            self._emit("k", repr(key))
            self._walk(value)

    def _on_disk(self, filename: Any) -> bool:
        """Code from a file: the project's (its blocks are recorded) or another library's (the
        environment fingerprint covers it); else text a function compiled at run time."""
        return isinstance(filename, str) and not filename.startswith("<") and filename != ""

    def _code(self, code: types.CodeType) -> None:
        self._emit("K", code.co_name)
        self._emit("b", code.co_code.hex())
        self._emit("n", repr((code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars)))
        self._emit("a", repr((code.co_argcount, code.co_kwonlyargcount, code.co_flags)))
        self._walk(code.co_consts)

    def _instance(self, obj: Any, kind: type) -> None:
        self._emit("I")
        self._walk(kind)
        if isinstance(obj, (abc.Mapping, abc.Set, list, tuple)):
            self._container(obj)
        self._instance_state(obj, kind)

    def _instance_state(self, obj: Any, kind: type) -> None:
        state = getattr(obj, "__dict__", None)
        if isinstance(state, dict):
            for key, value in list(state.items()):
                self._emit("k", repr(key))
                self._walk(value)
        for klass in kind.__mro__:
            for slot in getattr(klass, "__dict__", {}).get("__slots__", ()) or ():
                if isinstance(slot, str) and slot not in ("__dict__", "__weakref__"):
                    self._emit("s", slot)
                    self._walk(getattr(obj, slot, Unknown))

    def _foreign(self, obj: Any, kind: type) -> None:
        """An object of another library's (or a builtin) type: its type, and its content when it
        is a container or a `weakref` collection."""
        self._emit("X", self._name(kind))
        if isinstance(obj, (weakref.WeakValueDictionary, weakref.WeakKeyDictionary)):
            self._mapping(list(obj.items()))
        elif isinstance(obj, weakref.WeakSet):
            self._set(list(obj))
        elif isinstance(obj, (abc.Mapping, abc.Set, list, tuple, abc.Sequence)) and not isinstance(obj, memoryview):
            self._container(obj)
        elif hasattr(obj, "__reduce_ex__") and kind.__module__ in ("functools", "collections", "array"):
            self._walk(obj.__reduce_ex__(4)[1:3])  # functools.partial, deque, array: by value

    def _container(self, obj: Any) -> None:
        if isinstance(obj, abc.Mapping):
            self._mapping(list(obj.items()))
        elif isinstance(obj, abc.Set):
            self._set(list(obj))
        else:
            items = list(obj)
            self._emit("[", str(len(items)))
            for item in items:
                self._walk(item)

    def _mapping(self, items: List[Any]) -> None:
        self._emit("{", str(len(items)))
        for key, value in items:
            self._walk(key)
            self._walk(value)

    def _set(self, items: List[Any]) -> None:
        """Order-free: each element's own digest, sorted (an element seen before in this digest
        keeps its position: order-dependent, so two equal sets may compare unequal; never the
        other way round)."""
        parts = []
        outer = self._hash
        for item in items:
            self._hash = hashlib.blake2b(digest_size=16)
            self._walk(item)
            parts.append(self._hash.hexdigest())
        self._hash = outer
        self._emit("(", ",".join(sorted(parts)))


def module_digests(modules: Dict[str, Any], is_project: Callable[[str], bool]) -> Dict[str, Optional[str]]:
    """Each named module's digest (None: unknown)."""
    digest = Digest(is_project)
    return {name: digest.module(module) for name, module in modules.items()}
