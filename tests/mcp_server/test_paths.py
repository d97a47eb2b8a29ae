"""The one path check: relative, absolute, `..`, symlinks, special files, NUL bytes, several roots."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from mcp_server.paths import PathRefused, ResolvedPath, resolve_path, resolve_root


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
