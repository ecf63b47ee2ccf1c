"""Applying layers into a root filesystem: whiteouts, opaque directories, and every way a
hostile layer might write outside the root (tar files built here)."""

from __future__ import annotations

import gzip
import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from lamina.images import InvalidImage
from lamina.images.unpack import MOUNT_DIRS, MOUNT_FILES, unpack_layers

Entry = tuple[str, str, str | bytes]  # (name, "file" | "dir" | "symlink" | "link" | ..., data)


def layer(
    tmp: Path, name: str, entries: list[Entry], compress: bool = False, mode: int = 0o644
) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, kind, data in entries:
            info = tarfile.TarInfo(path)
            info.mtime = 1_700_000_000
            info.uid = info.gid = 1000
            if kind == "file":
                payload = data.encode() if isinstance(data, str) else data
                info.size = len(payload)
                info.mode = mode
                tar.addfile(info, io.BytesIO(payload))
                continue
            if kind == "exec":
                payload = data.encode() if isinstance(data, str) else data
                info.size = len(payload)
                info.mode = 0o6755  # setuid and setgid: dropped
                tar.addfile(info, io.BytesIO(payload))
                continue
            info.type = {
                "dir": tarfile.DIRTYPE,
                "symlink": tarfile.SYMTYPE,
                "link": tarfile.LNKTYPE,
                "chr": tarfile.CHRTYPE,
                "fifo": tarfile.FIFOTYPE,
            }[kind]
            info.mode = 0o755
            if kind in ("symlink", "link"):
                info.linkname = str(data)
            tar.addfile(info)
    raw = buf.getvalue()
    path = tmp / name
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "rootfs"


def test_files_dirs_links_and_modes(tmp_path: Path, root: Path) -> None:
    base = layer(
        tmp_path,
        "l1",
        [
            ("usr/", "dir", ""),
            ("usr/bin/", "dir", ""),
            ("usr/bin/tool", "exec", "#!/bin/sh\n"),
            ("/etc/motd", "file", "hello"),  # an absolute name is taken under the root
            ("./usr/lib/x.so", "file", b"\x7fELF"),  # an implicit parent is made
            ("bin", "symlink", "usr/bin"),
            ("usr/bin/tool2", "link", "usr/bin/tool"),
            ("dev/null", "chr", ""),
            ("run.fifo", "fifo", ""),
        ],
        compress=True,
    )
    unpack_layers([base], root)
    assert (root / "etc/motd").read_text() == "hello"
    assert (root / "usr/lib/x.so").read_bytes() == b"\x7fELF"
    mode = (root / "usr/bin/tool").stat().st_mode
    assert stat.S_IMODE(mode) == 0o755  # setuid and setgid dropped
    assert os.readlink(root / "bin") == "usr/bin"
    assert (root / "usr/bin/tool2").stat().st_ino == (root / "usr/bin/tool").stat().st_ino
    assert not (root / "dev/null").exists()
    assert not (root / "run.fifo").exists()
    assert (root / "etc/motd").stat().st_mtime == 1_700_000_000
    if os.geteuid() == 0:
        assert (root / "etc/motd").stat().st_uid == 1000


def test_mount_points_are_made(tmp_path: Path, root: Path) -> None:
    unpack_layers(
        [layer(tmp_path, "l1", [("etc/passwd", "file", "root:x:0:0::/:/bin/sh\n")])], root
    )
    for d in MOUNT_DIRS:
        assert (root / d).is_dir() and not (root / d).is_symlink(), d
    for f in MOUNT_FILES:
        assert (root / f).is_file() and not (root / f).is_symlink(), f
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "var/task").stat().st_mode) == 0o755
    # never replacing a file the image has
    assert (root / "etc/passwd").read_text().startswith("root:")
    assert (root / "etc/hosts").read_text() == ""


def test_mount_point_symlinks_are_replaced_and_files_refused(tmp_path: Path, root: Path) -> None:
    unpack_layers(
        [
            layer(
                tmp_path,
                "l1",
                [("etc/resolv.conf", "symlink", "/run/resolv.conf"), ("tmp", "symlink", "/")],
            )
        ],
        root,
    )
    assert (root / "etc/resolv.conf").is_file() and not (root / "etc/resolv.conf").is_symlink()
    assert (root / "tmp").is_dir() and not (root / "tmp").is_symlink()
    with pytest.raises(InvalidImage, match="/proc"):
        unpack_layers([layer(tmp_path, "l2", [("proc", "file", "x")])], tmp_path / "other")


def test_whiteouts_delete_lower_files_and_trees(tmp_path: Path, root: Path) -> None:
    lower = layer(
        tmp_path,
        "l1",
        [
            ("app/keep", "file", "1"),
            ("app/gone", "file", "2"),
            ("app/tree/a/b", "file", "3"),
            ("app/link", "symlink", "/etc"),
        ],
    )
    upper = layer(
        tmp_path,
        "l2",
        [
            ("app/.wh.gone", "file", ""),
            ("app/.wh.tree", "file", ""),
            ("app/.wh.link", "file", ""),
            ("app/.wh.never-was", "file", ""),
            ("missing/.wh.x", "file", ""),
        ],
    )
    unpack_layers([lower, upper], root)
    assert sorted(os.listdir(root / "app")) == ["keep"]
    assert not (root / "missing").exists()
    assert (root / "etc").is_dir()  # the whited-out link was removed, not followed


def test_opaque_directory_keeps_only_its_own_layer(tmp_path: Path, root: Path) -> None:
    lower = layer(
        tmp_path,
        "l1",
        [("d/old", "file", "1"), ("d/sub/old", "file", "2"), ("other/x", "file", "3")],
    )
    # the layer's own entries come before the marker: they must stay all the same
    upper = layer(
        tmp_path,
        "l2",
        [
            ("d/", "dir", ""),
            ("d/sub/new", "file", "4"),
            ("d/.wh..wh..opq", "file", ""),
            ("d/fresh", "file", "5"),
        ],
    )
    unpack_layers([lower, upper], root)
    assert sorted(os.listdir(root / "d")) == ["fresh", "sub"]
    assert os.listdir(root / "d/sub") == ["new"]
    assert (root / "other/x").read_text() == "3"
    assert not list(root.rglob(".wh.*"))


def test_upper_layer_replaces_kinds(tmp_path: Path, root: Path) -> None:
    lower = layer(tmp_path, "l1", [("a", "file", "1"), ("b/c", "file", "2"), ("s", "file", "3")])
    upper = layer(tmp_path, "l2", [("a/", "dir", ""), ("b", "file", "x"), ("s", "symlink", "a")])
    unpack_layers([lower, upper], root)
    assert (root / "a").is_dir()
    assert (root / "b").read_text() == "x"
    assert os.readlink(root / "s") == "a"


def test_file_replacing_a_hard_link_does_not_write_through_it(tmp_path: Path, root: Path) -> None:
    lower = layer(tmp_path, "l1", [("orig", "file", "original"), ("alias", "link", "orig")])
    upper = layer(tmp_path, "l2", [("alias", "file", "new")])
    unpack_layers([lower, upper], root)
    assert (root / "orig").read_text() == "original"
    assert (root / "alias").read_text() == "new"


@pytest.mark.parametrize(
    "entries",
    [
        [("../escape", "file", "x")],
        [("a/../../escape", "file", "x")],
        [("/../escape", "file", "x")],
        [("a/../../.wh.escape", "file", "")],
    ],
)
def test_dotdot_leaving_the_root_is_refused(
    tmp_path: Path, root: Path, entries: list[Entry]
) -> None:
    with pytest.raises(InvalidImage, match="leaving the root"):
        unpack_layers([layer(tmp_path, "l1", entries)], root)
    assert not (tmp_path / "escape").exists()


def test_dotdot_inside_the_root_is_fine(tmp_path: Path, root: Path) -> None:
    unpack_layers([layer(tmp_path, "l1", [("a/../b", "file", "x")])], root)
    assert (root / "b").read_text() == "x"


def test_symlinked_parent_is_never_followed(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("safe")
    for n, entries in enumerate(
        [
            # a link to outside, then a file "through" it
            [("evil", "symlink", str(outside)), ("evil/planted", "file", "x")],
            [("evil", "symlink", str(outside)), ("evil/victim", "file", "x")],
            # a relative link climbing out, then a directory and a hard link through it
            [("up", "symlink", "../.."), ("up/newdir/", "dir", "")],
            # a link inside the root is not walked either
            [("d/", "dir", ""), ("alias", "symlink", "d"), ("alias/f", "file", "x")],
            # a whiteout through a link
            [("evil", "symlink", str(outside)), ("evil/.wh.victim", "file", "")],
        ]
    ):
        with pytest.raises(InvalidImage, match="symlink"):
            unpack_layers([layer(tmp_path, f"l{n}", entries)], tmp_path / f"root{n}")
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (outside / "victim").read_text() == "safe"
    assert not (tmp_path / "newdir").exists()


def test_symlinked_parent_from_a_lower_layer(tmp_path: Path, root: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    lower = layer(tmp_path, "l1", [("etc", "symlink", str(outside))])
    upper = layer(tmp_path, "l2", [("etc/cron.d/job", "file", "x")])
    with pytest.raises(InvalidImage):
        unpack_layers([lower, upper], root)
    assert os.listdir(outside) == []


@pytest.mark.parametrize(
    "target", ["../outside/victim", "/../outside/victim", "via/victim", "nowhere", "dir"]
)
def test_hard_links_must_stay_inside(tmp_path: Path, root: Path, target: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("secret")
    entries: list[Entry] = [
        ("via", "symlink", str(outside)),
        ("dir/", "dir", ""),
        ("stolen", "link", target),
    ]
    with pytest.raises(InvalidImage):
        unpack_layers([layer(tmp_path, "l1", entries)], root)
    assert (outside / "victim").stat().st_nlink == 1


def test_absolute_hard_link_inside_is_fine(tmp_path: Path, root: Path) -> None:
    unpack_layers([layer(tmp_path, "l1", [("a/f", "file", "x"), ("g", "link", "/a/f")])], root)
    assert (root / "g").stat().st_ino == (root / "a/f").stat().st_ino


def test_zstd_and_garbage_layers_are_refused(tmp_path: Path, root: Path) -> None:
    zstd = tmp_path / "zstd"
    zstd.write_bytes(b"\x28\xb5\x2f\xfd" + b"\0" * 64)
    with pytest.raises(InvalidImage, match="zstd"):
        unpack_layers([zstd], root)
    garbage = tmp_path / "garbage"
    garbage.write_bytes(gzip.compress(b"this is not a tar file" * 40))
    with pytest.raises(InvalidImage, match="not a valid tar"):
        unpack_layers([garbage], tmp_path / "r2")
    truncated = tmp_path / "truncated"
    whole = layer(tmp_path, "whole", [("big", "file", os.urandom(100_000))], compress=True)
    truncated.write_bytes(whole.read_bytes()[:2000])
    with pytest.raises(InvalidImage, match="not a valid tar"):
        unpack_layers([truncated], tmp_path / "r3")


def test_size_budget(tmp_path: Path, root: Path) -> None:
    with pytest.raises(InvalidImage, match="limit"):
        unpack_layers([layer(tmp_path, "l1", [("f", "file", "x" * 5000)])], root, max_bytes=4000)


def test_a_strict_umask_still_gives_a_walkable_tree(tmp_path: Path, root: Path) -> None:
    old = os.umask(0o077)
    try:
        unpack_layers([layer(tmp_path, "l1", [("implicit/parent/f", "file", "x")])], root)
    finally:
        os.umask(old)
    for path in (root, root / "implicit", root / "implicit/parent", root / "opt"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    assert stat.S_IMODE((root / "implicit/parent/f").stat().st_mode) == 0o644
