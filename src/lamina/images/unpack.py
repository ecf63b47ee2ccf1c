"""Applying an image's layers, bottom first, into a new root filesystem, without ever writing
outside it.

Layers are untrusted tar streams (plain or gzip; zstd is refused), each a file or a
`LayerSource` (a download in progress: the store unpacks a layer while it arrives). Each layer
is read to its very end before the next is applied: a source that turns out wrong there (its
digest) raises, and so does a tar or gzip stream that is cut short or has a bad CRC. A layer
found invalid is still read to its end first, so that a wrong download is reported as such
rather than as the bad tar it made. `unpack_layers` keeps these guarantees, and raises
InvalidImage where it cannot (the caller removes the half-made tree):

- every member's path is taken relative to the root: a leading "/" is dropped, and a ".."
  that would leave the root is refused;
- no symlink is ever followed: each parent directory is opened component by component with
  O_NOFOLLOW from the root's own descriptor, so a parent that is a symlink (or a file) is
  refused rather than walked through (a layer keeps the descriptors it walked to for its
  next members, and drops those of a directory it removes: a descriptor never outlives the
  directory it was opened on); files are created with O_EXCL | O_NOFOLLOW, an earlier entry
  of that name removed first, so nothing is written through an old link;
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

Speed: gzip is inflated with Intel's ISA-L (python-isal) where it is installed, zlib
otherwise, on a thread of its own that runs ahead of the tar reader by at most
`_INFLATE_AHEAD` pieces (both release the GIL while inflating), so inflating overlaps parsing
and writing files; a gzip layer of several members (concatenated streams) is inflated member
after member. Files' contents go from the inflated pieces to `os.write` without copies. All
of it is blocking work: the store runs it on a thread of its own.
"""

from __future__ import annotations

import errno
import os
import queue
import shutil
import stat
import sys
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

from lamina import limits
from lamina.images import InvalidImage

#: wbits for one gzip member (its header and CRC checked)
_GZIP_WBITS = 31


def _zlib_member() -> _Decompressor:
    return zlib.decompressobj(_GZIP_WBITS)


try:
    # Intel ISA-L's inflate: about twice zlib's speed on image layers
    from isal import isal_zlib

    def _isal_member() -> _Decompressor:
        return isal_zlib.decompressobj(_GZIP_WBITS)

    _isal_error: type[Exception] = isal_zlib.error  # type: ignore[assignment]  # a class
    _gzip_member = _isal_member
    _INFLATE_ERRORS: tuple[type[Exception], ...] = (zlib.error, _isal_error)
except ImportError:  # no wheel for this platform: zlib, the same stream at half the speed
    _gzip_member = _zlib_member
    _INFLATE_ERRORS = (zlib.error,)

MOUNT_DIRS = ("dev", "proc", "sys", "tmp", "opt", "var", "var/task", "var/runtime", "etc")
MOUNT_FILES = ("etc/passwd", "etc/group", "etc/hosts", "etc/resolv.conf")

_WHITEOUT = ".wh."
_OPAQUE = ".wh..wh..opq"
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_COPY_CHUNK = 1024 * 1024
#: directory descriptors a layer keeps open while applying (more: all closed), and the
#: deepest directory kept
_DIRS_KEPT = 256
_DEPTH_KEPT = 32
#: "everything left", for `_Forward.views`
_ALL = sys.maxsize
#: gzip input read at a time, and the most one inflate step makes (a bomb stays small)
_INFLATE_IN = 256 * 1024
_INFLATE_OUT = 1024 * 1024
#: inflated pieces waiting for the tar reader, at most (room to run ahead while it creates
#: many small files)
_INFLATE_AHEAD = 16
#: the permission bits kept (setuid and setgid dropped; the sticky bit kept, as /tmp needs it)
_MODE_KEPT = 0o1777
_TAR_ERRORS: tuple[type[Exception], ...] = (tarfile.TarError, EOFError, *_INFLATE_ERRORS)


class LayerSource(Protocol):
    """A layer's bytes from elsewhere than a file: `read(n)` returns up to `n` bytes, blocking
    until there are some, b"" at the end, and raises if the layer is found wrong."""

    def read(self, n: int, /) -> bytes: ...


class _Decompressor(Protocol):
    """What inflating needs of zlib's and isal_zlib's decompress objects."""

    @property
    def eof(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    @property
    def unconsumed_tail(self) -> bytes: ...

    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...

    def flush(self, length: int = ..., /) -> bytes: ...


def unpack_layers(
    layers: Sequence[Path | LayerSource], dest: Path, max_bytes: int = limits.IMAGE_MAX_BYTES
) -> None:
    """Make the directory `dest` (which must not exist) and apply `layers` into it, then make
    the sandbox's mount points. `max_bytes` caps the files' total size."""
    dest.mkdir(mode=0o755)
    root_fd = os.open(dest, _DIR_FLAGS)
    try:
        os.fchmod(root_fd, 0o755)  # whatever the umask: the sandbox's user walks it
        budget = _Budget(max_bytes)
        for index, layer in enumerate(layers):
            name = layer.name if isinstance(layer, Path) else getattr(layer, "name", "")
            what = f"layer {index + 1} ({name})" if name else f"layer {index + 1}"
            _Layer(root_fd, what, budget).apply(layer)
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


def _remove(dir_fd: int, name: str) -> bool:
    """Remove `name` in `dir_fd`, a whole tree if it is a directory (never through a link).
    True if that was a directory."""
    st = _lstat(dir_fd, name)
    if st is None:
        return False
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
        return True
    os.unlink(name, dir_fd=dir_fd)
    return False


def _open_dir(root_fd: int, parts: Sequence[str], create: bool, what: str) -> int | None:
    """A descriptor of directory `parts` under the root, walked one component at a time with
    O_NOFOLLOW (missing components made if `create`, else None). InvalidImage if a component
    is a symlink or not a directory."""
    fd = os.dup(root_fd)
    try:
        for i in range(len(parts)):
            next_fd = _open_child(fd, parts[: i + 1], create, what)
            os.close(fd)
            if next_fd is None:
                return None
            fd = next_fd
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_child(parent_fd: int, parts: Sequence[str], create: bool, what: str) -> int | None:
    """A new descriptor of directory `parts[-1]` in `parent_fd` (the directory `parts[:-1]`),
    opened with O_NOFOLLOW, made if missing and `create` (else None)."""
    part = parts[-1]
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            return None
        os.mkdir(part, 0o755, dir_fd=parent_fd)
        fd = os.open(part, _DIR_FLAGS, dir_fd=parent_fd)
        os.fchmod(fd, 0o755)
        return fd
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise InvalidImage(
                f"The image's {what} writes under /{'/'.join(parts)}, which is a symlink or a "
                "file (Lamina never follows links while unpacking)."
            ) from None
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
        #: descriptors of directories already walked to (see `_dir`)
        self._dirs: dict[tuple[str, ...], int] = {}
        #: descriptors `_dir` opened for the current member only
        self._walked: list[int] = []

    def apply(self, layer: Path | LayerSource) -> None:
        try:
            if isinstance(layer, Path):
                with open(layer, "rb", buffering=0) as raw:
                    self._read(raw)
            else:
                self._read(layer)
        finally:
            self._forget(())
        # Opaque markers apply to lower layers only: emptied after the layer, keeping its own.
        self._clear_opaque()

    def _read(self, raw: LayerSource) -> None:
        """Apply the tar stream in `raw` (gzip or plain), read to its end."""
        head = _read_up_to(raw, len(_ZSTD_MAGIC))
        pieces = _Inflater(head, raw) if head.startswith(_GZIP_MAGIC) else _Plain(head, raw)
        try:
            if head.startswith(_ZSTD_MAGIC):
                raise InvalidImage(
                    f"The image's {self._what} is zstd-compressed, which is not supported: "
                    "push it with gzip-compressed layers."
                )
            stream = _Forward(pieces.next_piece)
            try:
                with tarfile.open(fileobj=stream, mode="r:") as tar:  # type: ignore[call-overload]
                    for member in tar:
                        self._member(tar, stream, member)
                # whatever follows the tar's end is read too (and counted): the layer is
                # applied only once all of it arrived, checked
                for view in stream.views(_ALL):
                    self._budget.take(len(view))
            except _TAR_ERRORS as e:
                raise InvalidImage(f"The image's {self._what} is not a valid tar ({e}).") from None
        except InvalidImage:
            # a download that went wrong makes bad tars: its own error (the digest) comes first
            pieces.close()
            while raw.read(_COPY_CHUNK):
                pass
            raise
        finally:
            pieces.close()

    def _clear_opaque(self) -> None:
        for parts in self._opaque:
            fd = _open_dir(self._root, parts, create=False, what=self._what)
            if fd is not None:
                try:
                    self._clear_lower(fd, parts)
                finally:
                    os.close(fd)

    def _dir(self, parts: tuple[str, ...], create: bool) -> int | None:
        """A descriptor of directory `parts` under the root, as `_open_dir` walks to it, kept
        for the layer's next members (most share their parent): owned by the layer, closed
        when that directory is removed (`_removed`) and at the layer's end. A kept descriptor
        is as safe as a new walk: no entry is ever renamed, so it names the same directory
        under the root until something removes it."""
        if not parts:
            return self._root
        fd = self._dirs.get(parts)
        if fd is not None:
            return fd
        if len(parts) > _DEPTH_KEPT:  # a deep path: walked afresh, closed after its member
            fd = _open_dir(self._root, parts, create, self._what)
            if fd is not None:
                self._walked.append(fd)
            return fd
        depth = len(parts) - 1
        while depth > 0 and parts[:depth] not in self._dirs:
            depth -= 1
        fd = self._dirs[parts[:depth]] if depth else self._root
        for i in range(depth + 1, len(parts) + 1):
            child = _open_child(fd, parts[:i], create, self._what)
            if child is None:
                return None
            self._dirs[parts[:i]] = fd = child
        return fd

    def _removed(self, parts: tuple[str, ...], was_dir: bool) -> None:
        """`parts` was just removed: if it was a directory, forget it and what was under it."""
        if was_dir:
            self._forget(parts)

    def _forget(self, parts: tuple[str, ...]) -> None:
        """Close the kept descriptors of `parts` and of the directories under it."""
        for key in [k for k in self._dirs if k[: len(parts)] == parts]:
            os.close(self._dirs.pop(key))

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

    def _member(self, tar: tarfile.TarFile, stream: _Forward, member: tarfile.TarInfo) -> None:
        if len(self._dirs) >= _DIRS_KEPT:
            self._forget(())
        try:
            self._apply_member(tar, stream, member)
        finally:
            while self._walked:
                os.close(self._walked.pop())

    def _apply_member(
        self, tar: tarfile.TarFile, stream: _Forward, member: tarfile.TarInfo
    ) -> None:
        parts = _parts(member.name, self._what)
        if not parts:
            return  # the root itself keeps Lamina's mode
        parent, base = parts[:-1], parts[-1]
        if base == _OPAQUE:
            self._dir(parent, create=True)
            self._opaque.append(parent)
            self._mark(parent)
            return
        if base.startswith(_WHITEOUT):
            target = base[len(_WHITEOUT) :]
            if target in ("", ".", ".."):
                raise InvalidImage(f"The image's {self._what} has a bad whiteout {member.name!r}.")
            if "/".join((*parent, target)) in self._placed:
                return  # whiteouts hide lower layers only
            fd = self._dir(parent, create=False)
            if fd is not None:
                self._removed((*parent, target), _remove(fd, target))
            return
        if not (member.isdir() or member.isreg() or member.issym() or member.islnk()):
            return  # device nodes, FIFOs and anything else: never in an image Lamina runs
        fd = self._dir(parent, create=True)
        assert fd is not None
        if member.isdir():
            self._directory(fd, base, member)
        elif member.isreg():
            self._file(fd, base, member, tar, stream, parts)
        elif member.issym():
            self._removed(parts, _remove(fd, base))
            os.symlink(member.linkname, base, dir_fd=fd)
            _chown(fd, base, member)
        else:
            self._hard_link(fd, base, member, parts)
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

    def _file(
        self,
        fd: int,
        base: str,
        member: tarfile.TarInfo,
        tar: tarfile.TarFile,
        stream: _Forward,
        parts: tuple[str, ...],
    ) -> None:
        try:
            out = os.open(base, _FILE_FLAGS, 0o600, dir_fd=fd)
        except FileExistsError:  # (rarely: a lower layer's file, directory or link)
            self._removed(parts, _remove(fd, base))
            out = os.open(base, _FILE_FLAGS, 0o600, dir_fd=fd)
        try:
            if member.issparse():
                source = tar.extractfile(member)
                assert source is not None
                while chunk := source.read(_COPY_CHUNK):
                    self._budget.take(len(chunk))
                    _write_all(out, memoryview(chunk))
            else:
                # straight from the stream's pieces into the file, without copies
                stream.seek(member.offset_data)
                left = member.size
                for view in stream.views(left):
                    self._budget.take(len(view))
                    _write_all(out, view)
                    left -= len(view)
                if left:
                    raise tarfile.ReadError("unexpected end of data")
            if (member.uid, member.gid) != (os.geteuid(), os.getegid()):  # a new file's own
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
        tparent, tbase = target[:-1], target[-1]
        tfd = self._dir(tparent, create=False)
        st = _lstat(tfd, tbase) if tfd is not None else None
        if tfd is None or st is None or stat.S_ISDIR(st.st_mode):
            raise InvalidImage(
                f"The image's {self._what} hard-links {member.name!r} to "
                f"{member.linkname!r}, which is not a file inside the image."
            )
        self._removed(parts, _remove(fd, base))
        os.link(tbase, base, src_dir_fd=tfd, dst_dir_fd=fd, follow_symlinks=False)


def _read_up_to(raw: LayerSource, n: int) -> bytes:
    """The first `n` bytes of `raw` (fewer only at its end)."""
    head = b""
    while len(head) < n and (more := raw.read(n - len(head))):
        head += more
    return head


class _Plain:
    """A plain tar stream, `head` then the rest of `raw`, in the pieces `raw` gives."""

    def __init__(self, head: bytes, raw: LayerSource) -> None:
        self._head = head
        self._raw = raw

    def next_piece(self) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            return head
        return self._raw.read(_COPY_CHUNK)

    def close(self) -> None:
        pass


class _Forward:
    """A file read forward only, over the pieces `next_piece` returns (b"" at the end): what
    tarfile's random-access mode needs of one (`read`, `tell`, `seek` ahead) and `views`, the
    next bytes without copying them. tarfile never seeks back on a member it does not
    extract twice; a seek back is a ReadError."""

    def __init__(self, next_piece: Callable[[], bytes]) -> None:
        self._next_piece = next_piece
        self._piece = memoryview(b"")  # what is left of the current piece
        self._position = 0
        self._ended = False

    def views(self, n: int) -> Iterator[memoryview]:
        """The next `n` bytes (fewer at the end), as they are in the pieces."""
        while n > 0:
            while not self._piece:
                if self._ended:
                    return
                piece = self._next_piece()
                if not piece:
                    self._ended = True
                    return
                self._piece = memoryview(piece)
            view = self._piece[:n]
            self._piece = self._piece[len(view) :]
            self._position += len(view)
            n -= len(view)
            yield view

    def read(self, n: int = -1) -> bytes:
        return b"".join(self.views(_ALL if n < 0 else n))

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or position < self._position:
            raise tarfile.ReadError("the layer's tar seeks back")
        for _ in self.views(position - self._position):
            pass
        return self._position


class _Inflater:
    """The inflated bytes of the gzip stream `head` + `raw` (one member or several, zero
    padding between or after them allowed), inflated on a thread of its own at most
    `_INFLATE_AHEAD` pieces ahead of `next_piece`. An error there (a bad stream, one cut
    short, one `raw` raised) is raised by `next_piece`. `close` stops the thread and waits
    for it."""

    def __init__(self, head: bytes, raw: LayerSource) -> None:
        self._raw = raw
        self._pieces: queue.Queue[bytes | BaseException | None] = queue.Queue(_INFLATE_AHEAD)
        self._stop = threading.Event()
        self._ended = False  # the end, or an error, was taken from the queue
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(head,), name="lamina-inflate", daemon=True
        )
        self._thread.start()

    def next_piece(self) -> bytes:
        """The next inflated piece, b"" at the end."""
        if not self._ended:
            item = self._pieces.get()
            if isinstance(item, bytes):
                return item
            self._ended, self._error = True, item
        if self._error is not None:
            raise self._error
        return b""

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    # -- on the inflating thread -------------------------------------------------------------

    def _run(self, head: bytes) -> None:
        try:
            self._inflate(head)
        except BaseException as e:  # handed to the reader, which raises it
            self._put(e)
        else:
            self._put(None)

    def _inflate(self, data: bytes) -> None:
        member: _Decompressor | None = None
        while not self._stop.is_set():
            if not data:
                data = self._raw.read(_INFLATE_IN)
                if not data:
                    break
            if member is None:
                data = data.lstrip(b"\0")  # padding between or after members, as gzip allows
                if not data:
                    continue
                member = _gzip_member()
            out = member.decompress(data, _INFLATE_OUT)
            if out and not self._put(out):
                return
            if member.eof:
                data, member = member.unused_data, None
            else:
                data = member.unconsumed_tail
        if member is not None and not self._stop.is_set():
            # all input given: what inflate still holds, then the member must have ended
            if (out := member.flush()) and not self._put(out):
                return
            if not member.eof:
                raise EOFError("the gzip stream ends in the middle of a member")

    def _put(self, item: bytes | BaseException | None) -> bool:
        """Queue `item` for the reader (waiting while it is behind); False once closed."""
        while not self._stop.is_set():
            try:
                self._pieces.put(item, timeout=0.05)
            except queue.Full:
                continue
            return True
        return False


def _write_all(out: int, view: memoryview) -> None:
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
