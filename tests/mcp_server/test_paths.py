"""The one path check: relative, absolute, `..`, symlinks, special files, NUL bytes, several roots."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mcp_server.paths import (
    FileChecker,
    FileSkipped,
    PathRefused,
    ResolvedPath,
    WalkLimit,
    resolve_path,
    resolve_root,
    safe_walk,
)


@pytest.fixture
def workspace(tmp_path: Path) -> tuple[Path, Path]:
    """Two allowed roots and, beside them, a directory outside both."""
    root = tmp_path / "root"
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("x = 1\n")
    (root / "top.py").write_text("")
    other = tmp_path / "other"
    other.mkdir()
    (other / "lib.py").write_text("")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("s3cret")
    return root.resolve(), other.resolve()


def test_relative_paths_are_taken_from_the_root(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    resolved = resolve_path([root], "pkg/mod.py")
    assert resolved == ResolvedPath(root, root / "pkg" / "mod.py")
    assert resolved.rel == "pkg/mod.py"
    assert resolve_path([root], ".").rel == "."
    assert resolve_path([root], "pkg/../top.py").rel == "top.py"  # `..` that stays inside is fine


def test_absolute_paths_inside_a_root_are_accepted(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    assert resolve_path([root], str(root / "pkg" / "mod.py")).rel == "pkg/mod.py"


@pytest.mark.parametrize("raw", ["{outside}/secret.txt", "/etc/passwd", "/"])
def test_absolute_paths_outside_every_root_are_refused(workspace: tuple[Path, Path], raw: str) -> None:
    root, _ = workspace
    raw = raw.format(outside=root.parent / "outside")
    with pytest.raises(PathRefused, match="outside every allowed root") as refused:
        resolve_path([root], raw)
    assert raw in str(refused.value)  # the message names the path
    assert "roots" in str(refused.value)  # and the setting


@pytest.mark.parametrize(
    "raw", ["..", "../outside/secret.txt", "pkg/../../outside", "pkg/../../../../../../etc/passwd"]
)
def test_dotdot_escapes_are_refused(workspace: tuple[Path, Path], raw: str) -> None:
    root, _ = workspace
    with pytest.raises(PathRefused, match="outside every allowed root"):
        resolve_path([root], raw)


def test_a_symlink_inside_pointing_outside_is_refused(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    (root / "escape.txt").symlink_to(root.parent / "outside" / "secret.txt")
    (root / "escape_dir").symlink_to(root.parent / "outside")
    for raw in ("escape.txt", "escape_dir", "escape_dir/secret.txt", str(root / "escape.txt")):
        with pytest.raises(PathRefused, match="outside every allowed root"):
            resolve_path([root], raw)
    # A dangling link to outside is refused too, even when the path need not exist.
    (root / "dangling").symlink_to(root.parent / "outside" / "not-yet")
    with pytest.raises(PathRefused, match="outside every allowed root"):
        resolve_path([root], "dangling", must_exist=False)


def test_a_symlink_inside_pointing_inside_is_followed(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    (root / "alias.py").symlink_to(root / "pkg" / "mod.py")
    (root / "alias_dir").symlink_to("pkg")  # relative link
    assert resolve_path([root], "alias.py").path == root / "pkg" / "mod.py"
    assert resolve_path([root], "alias_dir/mod.py").rel == "pkg/mod.py"


def test_a_symlink_loop_is_refused_cleanly(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    (root / "loop_a").symlink_to(root / "loop_b")
    (root / "loop_b").symlink_to(root / "loop_a")
    with pytest.raises(PathRefused):
        resolve_path([root], "loop_a")


def test_device_files_are_refused() -> None:
    with pytest.raises(PathRefused, match="not a regular file or directory"):
        resolve_path([Path("/dev")], "null")
    with pytest.raises(PathRefused, match="not a regular file or directory"):
        resolve_path([Path("/dev")], "/dev/zero")


def test_a_link_to_a_device_is_refused(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    (root / "devnull").symlink_to("/dev/null")
    with pytest.raises(PathRefused):
        resolve_path([root], "devnull")


def test_fifos_and_sockets_are_refused(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    os.mkfifo(root / "pipe")
    with pytest.raises(PathRefused, match="not a regular file or directory"):
        resolve_path([root], "pipe")  # and it does not block: the check never opens the file
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(root / "sock"))
        with pytest.raises(PathRefused, match="not a regular file or directory"):
            resolve_path([root], "sock")


@pytest.mark.parametrize("raw", ["pkg/mod.py\x00.txt", "\x00", "pkg\x00/../../etc"])
def test_nul_bytes_are_refused(workspace: tuple[Path, Path], raw: str) -> None:
    root, _ = workspace
    with pytest.raises(PathRefused, match="NUL byte"):
        resolve_path([root], raw)


def test_empty_paths_are_refused(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    with pytest.raises(PathRefused, match="non-empty"):
        resolve_path([root], "")


def test_missing_files(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    with pytest.raises(PathRefused, match="does not exist"):
        resolve_path([root], "pkg/nope.py")
    assert resolve_path([root], "pkg/new.py", must_exist=False).rel == "pkg/new.py"
    assert resolve_path([root], "new_dir/new.py", must_exist=False).rel == "new_dir/new.py"


def test_kinds(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    assert resolve_path([root], "pkg", kind="dir").rel == "pkg"
    assert resolve_path([root], "top.py", kind="file").rel == "top.py"
    with pytest.raises(PathRefused, match="is a directory, not a file"):
        resolve_path([root], "pkg", kind="file")
    with pytest.raises(PathRefused, match="is not a directory"):
        resolve_path([root], "top.py", kind="dir")


def test_several_roots(workspace: tuple[Path, Path]) -> None:
    root, other = workspace
    roots = [root, other]
    # Relative paths go to the first root, or to the call's root.
    assert resolve_path(roots, "top.py").root == root
    assert resolve_path(roots, "lib.py", root=other) == ResolvedPath(other, other / "lib.py")
    with pytest.raises(PathRefused, match="does not exist"):
        resolve_path(roots, "lib.py")
    # An absolute path in the second root belongs to it.
    found = resolve_path(roots, str(other / "lib.py"))
    assert found.root == other and found.rel == "lib.py"
    # A link from one allowed root into another is allowed; outside both is not.
    (root / "to_other").symlink_to(other / "lib.py")
    assert resolve_path(roots, "to_other").root == other
    with pytest.raises(PathRefused):
        resolve_path(roots, str(root.parent / "outside" / "secret.txt"))


def test_resolve_root(workspace: tuple[Path, Path]) -> None:
    root, other = workspace
    assert resolve_root([root, other], None) == root
    assert resolve_root([root, other], str(other)) == other
    assert resolve_root([root, other], "pkg") == root / "pkg"  # relative to the first root
    with pytest.raises(PathRefused, match="outside every allowed root"):
        resolve_root([root], str(root.parent / "outside"))
    with pytest.raises(PathRefused, match="outside every allowed root"):
        resolve_root([root], "..")
    with pytest.raises(PathRefused, match="not a directory"):
        resolve_root([root], "top.py")
    with pytest.raises(PathRefused, match="NUL byte"):
        resolve_root([root], "pkg\x00")
    (root / "link_out").symlink_to(root.parent / "outside")
    with pytest.raises(PathRefused, match="outside every allowed root"):
        resolve_root([root], "link_out")


# --- files reached by a walk: FileChecker and safe_walk ---------------------------------------------


def test_file_checker_reads_regular_files_inside_and_skips_the_rest(workspace: tuple[Path, Path]) -> None:
    root, other = workspace
    outside = root.parent / "outside"
    checker = FileChecker([root, other], max_bytes=64)
    checked, data = checker.read(str(root / "pkg" / "mod.py"))
    assert data == b"x = 1\n" and checked.real == str(root / "pkg" / "mod.py")
    (root / "alias.py").symlink_to(root / "pkg" / "mod.py")  # a link inside: read through
    assert checker.read(str(root / "alias.py"))[0].real == str(root / "pkg" / "mod.py")
    (root / "to_other.py").symlink_to(other / "lib.py")  # into another allowed root: fine
    assert checker.read(str(root / "to_other.py"))[1] == b""
    cases = {
        "out.py": (outside / "secret.txt", "outside every allowed root"),
        "passwd.py": (Path("/etc/passwd"), "outside every allowed root"),
        "zero.py": (Path("/dev/zero"), "outside every allowed root"),
        "fd.py": (Path("/proc/self/fd/1"), "outside every allowed root|dangling"),  # a pipe has no path
        "dangling.py": (root / "nope", "dangling"),
        "dir.py": (root / "pkg", "a directory"),
    }
    for name, (target, reason) in cases.items():
        (root / name).symlink_to(target)
        with pytest.raises(FileSkipped, match=reason):
            checker.read(str(root / name))
    (root / "loop_a.py").symlink_to(root / "loop_b.py")
    (root / "loop_b.py").symlink_to(root / "loop_a.py")
    with pytest.raises(FileSkipped, match="loop"):
        checker.check(str(root / "loop_a.py"))


def test_file_checker_never_blocks_on_a_fifo_and_bounds_sizes(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    os.mkfifo(root / "fifo.py")
    checker = FileChecker([root], max_bytes=64)
    with pytest.raises(FileSkipped, match="a FIFO, not a regular file"):
        checker.read(str(root / "fifo.py"))  # stat first; and the open is O_NONBLOCK regardless
    big = root / "big.py"
    with big.open("wb") as fh:
        fh.truncate(65)
    with pytest.raises(FileSkipped, match="65 bytes, over the limit of 64"):
        checker.read(str(big))
    # A folder reached through a link out of the root makes everything below it outside.
    (root / "outdir").symlink_to(root.parent / "outside")
    with pytest.raises(FileSkipped, match="outside every allowed root"):
        checker.check(str(root / "outdir" / "secret.txt"))


def test_file_checker_gives_every_spelling_of_a_path_the_verdict_of_its_resolved_form(
    workspace: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`check` takes a fast way for names already absolute and normal: other spellings (dots,
    doubled or trailing slashes, relative names, dot-folders, a folder link out) are resolved first."""
    root, _ = workspace
    outside = root.parent / "outside"
    (root / ".hidden").mkdir()
    (root / ".hidden" / "h.py").write_text("h = 1\n")
    (root / "outdir").symlink_to(outside)
    monkeypatch.chdir(root / "pkg")
    checker = FileChecker([root], max_bytes=64)
    same = {
        str(root / "pkg" / "mod.py"): str(root / "pkg" / "mod.py"),
        f"{root}/pkg/./mod.py": str(root / "pkg" / "mod.py"),
        f"{root}//pkg//mod.py": str(root / "pkg" / "mod.py"),
        f"{root}/pkg/../top.py": str(root / "top.py"),
        f"{root}/.hidden/h.py": str(root / ".hidden" / "h.py"),
        f"{root}/.hidden/../pkg/mod.py": str(root / "pkg" / "mod.py"),
        "mod.py": str(root / "pkg" / "mod.py"),
        "../top.py": str(root / "top.py"),
        f"{root}/pkg/mod.py/": str(root / "pkg" / "mod.py"),  # as os.path.abspath has it
    }
    for raw, real in same.items():
        assert checker.check(raw).real == real, raw
    refused = {
        f"{root}/../outside/secret.txt": "outside every allowed root",
        f"{root}/pkg/../../outside/secret.txt": "outside every allowed root",
        "../../outside/secret.txt": "outside every allowed root",
        f"{root}/outdir/secret.txt": "outside every allowed root",
        f"{root}/./outdir/secret.txt": "outside every allowed root",
        f"{root}/pkg/": "a directory",
        f"{root}/pkg/.": "a directory",
        "/": "outside every allowed root",
    }
    for raw, reason in refused.items():
        with pytest.raises(FileSkipped, match=reason):
            checker.check(raw)
    assert FileChecker([Path("/")], max_bytes=64).check("/etc/hostname").real == "/etc/hostname"


def test_file_checker_resolves_folders_as_realpath_does(workspace: tuple[Path, Path]) -> None:
    """Folders are resolved part by part (one lstat a part, memoized in a call): links in the middle,
    links to links, relative and upward targets, links out and back in, missing parts and loops
    give what `os.path.realpath` gives."""
    root, other = workspace
    outside = root.parent / "outside"
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "f.py").write_text("")
    (root / "a" / "up").symlink_to("..")  # relative, upward: root/
    (root / "a" / "to_b").symlink_to("b")  # relative: root/a/b
    (root / "a" / "to_to_b").symlink_to(root / "a" / "to_b")  # a link to a link
    (root / "a" / "b" / "other").symlink_to(other)  # into another allowed root
    (root / "a" / "b" / "out").symlink_to(outside)
    (outside / "back").symlink_to(root / "a")  # out and back in
    (root / "a" / "loop").symlink_to("loop")
    (root / "a" / "gone").symlink_to(root / "nothing")
    names = [
        "a/b/c/f.py",
        "a/up/a/b/c/f.py",
        "a/up/top.py",
        "a/to_b/c/f.py",
        "a/to_to_b/c/f.py",
        "a/to_to_b/other/lib.py",
        "a/b/out/secret.txt",
        "a/b/out/back/b/c/f.py",
        "a/loop/x/f.py",
        "a/gone/f.py",
        "a/missing/deeper/f.py",
        "a/to_b/c/../c/f.py",
    ]
    checker = FileChecker([root, other], max_bytes=64)
    for name in [*names, *reversed(names)]:  # the second time through, from the memo
        path = str(root / name)
        real = os.path.realpath(path)
        inside = any(real == str(r) or real.startswith(f"{r}/") for r in (root, other))
        if inside and os.path.isfile(real):
            assert checker.check(path).real == real, name
        else:
            with pytest.raises(FileSkipped):
                checker.check(path)


def test_safe_walk_never_follows_directory_links_and_is_bounded(workspace: tuple[Path, Path]) -> None:
    root, _ = workspace
    (root / "up").symlink_to("..")  # a loop, if it were followed
    (root / "outdir").symlink_to(root.parent / "outside")
    (root / "pkg" / "__pycache__").mkdir()
    (root / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"")
    seen = {d: sorted(e.name for e in entries) for d, entries in safe_walk(str(root), frozenset({"__pycache__"}), 100)}
    assert sorted(seen) == [str(root), str(root / "pkg")]
    assert seen[str(root)] == ["outdir", "pkg", "top.py", "up"]  # listed, not entered
    with pytest.raises(WalkLimit):
        list(safe_walk(str(root), frozenset(), 3))
