"""How much disk the log store may take, and how it gives disk back when it has none.

The log store shares its filesystem with what must never fail for want of space: the
metadata (`lamina.db`), accepted asynchronous events (`events.db`) and code. So logs are held
under two bounds, whichever is lower:

- the operator's absolute cap (`--log-disk-cap`, MB);
- the free space of the data directory's filesystem less a reserve logs never take
  (`--log-disk-reserve`; by default the larger of 5% of the filesystem and 256 MB, but no
  more than a quarter of it, so a small disk still keeps logs).

The free space is read with `statvfs` at most once a second (`CHECK_INTERVAL_S`), never per
line. When another writer fills the disk, the bound drops below what logs hold and the store
prunes its oldest events and hands the pages back to the filesystem.

Deleting from SQLite needs disk too (the WAL records every changed page), so a store whose
disk is full could not prune itself. Three things make sure it can: deletions go in small
transactions (a few MB of WAL each); the store keeps a small file of its own
(`logs.db-reserve`, `EMERGENCY_BYTES`) that it removes to make room when a write or a prune
meets a full disk, and makes again once there is room; and, if even that is gone (a disk
filled before this file existed), the prune runs with its journal in memory, which needs no
disk at all.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lamina.errors import is_disk_full

MB = 1024 * 1024
#: default reserve: this share of the filesystem ...
RESERVE_FRACTION = 0.05
#: ... but at least this much ...
RESERVE_MIN_BYTES = 256 * MB
#: ... and never more than this share of the filesystem (a 64 MB disk keeps 16 MB free)
RESERVE_MAX_FRACTION = 0.25
#: seconds between two looks at the filesystem's free space
CHECK_INTERVAL_S = 1.0
#: the file given up to make room for a prune when the disk is full
EMERGENCY_BYTES = 4 * MB
#: room kept for the WAL between checkpoints (see LogStore: journal_size_limit)
WAL_ALLOWANCE_BYTES = 6 * MB
#: events deleted in one pruning transaction at most (and their bytes): bounds the WAL too
PRUNE_ROWS = 2000
PRUNE_BYTES = 8 * MB
#: what an event costs in the database beyond its message (row, index entries), roughly
ROW_OVERHEAD = 64


def default_reserve(filesystem_bytes: int) -> int:
    """The free space logs leave by default on a filesystem of this size."""
    floor = min(RESERVE_MIN_BYTES, int(filesystem_bytes * RESERVE_MAX_FRACTION))
    return max(int(filesystem_bytes * RESERVE_FRACTION), floor)


__all__ = ["DiskBudget", "default_reserve", "is_disk_full"]


class DiskBudget:
    """The bytes the log store's files may take now; see the module's docstring."""

    def __init__(
        self,
        db_path: Path,
        cap_bytes: int,
        reserve_bytes: int | None = None,
        *,
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db_path = db_path
        self.cap_bytes = cap_bytes
        #: None: `default_reserve` of the filesystem's size
        self.reserve_bytes = reserve_bytes
        self.emergency_path = db_path.with_name(db_path.name + "-reserve")
        self._statvfs = statvfs
        self._clock = clock
        self._limit = cap_bytes
        self._checked = -float("inf")
        self._avail = 0
        self._reserve = 0
        self._emergency = 0

    def limit(self, *, fresh: bool = False) -> int:
        """Bytes the store's files (database, WAL, emergency file) may take; read from the
        filesystem at most once every CHECK_INTERVAL_S unless `fresh`."""
        now = self._clock()
        if fresh or now - self._checked >= CHECK_INTERVAL_S:
            self._checked = now
            self._limit = self._measure()
        return self._limit

    def _measure(self) -> int:
        try:
            st = self._statvfs(str(self.db_path.parent))
        except OSError:
            return self.cap_bytes
        size = st.f_blocks * st.f_frsize
        self._avail = st.f_bavail * st.f_frsize
        self._reserve = (
            self.reserve_bytes if self.reserve_bytes is not None else default_reserve(size)
        )
        try:
            self._emergency = self.emergency_path.stat().st_size
        except OSError:
            self._emergency = 0
        return max(0, min(self.cap_bytes, self.files_bytes() + self._avail - self._reserve))

    def free_bytes(self) -> int:
        """What the filesystem has free for us now."""
        try:
            st = self._statvfs(str(self.db_path.parent))
        except OSError:
            return 0
        return st.f_bavail * st.f_frsize

    def files_bytes(self) -> int:
        """What the store's files take now."""
        total = 0
        for path in (self.db_path, self._wal_path(), self.emergency_path):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def wal_bytes(self) -> int:
        try:
            return self._wal_path().stat().st_size
        except OSError:
            return 0

    def _wal_path(self) -> Path:
        return self.db_path.with_name(self.db_path.name + "-wal")

    def emergency_bytes(self) -> int:
        """The emergency file's size as of the last look at the filesystem (`limit()`)."""
        return self._emergency

    def release_emergency(self) -> bool:
        """Remove the emergency file (the disk is full); whether there was one."""
        try:
            self.emergency_path.unlink()
        except OSError:
            return False
        self._checked = -float("inf")
        return True

    def ensure_emergency(self) -> None:
        """Make the emergency file again if it is gone and the disk has room for it above
        the reserve (and the cap)."""
        if self.emergency_path.exists():
            return
        self.limit(fresh=True)
        if self._avail - EMERGENCY_BYTES < self._reserve:
            return
        if self.files_bytes() + EMERGENCY_BYTES > self.cap_bytes:
            return
        try:
            fd = os.open(self.emergency_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError:
            return
        try:
            # Real blocks, not a sparse file: removing it must free space.
            os.posix_fallocate(fd, 0, EMERGENCY_BYTES)
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                self.emergency_path.unlink()
            return
        os.close(fd)
        self._checked = -float("inf")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any failure. SQLite rolls a transaction
    back by itself on some errors (a full disk among them), so ROLLBACK is only sent while
    one is still open (else it fails with "cannot rollback - no transaction is active" and
    hides the real error)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use (free pages are reused before the file grows)."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    return int((pages - free) * page_size)


def oldest_upto(conn: sqlite3.Connection, excess: int) -> int | None:
    """The id up to which the oldest events free about `excess` bytes, within one pruning
    transaction's bounds (None: there are no events)."""
    rows = conn.execute(
        "SELECT id, bytes FROM log_events ORDER BY id LIMIT ?", (PRUNE_ROWS,)
    ).fetchall()
    if not rows:
        return None
    total = 0
    for event_id, size in rows:
        total += size + ROW_OVERHEAD
        if total >= min(excess, PRUNE_BYTES):
            return int(event_id)
    return int(rows[-1][0])


def delete_events(conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> None:
    """Delete events, keeping each stream's stored_bytes and first event right."""
    freed = conn.execute(
        f"SELECT stream_id, SUM(bytes) FROM log_events WHERE {where} GROUP BY stream_id", args
    ).fetchall()
    if not freed:
        return
    conn.execute(f"DELETE FROM log_events WHERE {where}", args)
    conn.executemany(
        "UPDATE log_streams SET stored_bytes = stored_bytes - ?, first_event_ms = "
        "(SELECT MIN(timestamp_ms) FROM log_events "
        "WHERE group_id = log_streams.group_id AND stream_id = log_streams.id) "
        "WHERE id = ?",
        [(size, stream_id) for stream_id, size in freed],
    )


def give_back(conn: sqlite3.Connection, keep_free_bytes: int = 0) -> None:
    """Hand free pages back to the filesystem (auto_vacuum=INCREMENTAL), keeping up to
    `keep_free_bytes` of them for the next inserts."""
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    extra = free - keep_free_bytes // page_size
    if extra > 0:
        # executescript: execute() would step the pragma once, freeing one page.
        conn.executescript(f"PRAGMA incremental_vacuum({int(extra)});")


@contextlib.contextmanager
def journal_in_memory(conn: sqlite3.Connection) -> Iterator[None]:
    """The journal kept in memory for a while (the WAL needs disk the disk does not have);
    WAL again after. Needs no other connection to be reading the database."""
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    mode = conn.execute("PRAGMA journal_mode=MEMORY").fetchone()[0]
    if str(mode).lower() != "memory":
        raise sqlite3.OperationalError("the journal could not be moved to memory")
    try:
        yield
    finally:
        conn.execute("PRAGMA journal_mode=WAL")
