"""How layers are read: gzip inflated by ISA-L or zlib (several members, padding, a stream cut
short or with a bad CRC), layers given as sources that arrive piece by piece and may fail at
their very end, and the directory descriptors a layer keeps (never used once the directory is
gone)."""

from __future__ import annotations

import gzip
import io
import itertools
import os
import queue
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.test_image_unpack import Entry, layer

from lamina.images import InvalidImage
from lamina.images import unpack as unpack_module
from lamina.images.unpack import unpack_layers

FILES: list[Entry] = [
    ("usr/", "dir", ""),
    ("usr/lib/big", "file", os.urandom(300_000)),
    ("usr/lib/text", "file", "hello " * 50_000),
    ("etc/conf", "file", "x=1\n"),
]


@pytest.fixture(params=["isal", "zlib"])
def inflater(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test twice: with ISA-L (the default) and with the zlib fallback."""
    if request.param == "zlib":
        monkeypatch.setattr(unpack_module, "_gzip_member", unpack_module._zlib_member)
    return str(request.param)


def tar_bytes(tmp: Path, entries: list[Entry]) -> bytes:
    return layer(tmp, "plain.tar", entries).read_bytes()


def check_files(root: Path) -> None:
    for name, kind, data in FILES:
        if kind == "file":
            expected = data.encode() if isinstance(data, str) else data
            assert (root / name).read_bytes() == expected, name


def test_isal_is_the_default_inflater() -> None:
    assert unpack_module._gzip_member is unpack_module._isal_member


def test_gzip_layer(tmp_path: Path, inflater: str) -> None:
    unpack_layers([layer(tmp_path, "l.gz", FILES, compress=True)], tmp_path / "root")
    check_files(tmp_path / "root")


def test_gzip_of_several_members_with_padding(tmp_path: Path, inflater: str) -> None:
    raw = tar_bytes(tmp_path, FILES)
    cuts = [0, 1000, 400_000, 400_001, len(raw)]
    members = [gzip.compress(raw[a:b]) for a, b in itertools.pairwise(cuts)]
    path = tmp_path / "multi.gz"
    path.write_bytes(members[0] + members[1] + b"\0" * 1024 + members[2] + members[3] + b"\0" * 7)
    unpack_layers([path], tmp_path / "root")
    check_files(tmp_path / "root")


@pytest.mark.parametrize("damage", ["cut in the trailer", "bad crc", "garbage after", "cut"])
def test_damaged_gzip_is_refused(tmp_path: Path, inflater: str, damage: str) -> None:
    whole = gzip.compress(tar_bytes(tmp_path, FILES))
    data = {
        "cut in the trailer": whole[:-4],
        "bad crc": whole[:-8] + bytes([whole[-8] ^ 0xFF]) + whole[-7:],
        "garbage after": whole + b"not gzip",
        "cut": whole[: len(whole) // 2],
    }[damage]
    path = tmp_path / "damaged.gz"
    path.write_bytes(data)
    with pytest.raises(InvalidImage, match="not a valid tar"):
        unpack_layers([path], tmp_path / "root")


def test_trailing_bytes_count_against_the_budget(tmp_path: Path) -> None:
    raw = tar_bytes(tmp_path, [("f", "file", "x")])
    path = tmp_path / "padded.gz"
    path.write_bytes(gzip.compress(raw + b"\0" * 200_000))
    with pytest.raises(InvalidImage, match="limit"):
        unpack_layers([path], tmp_path / "root", max_bytes=100_000)


class Trickle:
    """A `LayerSource` fed by another thread in small pieces, a little at a time; at the end
    it returns b"" or raises `error`."""

    def __init__(self, data: bytes, piece: int = 7001, error: Exception | None = None) -> None:
        self._pieces: queue.Queue[bytes | None] = queue.Queue()
        self._error = error
        self._buffer = b""
        self._ended = False
        self.reads = 0
        self._feeder = threading.Thread(target=self._feed, args=(data, piece))
        self._feeder.start()

    def _feed(self, data: bytes, piece: int) -> None:
        for start in range(0, len(data), piece):
            self._pieces.put(data[start : start + piece])
            if start % (piece * 20) == 0:
                time.sleep(0.001)
        self._pieces.put(None)

    def read(self, n: int, /) -> bytes:
        self.reads += 1
        while not self._buffer and not self._ended:
            item = self._pieces.get()
            if item is None:
                self._ended = True
            else:
                self._buffer = item
        if not self._buffer:
            if self._error is not None:
                raise self._error
            return b""
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def join(self) -> None:
        self._feeder.join()


class SourceFailed(Exception):
    pass


@pytest.mark.parametrize("compress", [True, False])
def test_layer_from_a_source_as_it_arrives(tmp_path: Path, inflater: str, compress: bool) -> None:
    source = Trickle(layer(tmp_path, "l", FILES, compress=compress).read_bytes())
    unpack_layers([source], tmp_path / "root")
    source.join()
    check_files(tmp_path / "root")
    assert source.reads > 10


@pytest.mark.parametrize("compress", [True, False])
def test_a_source_failing_at_its_end_fails_the_layer(tmp_path: Path, compress: bool) -> None:
    # every byte there, a valid tar: still not applied, as the source says it is wrong
    data = layer(tmp_path, "l", FILES, compress=compress).read_bytes()
    source = Trickle(data, error=SourceFailed("digest mismatch"))
    with pytest.raises(SourceFailed):
        unpack_layers([source], tmp_path / "root")
    source.join()


@pytest.mark.parametrize("compress", [True, False])
def test_a_bad_tar_from_a_failing_source_reports_the_source(tmp_path: Path, compress: bool) -> None:
    garbage = b"this is not a tar file" * 5000
    data = gzip.compress(garbage) if compress else garbage
    source = Trickle(data, error=SourceFailed("digest mismatch"))
    with pytest.raises(SourceFailed):
        unpack_layers([source], tmp_path / "root")
    source.join()


# -- the directory descriptors a layer keeps ------------------------------------------------


def test_a_directory_replaced_by_a_symlink_is_not_written_through(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for n, replacement in enumerate([("d", "symlink", str(outside)), ("d", "file", "now")]):
        entries: list[Entry] = [
            ("d/e/", "dir", ""),
            ("d/e/f", "file", "x"),
            replacement,
            ("d/e/g", "file", "y"),
        ]
        with pytest.raises(InvalidImage, match="symlink or a file"):
            unpack_layers([layer(tmp_path, f"l{n}", entries)], tmp_path / f"root{n}")
    assert os.listdir(outside) == []


def test_a_directory_whited_out_is_made_anew(tmp_path: Path) -> None:
    lower = layer(tmp_path, "l1", [("a/b/c/old", "file", "old"), ("a/b/c/x", "file", "x")])
    upper = layer(
        tmp_path,
        "l2",
        [("a/b/c/.wh.x", "file", ""), ("a/.wh.b", "file", ""), ("a/b/c/new", "file", "new")],
    )
    root = tmp_path / "root"
    unpack_layers([lower, upper], root)
    assert os.listdir(root / "a/b/c") == ["new"]
    assert (root / "a/b/c/new").read_text() == "new"


def test_deep_paths_and_many_directories(tmp_path: Path) -> None:
    deep = "/".join(f"d{i}" for i in range(unpack_module._DEPTH_KEPT + 8))
    entries: list[Entry] = [(f"{deep}/f", "file", "deep")]
    many = unpack_module._DIRS_KEPT + 50
    entries += [(f"many/m{i}/sub/f", "file", str(i)) for i in range(many)]
    root = tmp_path / "root"
    unpack_layers([layer(tmp_path, "l", entries)], root)
    assert (root / deep / "f").read_text() == "deep"
    assert all((root / f"many/m{i}/sub/f").read_text() == str(i) for i in range(many))


def test_no_descriptor_is_left_open(tmp_path: Path) -> None:
    def open_fds() -> Iterator[str]:
        yield from os.listdir("/proc/self/fd")

    before = len(list(open_fds()))
    entries: list[Entry] = [(f"a/b{i}/c/f", "file", "x") for i in range(40)]
    unpack_layers([layer(tmp_path, "l", entries, compress=True)], tmp_path / "root")
    with pytest.raises(InvalidImage):
        unpack_layers(
            [layer(tmp_path, "bad", [*entries, ("a", "symlink", "/"), ("a/b1/x", "file", "")])],
            tmp_path / "root2",
        )
    assert len(list(open_fds())) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="owners are kept when running as root")
def test_owners_of_new_files_and_of_a_directory_given_back_to_root(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, uid, kind in [("d", 1000, tarfile.DIRTYPE), ("d/f", 1000, tarfile.REGTYPE)]:
            info = tarfile.TarInfo(name)
            info.uid = info.gid = uid
            info.type = kind
            tar.addfile(info, io.BytesIO(b""))
    lower = tmp_path / "lower"
    lower.write_bytes(buf.getvalue())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, kind in [("d", tarfile.DIRTYPE), ("d/g", tarfile.REGTYPE)]:
            info = tarfile.TarInfo(name)
            info.type = kind  # uid and gid 0
            tar.addfile(info, io.BytesIO(b""))
    upper = tmp_path / "upper"
    upper.write_bytes(buf.getvalue())
    root = tmp_path / "root"
    unpack_layers([lower, upper], root)
    owners = {
        name: ((root / name).stat().st_uid, (root / name).stat().st_gid)
        for name in ["d", "d/f", "d/g"]
    }
    assert owners == {"d": (0, 0), "d/f": (1000, 1000), "d/g": (0, 0)}
