"""Content-addressed code store: each zip once under its SHA-256, unpacked once per code version.

Layout under the root:
  zips/<sha256>.zip     the package as uploaded
  tasks/<sha256>/       the package unpacked; becomes LAMBDA_TASK_ROOT (read-only by convention)

Writes go to a temporary name first and are renamed into place, so a crash leaves either the
whole thing or nothing under the final name, and a second `put` of the same code is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import stat
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

_CHUNK = 1 << 20


class UnsafePackageError(ValueError):
    """The package, once unpacked, would reach outside its own root (through its symlinks)."""


@dataclass(frozen=True)
class StoredCode:
    sha256: str
    size: int
    task_dir: Path


class CodeStore:
    def __init__(self, root: Path) -> None:
        self._zips = root / "zips"
        self._tasks = root / "tasks"
        self._tmp = root / "tmp"
        for d in (self._zips, self._tasks, self._tmp):
            d.mkdir(parents=True, exist_ok=True)
        # Anything left in tmp/ is from a crash mid-write and belongs to no one.
        for leftover in self._tmp.iterdir():
            _remove(leftover)

    def task_dir(self, sha256: str) -> Path:
        return self._tasks / sha256

    def zip_path(self, sha256: str) -> Path:
        return self._zips / f"{sha256}.zip"

    def has(self, sha256: str) -> bool:
        return self.task_dir(sha256).is_dir() and self.zip_path(sha256).is_file()

    def stored(self) -> set[str]:
        """The digests of every package held (as a zip, unpacked, or both)."""
        zips = {p.name.removesuffix(".zip") for p in self._zips.iterdir()}
        return zips | {p.name for p in self._tasks.iterdir()}

    def put(self, data: bytes) -> StoredCode:
        """Store and unpack a package that `control.packages` has already checked.

        Raises `UnsafePackageError` or `zipfile.BadZipFile` (a corrupt member) with nothing
        left behind: the package is unpacked before either final name is written.
        """
        sha = hashlib.sha256(data).hexdigest()
        task = self.task_dir(sha)
        zip_path = self.zip_path(sha)
        tmp_dir = self._tmp / uuid.uuid4().hex
        tmp_zip = self._tmp / f"{uuid.uuid4().hex}.zip"
        try:
            if not task.is_dir():
                _unpack(data, tmp_dir)
            if not zip_path.is_file():
                with open(tmp_zip, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp_zip, zip_path)
            if tmp_dir.is_dir():
                try:
                    os.rename(tmp_dir, task)
                except OSError:
                    if not task.is_dir():  # not a lost race with another writer of the same code
                        raise
        finally:
            _remove(tmp_dir)
            _remove(tmp_zip)
        return StoredCode(sha256=sha, size=len(data), task_dir=task)

    def remove(self, sha256: str) -> None:
        """Forget one code version. Environments still running from it keep their open files."""
        _remove(self.zip_path(sha256))
        task = self.task_dir(sha256)
        if task.exists():
            # Rename first so a half-deleted tree is never seen under the live name.
            doomed = self._tmp / f"rm-{uuid.uuid4().hex}"
            os.rename(task, doomed)
            _remove(doomed)


def _unpack(data: bytes, dest: Path) -> None:
    dest.mkdir()
    try:
        _unpack_into(data, dest)
    except (FileExistsError, FileNotFoundError, NotADirectoryError, IsADirectoryError) as e:
        # Entries that collide (a file where a directory or link must go): the package's fault.
        raise UnsafePackageError(f"conflicting entries ({e.strerror}: {e.filename})") from None
    open_dirs(dest)


def open_dirs(root: Path) -> None:
    """Make `root` and every directory below it 0755: a sandbox's runtime, an unprivileged
    uid, reads the tree through its own mount. Directories are made with the server's private
    umask (see `lamina.datadir`), whatever mode `mkdir` asks for, hence the explicit chmod;
    the tree's parents stay 0700, so no other local user reaches it."""
    os.chmod(root, 0o755)
    for here, dirs, _ in os.walk(root):
        for name in dirs:
            path = os.path.join(here, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755)


def _unpack_into(data: bytes, dest: Path) -> None:
    links: list[tuple[Path, str]] = []
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for info in zf.infolist():
            target = dest / info.filename
            mode = info.external_attr >> 16
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if stat.S_ISLNK(mode):
                links.append((target, zf.read(info).decode()))
                continue
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)
            # Keep the executable bit (a custom runtime's `bootstrap` needs it), drop the rest.
            os.chmod(target, 0o755 if mode & 0o111 else 0o644)
    # Symlinks last, so no file above was written through one; then check where each chain
    # really ends, which a lexical check of one link at a time cannot see.
    for target, link in links:
        os.symlink(link, target)
    root = os.path.realpath(dest)
    for target, link in links:
        real = os.path.realpath(target)
        if real != root and not real.startswith(root + os.sep):
            raise UnsafePackageError(
                f"symlink '{target.relative_to(dest)}' points outside the package root ('{link}')"
            )


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
