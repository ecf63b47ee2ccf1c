"""The data directory is private to the user Lamina runs as.

It holds event payloads, logs, function code and environment variables, the admin key's
secret and the key that seals the rest: no other local user may read any of it. So:

- the server runs with umask 077 (`restrict_umask`): whatever it creates — the SQLite
  databases and their -wal/-shm/-journal files, code zips, the route file — is 0600, and its
  directories 0700, with no mode to remember at each place that creates a file;
- the data directory itself is 0700, which is what keeps other users out of everything below
  it, whatever the modes there;
- a directory made by an older Lamina (0755, files 0644) is fixed at start (`make_private`):
  a walk of the top level, of the code zips and of the image layers, a few hundred chmods
  at most.

The exception is what a sandbox must read: a function's unpacked code (`code/tasks/<sha>/`),
its merged layers (`opt/<key>/`) and a container image's root (`images/roots/<hex>/rootfs`,
with the image's own modes) stay 0755/0644, as Lambda requires of a package, because
the namespace backend's runtime runs as an unprivileged uid that owns none of it. It reaches
them through mounts the server makes as root (`open_tree` of exactly those directories), not
through the data directory's path, so their 0700 parents keep every other local user out
while the sandbox reads them. The process backend runs functions as the server's own user,
which reads everything anyway (that backend isolates nothing; see docs/security.md).

Processes the server starts for functions get the usual umask back (`sandbox.api.RUNTIME_UMASK`):
the process-wide umask must not leak into the files a function writes in its /tmp.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

#: what the server runs with: nothing it creates is readable by group or others
PRIVATE_UMASK = 0o077
PRIVATE_DIR = 0o700
#: below the top level, the directories that hold private data (the top level's own
#: directories are made private too); their siblings `code/tasks/<sha>/`, `opt/<key>/` and
#: `opt/empty/` are what sandboxes mount, and keep their modes
_PRIVATE_DIRS = (
    "code/tasks",
    "code/zips",
    "code/tmp",
    "opt/tmp",
    "images/blobs",
    "images/blobs/sha256",
    "images/roots",
    "images/tmp",
)
#: directories whose files are private data (image layers hold a function's code; the
#: invocation log's segments hold event payloads)
_PRIVATE_FILES_IN = ("code/zips", "images/blobs/sha256", "replay")
#: container images unpacked: each `<hex>/` and its `config.json` are private; `<hex>/rootfs`
#: keeps the image's own modes (the sandbox's root, bound by the server as root)
_IMAGE_ROOTS = "images/roots"


def restrict_umask() -> int:
    """Make everything this process creates from now on private; returns the old umask.

    Process-wide: call it once, at start-up, before any thread exists. Children that run
    functions set their own (`RUNTIME_UMASK`)."""
    return os.umask(PRIVATE_UMASK)


def make_private(data_dir: Path) -> None:
    """Create `data_dir` (0700) or make an existing one private: the directory, what is at
    its top level, and the code zips. Blocking; call it once, before the server starts."""
    data_dir.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
    _restrict(data_dir)
    for entry in _entries(data_dir):
        _restrict_entry(entry)
    for inner in _PRIVATE_DIRS:
        _restrict(data_dir / inner)
    for inner in _PRIVATE_FILES_IN:
        for entry in _entries(data_dir / inner):
            _restrict_entry(entry)
    for entry in _entries(data_dir / _IMAGE_ROOTS):
        _restrict_entry(entry)
        _restrict(Path(entry.path) / "config.json")


def _entries(directory: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _restrict_entry(entry: os.DirEntry[str]) -> None:
    # A symlink has no mode of its own, and what it points at is not ours to change.
    if not entry.is_symlink():
        _restrict(Path(entry.path))


def _restrict(path: Path) -> None:
    """Take group's and others' access away from `path` (a no-op if they have none: a
    stat, no write, for a directory already private)."""
    with contextlib.suppress(FileNotFoundError):
        current = stat.S_IMODE(os.lstat(path).st_mode)
        if current & 0o077:
            os.chmod(path, current & 0o700)
