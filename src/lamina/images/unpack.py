"""Applying an image's layers, bottom first, into a new root filesystem, without ever writing
outside it.

Layers are untrusted tar streams (plain or gzip; zstd is refused). `unpack_layers` keeps these
guarantees, and raises InvalidImage where it cannot (the caller removes the half-made tree):

- every member's path is taken relative to the root: a leading "/" is dropped, and a ".."
  that would leave the root is refused;
- no symlink is ever followed: each parent directory is opened component by component with
  O_NOFOLLOW from the root's own descriptor, so a parent that is a symlink (or a file) is
  refused rather than walked through; files are created with O_EXCL | O_NOFOLLOW after any
  earlier entry of that name is removed, so nothing is written through an old link;
- hard links must name an existing non-directory inside the root (resolved the same way);
- whiteouts: `.wh.NAME` deletes NAME as lower layers left it, `.wh..wh..opq` empties its
  directory of lower layers' content (the layer's own entries stay, wherever in the stream
  the marker comes); whiteout files themselves never appear;
- device nodes and FIFOs are skipped; modes are kept without setuid/setgid bits; owners are
  kept when running as root (otherwise files belong to the caller);
- then the mount points a sandbox needs exist: directories `dev proc sys tmp opt var/task
  var/runtime etc`, empty files `etc/passwd etc/group etc/hosts etc/resolv.conf`, created
  when absent. One that is a symlink is replaced (the sandbox's mounts must land inside the
  root); one of the wrong kind (a file where a directory must be) is refused.

All of it is blocking work: the store runs it on a worker thread.
"""

from __future__ import annotations

import errno
import gzip
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from lamina import limits
from lamina.images import InvalidImage

MOUNT_DIRS = ("dev", "proc", "sys", "tmp", "opt", "var", "var/task", "var/runtime", "etc")
MOUNT_FILES = ("etc/passwd", "etc/group", "etc/hosts", "etc/resolv.conf")

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1024 * 1024
#: the permission bits kept (setuid and setgid dropped; the sticky bit kept, as /tmp needs it)
_MODE_KEPT = 0o1777
_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def unpack_layers(
    layers: Sequence[Path], dest: Path, max_bytes: int = limits.IMAGE_MAX_BYTES
) -> None:
    """Make the directory `dest` (which must not exist) and apply `layers` into it, then make
    the sandbox's mount points. `max_bytes` caps the files' total size."""
    dest.mkdir(mode=0o755)
    root_fd = os.open(dest, _DIR_FLAGS)
    try:
        os.fchmod(root_fd, 0o755)  # whatever the umask: the sandbox's user walks it
        budget = _Budget(max_bytes)
        for index, layer in enumerate(layers):
            _Layer(root_fd, f"layer {index + 1} ({layer.name})", budget).apply(layer)
        make_mount_points(root_fd)
    finally:
        os.close(root_fd)


class _Budget:
    def __init__(self, left: int) -> None:
        self.left = left

    def take(self, n: int) -> None:
        self.left -= n
        if self.left < 0:
            raise InvalidImage(
                "The image unpacks to more than Lambda's limit of "
                f"{limits.IMAGE_MAX_BYTES // 1024**3} GB."
            )


def _parts(name: str, what: str) -> tuple[str, ...]:
    """`name` as path components under the root ("/a/./b" -> ("a", "b")); InvalidImage for a
    ".." leaving the root."""
    out: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise InvalidImage(f"The image's {what} has a path leaving the root: {name!r}.")
            out.pop()
        else:
            out.append(part)
    return tuple(out)


def _lstat(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _remove(dir_fd: int, name: str) -> None:
    """Remove `name` in `dir_fd`, a whole tree if it is a directory (never through a link)."""
    st = _lstat(dir_fd, name)
    if st is None:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)


def _open_dir(root_fd: int, parts: Sequence[str], create: bool, what: str) -> int | None:
    """A descriptor of directory `parts` under the root, walked one component at a time with
    O_NOFOLLOW (missing components made if `create`, else None). InvalidImage if a component
    is a symlink or not a directory."""
    fd = os.dup(root_fd)
    try:
        for i, part in enumerate(parts):
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                os.mkdir(part, 0o755, dir_fd=fd)
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.fchmod(next_fd, 0o755)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    path = "/".join(parts[: i + 1])
                    raise InvalidImage(
                        f"The image's {what} writes under /{path}, which is a symlink or a file "
                        "(Lamina never follows links while unpacking)."
                    ) from None
                raise
            os.close(fd)
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


class _Layer:
    """One layer being applied: what it has placed so far (for its whiteouts)."""

    def __init__(self, root_fd: int, what: str, budget: _Budget) -> None:
        self._root = root_fd
        self._what = what
        self._budget = budget
        #: paths this layer placed, and their ancestors ("a", "a/b", ...)
        self._placed: set[str] = set()
        #: directories this layer marked opaque, emptied of lower content at the layer's end
        self._opaque: list[tuple[str, ...]] = []

    def apply(self, path: Path) -> None:
        with open(path, "rb") as raw:
            magic = raw.read(4)
            raw.seek(0)
            if magic.startswith(_ZSTD_MAGIC):
                raise InvalidImage(
                    f"The image's {self._what} is zstd-compressed, which is not supported: "
                    "push it with gzip-compressed layers."
                )
            mode = "r|gz" if magic.startswith(_GZIP_MAGIC) else "r|"
            try:
                with tarfile.open(fileobj=raw, mode=mode) as tar:  # type: ignore[call-overload]
                    for member in tar:
                        self._member(tar, member)
            except _TAR_ERRORS as e:
                raise InvalidImage(f"The image's {self._what} is not a valid tar ({e}).") from None
        # Opaque markers apply to lower layers only: emptied after the layer, keeping its own.
        for parts in self._opaque:
            fd = _open_dir(self._root, parts, create=False, what=self._what)
            if fd is not None:
                try:
                    self._clear_lower(fd, parts)
                finally:
                    os.close(fd)

    def _mark(self, parts: Sequence[str]) -> None:
        for i in range(1, len(parts) + 1):
            self._placed.add("/".join(parts[:i]))

    def _clear_lower(self, fd: int, parts: tuple[str, ...]) -> None:
        for name in os.listdir(fd):
            child = (*parts, name)
            if "/".join(child) not in self._placed:
                _remove(fd, name)
                continue
            st = _lstat(fd, name)
            if st is not None and stat.S_ISDIR(st.st_mode):
                child_fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                try:
                    self._clear_lower(child_fd, child)
                finally:
                    os.close(child_fd)

    def _member(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = _parts(member.name, self._what)
        if not parts:
            return  # the root itself keeps Lamina's mode
        *parent, base = parts
        if base == _OPAQUE:
            fd = _open_dir(self._root, parent, create=True, what=self._what)
            assert fd is not None
            os.close(fd)
            self._opaque.append(tuple(parent))
            self._mark(parent)
            return
        if base.startswith(_WHITEOUT):
            target = base[len(_WHITEOUT) :]
            if target in ("", ".", ".."):
                raise InvalidImage(f"The image's {self._what} has a bad whiteout {member.name!r}.")
            if "/".join((*parent, target)) in self._placed:
                return  # whiteouts hide lower layers only
            fd = _open_dir(self._root, parent, create=False, what=self._what)
            if fd is not None:
                try:
                    _remove(fd, target)
                finally:
                    os.close(fd)
            return
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            return  # device nodes, FIFOs and anything else: never in an image Lamina runs
        fd = _open_dir(self._root, parent, create=True, what=self._what)
        assert fd is not None
        try:
            if member.isdir():
                self._directory(fd, base, member)
            elif member.isreg():
                self._file(fd, base, member, tar)
            elif member.issym():
                _remove(fd, base)
                os.symlink(member.linkname, base, dir_fd=fd)
                _chown(fd, base, member)
            else:
                self._hard_link(fd, base, member, parts)
        finally:
            os.close(fd)
        self._mark(parts)

    def _directory(self, fd: int, base: str, member: tarfile.TarInfo) -> None:
        st = _lstat(fd, base)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(base, dir_fd=fd)
            st = None
        if st is None:
            os.mkdir(base, 0o700, dir_fd=fd)
        dfd = os.open(base, _DIR_FLAGS, dir_fd=fd)
        try:
            _fchown(dfd, member)
            os.fchmod(dfd, member.mode & _MODE_KEPT)
        finally:
            os.close(dfd)

    def _file(self, fd: int, base: str, member: tarfile.TarInfo, tar: tarfile.TarFile) -> None:
        _remove(fd, base)
        source = tar.extractfile(member)
        out = os.open(base, _FILE_FLAGS, 0o600, dir_fd=fd)
        try:
            if source is not None:
                _copy(source, out, self._budget)
            _fchown(out, member)
            os.fchmod(out, member.mode & _MODE_KEPT)
            os.utime(out, (member.mtime, member.mtime))
        finally:
            os.close(out)

    def _hard_link(
        self, fd: int, base: str, member: tarfile.TarInfo, parts: tuple[str, ...]
    ) -> None:
        target = _parts(member.linkname, self._what)
        if not target:
            raise InvalidImage(f"The image's {self._what} links {member.name!r} to the root.")
        if target == parts:
            return
        *tparent, tbase = target
        tfd = _open_dir(self._root, tparent, create=False, what=self._what)
        st = _lstat(tfd, tbase) if tfd is not None else None
        try:
            if tfd is None or st is None or stat.S_ISDIR(st.st_mode):
                raise InvalidImage(
                    f"The image's {self._what} hard-links {member.name!r} to "
                    f"{member.linkname!r}, which is not a file inside the image."
                )
            _remove(fd, base)
            os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=fd, follow_symlinks=False)
        finally:
            if tfd is not None:
                os.close(tfd)


def _copy(source: IO[bytes], out: int, budget: _Budget) -> None:
    while chunk := source.read(_COPY_CHUNK):
        budget.take(len(chunk))
        view = memoryview(chunk)
        while view:
            view = view[os.write(out, view) :]


def _fchown(fd: int, member: tarfile.TarInfo) -> None:
    if os.geteuid() == 0:
        os.fchown(fd, member.uid, member.gid)


def _chown(dir_fd: int, name: str, member: tarfile.TarInfo) -> None:
    if os.geteuid() == 0:
        os.chown(name, member.uid, member.gid, dir_fd=dir_fd, follow_symlinks=False)


def make_mount_points(root_fd: int) -> None:
    """Make the directories and empty files a sandbox mounts over (see the module's doc)."""
    for path in MOUNT_DIRS:
        *parent, base = path.split("/")
        fd = _open_dir(root_fd, parent, create=False, what="root")
        assert fd is not None  # parents come first in MOUNT_DIRS
        try:
            st = _lstat(fd, base)
            if st is not None and stat.S_ISLNK(st.st_mode):
                os.unlink(base, dir_fd=fd)
                st = None
            if st is None:
                os.mkdir(base, 0o755, dir_fd=fd)
                os.chmod(base, 0o1777 if path == "tmp" else 0o755, dir_fd=fd)
            elif not stat.S_ISDIR(st.st_mode):
                raise InvalidImage(f"The image has a file at /{path}, where a directory must be.")
        finally:
            os.close(fd)
    for path in MOUNT_FILES:
        *parent, base = path.split("/")
        fd = _open_dir(root_fd, parent, create=False, what="root")
        assert fd is not None
        try:
            st = _lstat(fd, base)
            if st is not None and stat.S_ISLNK(st.st_mode):
                os.unlink(base, dir_fd=fd)
                st = None
            if st is None:
                new = os.open(base, _FILE_FLAGS, 0o644, dir_fd=fd)
                os.fchmod(new, 0o644)
                os.close(new)
            elif not stat.S_ISREG(st.st_mode):
                raise InvalidImage(f"The image has a directory at /{path}, where a file must be.")
        finally:
            os.close(fd)
