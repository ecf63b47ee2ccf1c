"""Watching code directories for `lamina dev`: which changes count, and the zip a save becomes.

Changes come from `watchfiles` (inotify on Linux through the Rust `notify` crate, polling where
the file system offers no events; uvicorn's `--reload` uses the same library, so it is already
installed with Lamina's server). A save usually arrives as a burst of events (an editor writes a
temporary file, renames it over the old one, touches a backup): `watch` groups each burst
and yields once the directories have been quiet for QUIET_MS.

The zip is built the same way each time (entries sorted, every timestamp 1980-01-01, modes
kept), so the same files give the same bytes and the same CodeSha256: a save that changes no
content (a `touch`, an editor's probe file come and gone) is recognised and not uploaded.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import stat
import threading
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

#: how long the directories must be quiet after a change before it is applied (ms)
QUIET_MS = 100
#: the longest a burst of changes is grouped before it is applied anyway (ms)
MAX_GROUP_MS = 1_000

#: directories that are never code: caches and version control (node_modules IS code)
IGNORED_DIRS = frozenset({"__pycache__", ".git", ".hg", ".svn", ".mypy_cache", ".pytest_cache"})
#: editors' swap, backup and lock files, and compiled bytecode
IGNORED_FILES = ("*.swp", "*.swo", "*.swx", "*~", ".#*", "#*#", "*.pyc", "*.pyo", ".DS_Store")
# vim probes whether it may write a directory by creating and removing a file named 4913
_VIM_PROBE = "4913"


def ignored(path: Path, root: Path) -> bool:
    """Whether `path` (under `root`) is left out of the zip, and its changes do not reload."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return True
    if not parts:
        return False
    if any(part in IGNORED_DIRS for part in parts[:-1]) or parts[-1] in IGNORED_DIRS:
        return True
    name = parts[-1]
    return name == _VIM_PROBE or any(fnmatchcase(name, pattern) for pattern in IGNORED_FILES)


@dataclass(frozen=True)
class Package:
    """A code directory zipped."""

    data: bytes
    files: int

    @property
    def sha256(self) -> str:
        """As Lambda's CodeSha256: the zip's SHA-256, base64."""
        return base64.b64encode(hashlib.sha256(self.data).digest()).decode()


def package(root: Path) -> Package:
    """Zip the files under `root` (not the ignored ones), reproducibly (see the module doc).
    Symbolic links are followed, as `zip` and `sam build` do; a file that vanishes while it is
    being read (a save in progress) is left out: the save's own event comes next."""
    buf = io.BytesIO()
    count = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in _files(root):
            try:
                mode = path.stat().st_mode
                data = path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, PermissionError):
                continue
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), (1980, 1, 1, 0, 0, 0))
            # Read-only and executable bits as on disk (a custom runtime's bootstrap), no more.
            info.external_attr = (stat.S_IFREG | (0o755 if mode & 0o111 else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
            count += 1
    return Package(buf.getvalue(), count)


def _files(root: Path) -> list[Path]:
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        base = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if d not in IGNORED_DIRS)
        out.extend(p for name in filenames if not ignored(p := base / name, root))
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def watch(
    dirs: Iterable[Path],
    stop: threading.Event | None = None,
    ready: Callable[[], None] | None = None,
    files: Iterable[Path] = (),
) -> Iterator[set[Path]]:
    """Yield, after each burst of changes, the watched directories (of `dirs`) and `files` it
    touched; a directory inside another is touched by the changes under it too. Calls `ready`
    once they are being watched (changes from then on are seen). Ends when `stop` is set
    (checked a few times a second)."""
    import watchfiles

    roots = sorted({d.resolve() for d in dirs}, key=lambda d: len(d.parts), reverse=True)
    # A file is watched through its directory: an editor that saves by renaming a new file
    # over the old one would leave a watch on the file itself watching nothing.
    singles = {f.resolve() for f in files}

    def relevant(_change: watchfiles.Change, path: str) -> bool:
        p = Path(path)
        return p in singles or any(not ignored(p, root) for root in _owners(p, roots))

    for changes in watchfiles.watch(
        *roots,
        *sorted({f.parent for f in singles} - set(roots)),
        watch_filter=relevant,
        debounce=MAX_GROUP_MS,
        step=QUIET_MS,
        stop_event=stop,
        # A quiet spell yields an empty set: the first one (or the first change) says the
        # watcher is in place, which watchfiles does not otherwise tell.
        rust_timeout=250,
        yield_on_timeout=True,
        raise_interrupt=True,
    ):
        if ready is not None:
            ready()
            ready = None
        touched: set[Path] = set()
        for _change, path in changes:
            p = Path(path)
            touched.update(r for r in _owners(p, roots) if not ignored(p, r))
            if p in singles:
                touched.add(p)
        if touched:
            yield touched


def _owners(path: Path, roots: list[Path]) -> list[Path]:
    """The watched directories `path` is in (nested ones included)."""
    return [root for root in roots if path == root or path.is_relative_to(root)]
