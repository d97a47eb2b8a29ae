# ruff: noqa: UP006, UP031, UP035, UP045  (this file runs in any Python >= 3.8)
"""In the zygote: import the modules a project's runs imported last time, before forking them
(and, in each run, `imported_modules`: what it imported, for the server to learn).

Loaded by `worker.py` (the project's interpreter, standard library only, Python 3.8 syntax). The
server sends the list it learned (`preimports.py`); each module is imported once here, so every
forked run finds it in `sys.modules` instead of importing it again. A module is refused, and the
zygote marked unsafe (it forks nothing more; the server replaces it), when importing it

- imports code from under the project root (an editable install, a plugin that loads the
  project): the zygote must never hold project code, which the runs must see fresh;
- leaves a thread running: `fork()` copies only the calling thread, so a lock that thread
  held stays locked forever in every child.
"""

from __future__ import annotations

import gc
import importlib
import os
import shutil
import sys
import tempfile
from typing import Any, Dict, List, Optional, Set

MAX_MODULES = 3000
SKIP_PREFIXES = ("_mcp_code_tools", "__main__", "__mp_main__", "conftest")


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


ENVIRONMENTS = frozenset({"site-packages", "dist-packages", ".venv", "venv", ".tox", ".nox", "__pypackages__"})
"""Folders of an installed environment (as `recorder.OUTSIDE`): a project's own `.venv` lives
under its root, and what is installed there is third-party code, not the project's."""


def _under(path: Optional[str], prefix: str) -> bool:
    """Whether `path` is project code: under the root, outside any environment folder in it."""
    if not isinstance(path, str):
        return False
    full = os.path.abspath(path)
    if not full.startswith(prefix):
        return False
    return not (set(full[len(prefix) :].split(os.sep)) & ENVIRONMENTS)


def project_names(root: str) -> Set[str]:
    """Top-level import names the project itself provides (its files and packages, src/ too)."""
    names: Set[str] = set()
    for base in (root, os.path.join(root, "src")):
        try:
            entries = os.listdir(base)
        except OSError:
            continue
        for entry in entries:
            if entry.endswith(".py"):
                names.add(entry[:-3])
            elif os.path.isdir(os.path.join(base, entry)) and entry.isidentifier():
                names.add(entry)
    return names


def imported_modules(root: str, baseline: Set[str]) -> List[str]:
    """In a forked run, after it: the modules imported since `baseline` (what the zygote had)
    that are not the project's: neither under the root nor named like one of its top-level files
    or packages; only ones importable by name. The server learns them for the next zygote."""
    prefix = os.path.abspath(root).rstrip(os.sep) + os.sep
    own = project_names(root)
    found: List[str] = []
    for name, module in list(sys.modules.items()):
        if name in baseline or module is None or name.startswith(SKIP_PREFIXES):
            continue
        if name.split(".")[0] in own or _under(getattr(module, "__file__", None), prefix):
            continue
        spec = getattr(module, "__spec__", None)
        if spec is None or getattr(spec, "name", None) != name:
            continue
        found.append(name)
        if len(found) >= MAX_MODULES:
            break
    return sorted(found)


def preimport(modules: List[str], root: str) -> Dict[str, Any]:
    """Import `modules` in order. Returns {ok, dropped: {name: why}, unsafe}; stops at the first
    module that makes this process unsafe to fork from."""
    prefix = os.path.abspath(root).rstrip(os.sep) + os.sep
    own = project_names(root)
    ok: List[str] = []
    dropped: Dict[str, str] = {}
    unsafe = False
    threads = _threads()
    for name in modules[:MAX_MODULES]:
        if name in sys.modules:
            ok.append(name)
            continue
        if name.split(".")[0] in own or name.startswith(SKIP_PREFIXES):
            dropped[name] = "a module of the project"
            continue
        before = set(sys.modules)
        try:
            importlib.import_module(name)
        except BaseException as exc:  # a module that fails here is only not pre-imported
            dropped[name] = "import failed: %s: %s" % (type(exc).__name__, str(exc)[:200])
            continue
        project = [
            m for m in set(sys.modules) - before if _under(getattr(sys.modules.get(m), "__file__", None), prefix)
        ]
        if project:
            dropped[name] = "imports project code (%s)" % sorted(project)[0]
            unsafe = True
            break
        if _threads() > threads:
            dropped[name] = "leaves a thread running (fork-unsafe)"
            unsafe = True
            break
        ok.append(name)
    warm_caches()
    gc.collect()
    if hasattr(gc, "freeze"):
        gc.freeze()
    return {"ok": ok, "dropped": dropped, "unsafe": unsafe}


def warm_caches() -> None:
    """Fill, once in the zygote, the per-process caches that every run would otherwise fill again
    from nothing, of libraries loaded here (never the project's: nothing of it is loaded here).
    Nothing is written: what is not cached on disk already is left to the runs.

    Hypothesis: its table of unicode categories (read from `.hypothesis` and rebuilt into tuples,
    with checks quadratic in the table's size), and its scan of the loaded modules for constants
    (a path lookup per module, and a parse of each one outside the libraries). A run then scans
    only the modules it imported itself, as a fresh process would find them. Our own modules
    (this zygote's `__main__` and the ones it loaded) are marked seen unscanned: hypothesis draws
    no constants from them, as in a `python -m pytest` run, which never loads them."""
    if "hypothesis" not in sys.modules:
        return
    try:
        from hypothesis import configuration
        from hypothesis.internal.charmap import charmap, charmap_file
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.conjecture.providers import _get_local_constants
    except Exception:  # another hypothesis: the runs fill their caches themselves
        return
    seen = getattr(providers, "_seen_modules", None)
    if isinstance(seen, set):
        seen.update(id(m) for n, m in list(sys.modules.items()) if n == "__main__" or n.startswith(SKIP_PREFIXES[0]))
    try:
        if charmap_file().exists():
            charmap()
    except Exception:
        pass
    home = getattr(configuration, "__hypothesis_home_directory", None)
    scratch = tempfile.mkdtemp(prefix="mcp-hypothesis-")
    try:
        configuration.set_hypothesis_home_dir(scratch)  # its cache files of our own modules: not in the root
        _get_local_constants()
    except Exception:
        pass
    finally:
        configuration.set_hypothesis_home_dir(home)
        shutil.rmtree(scratch, ignore_errors=True)
