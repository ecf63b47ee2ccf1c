"""The content-addressed code store (`lamina.store.blobs.CodeStore`)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile
from pathlib import Path

import pytest

from lamina.store.blobs import CodeStore, UnsafePackageError


def make_zip(entries: list[tuple[str, bytes, int]]) -> bytes:
    """Entries are (name, data, st_mode); st_mode includes the file type bits."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            zf.writestr(info, data)
    return buf.getvalue()


def reg(name: str, data: bytes, perm: int = 0o644) -> tuple[str, bytes, int]:
    return (name, data, stat.S_IFREG | perm)


def link(name: str, target: str) -> tuple[str, bytes, int]:
    return (name, target.encode(), stat.S_IFLNK | 0o777)


def listing(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


@pytest.fixture
def store(tmp_path: Path) -> CodeStore:
    return CodeStore(tmp_path / "code")


def test_put_stores_zip_and_unpacks_tree(store: CodeStore, tmp_path: Path) -> None:
    data = make_zip(
        [
            reg("handler.py", b"def handler(e, c): pass\n"),
            reg("bootstrap", b"#!/bin/sh\n", 0o755),
            reg("lib/helper.py", b"X = 1\n", 0o600),
            reg("bin/tool", b"#!/bin/sh\n", 0o700),
            link("current", "lib"),
            link("lib/h", "helper.py"),
        ]
    )
    code = store.put(data)
    root = tmp_path / "code"
    sha = hashlib.sha256(data).hexdigest()

    assert code.sha256 == sha
    assert code.size == len(data)
    assert code.task_dir == root / "tasks" / sha == store.task_dir(sha)
    assert (root / "zips" / f"{sha}.zip").read_bytes() == data
    assert store.zip_path(sha) == root / "zips" / f"{sha}.zip"
    assert store.has(sha)

    task = code.task_dir
    assert (task / "handler.py").read_bytes() == b"def handler(e, c): pass\n"
    assert (task / "lib" / "helper.py").read_bytes() == b"X = 1\n"
    # The executable bit survives; other permission bits are normalised.
    assert stat.S_IMODE((task / "bootstrap").stat().st_mode) == 0o755
    assert stat.S_IMODE((task / "bin" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((task / "handler.py").stat().st_mode) == 0o644
    assert stat.S_IMODE((task / "lib" / "helper.py").stat().st_mode) == 0o644
    # Symlinks are created as symlinks, with their targets verbatim, and work.
    assert (task / "current").is_symlink()
    assert os.readlink(task / "current") == "lib"
    assert (task / "current" / "helper.py").read_bytes() == b"X = 1\n"
    assert os.readlink(task / "lib" / "h") == "helper.py"
    assert listing(root / "tmp") == []


def test_put_of_same_bytes_is_a_noop(store: CodeStore, tmp_path: Path) -> None:
    data = make_zip([reg("a.py", b"1")])
    first = store.put(data)
    marker = first.task_dir / "marker"
    marker.write_text("still here")  # a re-unpack would replace the tree and lose this
    second = store.put(data)
    assert second == first
    assert marker.read_text() == "still here"
    assert listing(tmp_path / "code" / "zips") == [f"{first.sha256}.zip"]
    assert listing(tmp_path / "code" / "tasks") == [first.sha256]
    assert listing(tmp_path / "code" / "tmp") == []


def test_different_packages_get_different_dirs(store: CodeStore) -> None:
    a = store.put(make_zip([reg("a.py", b"1")]))
    b = store.put(make_zip([reg("a.py", b"2")]))
    assert a.sha256 != b.sha256
    assert (a.task_dir / "a.py").read_bytes() == b"1"
    assert (b.task_dir / "a.py").read_bytes() == b"2"


def test_put_restores_missing_zip_when_tree_exists(store: CodeStore) -> None:
    data = make_zip([reg("a.py", b"1")])
    code = store.put(data)
    store.zip_path(code.sha256).unlink()
    assert not store.has(code.sha256)
    store.put(data)
    assert store.has(code.sha256)
    assert store.zip_path(code.sha256).read_bytes() == data


@pytest.mark.parametrize(
    "entries",
    [
        # "a" -> "." is harmless alone, but "a/.." is then the parent of the package root.
        [link("a", "."), link("l", "a/..")],
        # Lexically "sub/up/.." is "sub"; on disk "sub/up" is the root, so it is root/..
        [reg("sub/x", b"1"), link("sub/up", ".."), link("esc", "sub/up/..")],
        # A chain through two links, the second one relative to where the first lands.
        [reg("d/e/f", b"1"), link("d/e/g", "../.."), link("h", "d/e/g/..")],
    ],
    ids=["dot-then-dotdot", "up-through-subdir", "two-level-chain"],
)
def test_symlink_chain_escaping_root_is_refused_and_leaves_nothing(
    store: CodeStore, tmp_path: Path, entries: list[tuple[str, bytes, int]]
) -> None:
    data = make_zip([reg("handler.py", b"x"), *entries])
    with pytest.raises(UnsafePackageError, match="points outside the package root"):
        store.put(data)
    root = tmp_path / "code"
    assert listing(root / "zips") == []
    assert listing(root / "tasks") == []
    assert listing(root / "tmp") == []
    assert not store.has(hashlib.sha256(data).hexdigest())


def test_absolute_symlink_outside_is_refused(store: CodeStore, tmp_path: Path) -> None:
    # control.packages rejects these first; the store must not rely on that.
    data = make_zip([link("l", str(tmp_path))])
    with pytest.raises(UnsafePackageError):
        store.put(data)
    assert listing(tmp_path / "code" / "tasks") == []


def test_symlink_to_root_itself_is_allowed(store: CodeStore) -> None:
    code = store.put(make_zip([reg("a.py", b"1"), link("sub/up", ".."), link("self", ".")]))
    assert (code.task_dir / "sub" / "up" / "a.py").read_bytes() == b"1"
    assert (code.task_dir / "self" / "a.py").read_bytes() == b"1"


def test_corrupt_member_raises_bad_zip_and_leaves_nothing(store: CodeStore, tmp_path: Path) -> None:
    data = bytearray(make_zip([reg("a.py", b"hello world")]))
    i = data.index(b"hello world")
    data[i] ^= 0xFF  # stored (uncompressed) data no longer matches its CRC
    with pytest.raises(zipfile.BadZipFile):
        store.put(bytes(data))
    root = tmp_path / "code"
    assert listing(root / "zips") == listing(root / "tasks") == listing(root / "tmp") == []


@pytest.mark.parametrize(
    "entries",
    [
        [reg("lib/a", b"1"), link("link", "lib"), reg("./link/x", b"2")],
        [link("l", "")],
    ],
    ids=["dot-spelled-entry-below-link", "empty-link-target"],
)
def test_odd_packages_raise_a_package_error_and_leave_nothing(
    store: CodeStore, tmp_path: Path, entries: list[tuple[str, bytes, int]]
) -> None:
    with pytest.raises((UnsafePackageError, zipfile.BadZipFile)):
        store.put(make_zip(entries))
    root = tmp_path / "code"
    assert listing(root / "zips") == listing(root / "tasks") == listing(root / "tmp") == []
    assert listing(root) == ["tasks", "tmp", "zips"]


def test_remove_deletes_zip_and_tree(store: CodeStore, tmp_path: Path) -> None:
    keep = store.put(make_zip([reg("keep.py", b"k")]))
    code = store.put(make_zip([reg("a.py", b"1"), reg("d/b.py", b"2"), link("l", "d")]))
    store.remove(code.sha256)
    assert not store.has(code.sha256)
    assert not store.zip_path(code.sha256).exists()
    assert not code.task_dir.exists()
    assert listing(tmp_path / "code" / "tmp") == []
    assert store.has(keep.sha256)  # only that version is gone


def test_remove_unknown_sha_is_a_noop(store: CodeStore) -> None:
    store.remove("0" * 64)


def test_remove_then_put_again_restores(store: CodeStore) -> None:
    data = make_zip([reg("a.py", b"1")])
    code = store.put(data)
    store.remove(code.sha256)
    assert store.put(data) == code
    assert (code.task_dir / "a.py").read_bytes() == b"1"


def test_leftovers_in_tmp_are_cleaned_on_construction(tmp_path: Path) -> None:
    root = tmp_path / "code"
    CodeStore(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep")
    (root / "tmp" / "half-unpacked" / "sub").mkdir(parents=True)
    (root / "tmp" / "half-unpacked" / "sub" / "f.py").write_text("x")
    (root / "tmp" / "abc.zip").write_bytes(b"PK")
    (root / "tmp" / "dangling").symlink_to(outside)

    CodeStore(root)

    assert listing(root / "tmp") == []
    # A symlink left behind is unlinked, never followed.
    assert (outside / "precious").read_text() == "keep"


def test_construction_keeps_stored_code(tmp_path: Path) -> None:
    data = make_zip([reg("a.py", b"1")])
    code = CodeStore(tmp_path / "code").put(data)
    again = CodeStore(tmp_path / "code")
    assert again.has(code.sha256)
    assert (again.task_dir(code.sha256) / "a.py").read_bytes() == b"1"


def test_stored_lists_every_package(store: CodeStore) -> None:
    a = store.put(make_zip([reg("a.py", b"1")]))
    b = store.put(make_zip([reg("b.py", b"2")]))
    assert store.stored() == {a.sha256, b.sha256}
    store.remove(a.sha256)
    assert store.stored() == {b.sha256}
