"""The CloudWatch-style log store: log groups, their streams, and the events in each.

Every line an execution environment writes ends up here as one event (see `logs.py`), and the
Logs API reads it back. It is SQLite (`<data-dir>/logs.db`) in WAL mode with
`synchronous=NORMAL`: a power cut may lose the last moments of logs, which is acceptable for
logs (unlike queued events, see `store/event_queue.py`) and saves an fsync per batch.

`append()` is called on the event loop for every batch of lines, so it only puts the batch on
a queue; one writer thread owns the writing connection and inserts whatever has piled up in
one transaction. What is queued and not yet written is counted (`backlog_bytes`) so that the
producer can stop handing over text the disk does not keep up with (it then drops, and says
so, in its own bounded buffers). Reads run on connections of their own in worker threads
(`asyncio.to_thread`); WAL lets them read while the writer writes.

The store stays within a disk budget (`log_disk.DiskBudget`: the operator's cap, and the
filesystem's free space less a reserve kept for the rest of Lamina). Before each batch the
writer checks the budget and prunes the oldest events to make room; a batch that still does
not fit, or that the disk refuses (full, I/O error) even after room was made, is lost, and
the loss is said by a marker line in each stream it belonged to (`log_loss`) as soon as one
can be written, and counted in the metrics. The writer carries on with the next batch, so a
store failure never takes the server down, and pruning works on a full disk (see
`log_disk`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lamina._batches import batches
from lamina.observability import log_loss
from lamina.observability.log_disk import (
    EMERGENCY_BYTES,
    PRUNE_ROWS,
    WAL_ALLOWANCE_BYTES,
    DiskBudget,
    delete_events,
    give_back,
    is_disk_full,
    journal_in_memory,
    oldest_upto,
    transaction,
    used_bytes,
)
from lamina.observability.log_loss import LogSource, Losses, LossObserver
from lamina.observability.log_rows import (
    EVENT_OVERHEAD_BYTES,
    MAX_EVENT_BYTES,
    MAX_MESSAGE_BYTES,
    SCHEMA,
    Append,
    Writer,
    chunks,
    message_bytes,
    now_ms,
)

__all__ = [
    "EVENT_OVERHEAD_BYTES",
    "MAX_EVENT_BYTES",
    "MAX_MESSAGE_BYTES",
    "LogEvent",
    "LogGroup",
    "LogStore",
    "LogStream",
    "message_bytes",
    "now_ms",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: read connections kept open for reuse
_READERS_KEPT = 4
#: bytes of events written in one transaction at most: bounds what the WAL must hold
_TXN_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True)
class LogGroup:
    name: str
    created_ms: int
    retention_days: int | None
    #: the events' size as CloudWatch counts it (UTF-8 message bytes + 26 each)
    stored_bytes: int


@dataclass(frozen=True)
class LogStream:
    group: str
    name: str
    created_ms: int
    first_event_ms: int | None
    last_event_ms: int | None
    last_ingestion_ms: int | None
    stored_bytes: int


@dataclass(frozen=True)
class LogEvent:
    #: increasing per store in insertion order: usable as a paging cursor
    id: int
    stream: str
    timestamp_ms: int
    ingestion_ms: int
    message: str


_Op = Callable[[sqlite3.Connection], Any]


# An append, or an operation and the future awaiting it.
_Work = Append | tuple[_Op, asyncio.Future[Any]]


class LogStore:
    """Log groups, streams and events in one SQLite file; see the module's docstring."""

    def __init__(
        self,
        path: Path,
        disk_cap_bytes: int,
        *,
        reserve_bytes: int | None = None,
        on_loss: LossObserver | None = None,
    ) -> None:
        self.path = path
        self.disk_cap_bytes = disk_cap_bytes
        #: the cap and the free-space reserve (None: the default share of the filesystem)
        self.budget = DiskBudget(path, disk_cap_bytes, reserve_bytes)
        #: told of every batch of lines the store loses (the metrics), from its thread
        self.on_loss = on_loss
        # Losses not yet said in their streams (the writer thread's alone).
        self._lost: dict[LogSource, Losses] = {}
        #: coroutines `flush()` awaits first: producers that hold text not yet appended
        self.before_flush: list[Callable[[], Awaitable[None]]] = []
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._backlog = 0  # bytes appended and not yet written (approximate, unlocked)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._failures = 0

    @property
    def backlog_bytes(self) -> int:
        """Bytes appended that the writer has not written yet."""
        return self._backlog

    def open(self) -> None:
        """Create the schema if needed and start the writer thread (on the running loop)."""
        self._loop = asyncio.get_running_loop()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        # Set before the first table exists: lets prune() give freed pages back to the disk.
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # The WAL is checkpointed every 2 MB and cut back to 2 MB after: with transactions
        # of at most _TXN_BYTES it stays within WAL_ALLOWANCE_BYTES of the budget.
        conn.execute("PRAGMA wal_autocheckpoint=512")
        conn.execute(f"PRAGMA journal_size_limit={2 * 1024 * 1024}")
        try:
            for statement in SCHEMA:
                conn.execute(statement)
        except sqlite3.Error as e:
            # A full disk cannot stop the server: the first prune makes room.
            _log.warning("log store: could not create its schema yet: %s", e)
        self._thread = threading.Thread(
            target=self._write_forever, args=(conn,), name="lamina-log-store", daemon=True
        )
        self._thread.start()

    def reclaim(self) -> None:
        """Bring the store within its budget now, blocking: called at start before anything
        else opens the data directory, so that a disk left full (or a smaller cap) does not
        stop the start. On a full disk the emergency file goes first: SQLite cannot even open
        a WAL database without a little room."""
        if not self.path.exists():
            return
        if self.budget.free_bytes() < EMERGENCY_BYTES:
            self.budget.release_emergency()
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
            try:
                self._prune(conn)
            finally:
                conn.close()
        except sqlite3.Error as e:
            _log.warning("log store: could not make room at start: %s", e)

    async def close(self) -> None:
        """Write out everything queued, then stop; nothing may be called after."""
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

    # -- writing -------------------------------------------------------------------------

    def append(
        self,
        group: str,
        stream: str,
        events: Sequence[tuple[int, str]],
        source: LogSource | None = None,
    ) -> None:
        """Queue events `(timestamp_ms, message)` for a stream; never blocks. The group and
        stream are created on first use. Messages longer than an event may be are split.
        `source` names the function and format for a loss marker (default: Text, none)."""
        if not events:
            return
        size = sum(len(m) for _, m in events) + EVENT_OVERHEAD_BYTES * len(events)
        self._backlog += size
        self._queue.put(Append(source or LogSource(group, stream), events, size))

    async def flush(self) -> None:
        """Return when everything appended so far (and held by `before_flush` producers) is
        stored."""
        for produce in list(self.before_flush):
            await produce()
        await self._submit(lambda conn: None, own_transaction=True)

    async def set_retention(self, group: str, days: int | None) -> None:
        def op(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE log_groups SET retention_days = ? WHERE name = ?", (days, group)
            )
            if cur.rowcount == 0:
                raise KeyError(group)

        await self._submit(op)

    async def delete_group(self, group: str) -> None:
        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT id FROM log_groups WHERE name = ?", (group,)).fetchone()
            if row is None:
                raise KeyError(group)
            conn.execute("DELETE FROM log_events WHERE group_id = ?", (row[0],))
            conn.execute("DELETE FROM log_streams WHERE group_id = ?", (row[0],))
            conn.execute("DELETE FROM log_groups WHERE id = ?", (row[0],))

        await self._submit(op)

    async def prune(self) -> None:
        """Drop events older than their group's retention, then the oldest events while the
        store's files would take more than its budget (cap and free-space reserve); freed
        pages go back to the disk and the WAL is truncated. Works on a full disk."""
        await self._submit(self._prune, own_transaction=True)

    # -- reading -------------------------------------------------------------------------

    async def groups(self, prefix: str | None = None) -> list[LogGroup]:
        def read(conn: sqlite3.Connection) -> list[LogGroup]:
            sql = (
                "SELECT g.name, g.created_ms, g.retention_days, "
                "(SELECT COALESCE(SUM(stored_bytes), 0) FROM log_streams WHERE group_id = g.id)"
                " FROM log_groups g"
            )
            args: tuple[Any, ...] = ()
            if prefix:
                sql += " WHERE substr(g.name, 1, ?) = ?"
                args = (len(prefix), prefix)
            rows = conn.execute(sql + " ORDER BY g.name", args).fetchall()
            return [LogGroup(*row) for row in rows]

        return await self._read(read)

    async def streams(self, group: str, prefix: str | None = None) -> list[LogStream]:
        def read(conn: sqlite3.Connection) -> list[LogStream]:
            group_id = _group_id(conn, group)
            sql = (
                "SELECT name, created_ms, first_event_ms, last_event_ms, last_ingestion_ms, "
                "stored_bytes FROM log_streams WHERE group_id = ?"
            )
            args: tuple[Any, ...] = (group_id,)
            if prefix:
                sql += " AND substr(name, 1, ?) = ?"
                args += (len(prefix), prefix)
            rows = conn.execute(sql + " ORDER BY name", args).fetchall()
            return [LogStream(group, *row) for row in rows]

        return await self._read(read)

    async def events(
        self,
        group: str,
        *,
        streams: Sequence[str] | None = None,
        stream_prefix: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        after_id: int | None = None,
        before_id: int | None = None,
        limit: int = 10000,
        newest_first: bool = False,
    ) -> list[LogEvent]:
        """Events of a group, ordered by (timestamp, id), ascending or `newest_first`;
        `end_ms` is exclusive; `after_id`/`before_id` bound the ids."""

        def read(conn: sqlite3.Connection) -> list[LogEvent]:
            group_id = _group_id(conn, group)
            where = ["e.group_id = ?"]
            args: list[Any] = [group_id]
            if streams is not None:
                if not streams:
                    return []
                where.append(f"s.name IN ({', '.join('?' * len(streams))})")
                args += list(streams)
            if stream_prefix:
                where.append("substr(s.name, 1, ?) = ?")
                args += [len(stream_prefix), stream_prefix]
            if start_ms is not None:
                where.append("e.timestamp_ms >= ?")
                args.append(start_ms)
            if end_ms is not None:
                where.append("e.timestamp_ms < ?")
                args.append(end_ms)
            if after_id is not None:
                where.append("e.id > ?")
                args.append(after_id)
            if before_id is not None:
                where.append("e.id < ?")
                args.append(before_id)
            order = "DESC" if newest_first else "ASC"
            rows = conn.execute(
                "SELECT e.id, s.name, e.timestamp_ms, e.ingestion_ms, e.message "
                "FROM log_events e JOIN log_streams s ON s.id = e.stream_id "
                f"WHERE {' AND '.join(where)} "
                f"ORDER BY e.timestamp_ms {order}, e.id {order} LIMIT ?",
                [*args, max(limit, 0)],
            ).fetchall()
            return [LogEvent(*row) for row in rows]

        return await self._read(read)

    async def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        def run() -> _T:
            with self._reader() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only=ON")
        try:
            yield conn
        finally:
            with self._readers_lock:
                if len(self._readers) < _READERS_KEPT and self._thread is not None:
                    self._readers.append(conn)
                    conn = None
            if conn is not None:
                conn.close()

    # -- the writer thread ---------------------------------------------------------------

    async def _submit(self, op: _Op, own_transaction: bool = False) -> Any:
        if self._thread is None or self._loop is None:
            raise OSError("the log store is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        if own_transaction:
            op = _Own(op)
        self._queue.put((op, future))
        return await future

    def _write_forever(self, conn: sqlite3.Connection) -> None:
        writer = Writer(conn)
        try:
            # Whatever piled up while the last batch was written goes into the next one.
            work: Iterator[list[_Work]] = batches(self._queue)
            for batch in work:
                self._write(writer, batch)
        finally:
            conn.close()

    def _write(self, writer: Writer, batch: list[Any]) -> None:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        appends: list[Append] = []
        for item in batch:
            if isinstance(item, Append):
                appends.append(item)
                continue
            # Appends before an operation are stored before it runs (flush() relies on it).
            self._write_appends(writer, appends)
            appends = []
            op, future = item
            try:
                if isinstance(op, _Own):
                    value = op.fn(writer.conn)
                else:
                    with writer.transaction():
                        value = op(writer.conn)
            except KeyError as e:
                results.append((future, None, e))
            except Exception as e:  # the writer must outlive any failure
                results.append((future, None, OSError(f"log store: {e}")))
            else:
                results.append((future, value, None))
            # An operation may have deleted groups: their ids are looked up again.
            writer.forget()
        self._write_appends(writer, appends)
        if results and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                self._loop.call_soon_threadsafe(_settle, results)

    def _write_appends(self, writer: Writer, appends: list[Append]) -> None:
        if not appends:
            return
        try:
            if self._lost:  # earlier losses first: their markers stand before these lines
                self._write_markers(writer)
            # Transactions small beside the budget too, so that a burst is pruned for as it
            # is written rather than lost whole.
            limit = max(64 * 1024, min(_TXN_BYTES, self.budget.limit() // 8))
            for chunk in chunks(appends, limit):
                self._store_chunk(writer, chunk)
            if self._lost:
                self._write_markers(writer)
        finally:
            self._backlog -= sum(a.size for a in appends)

    def _store_chunk(self, writer: Writer, chunk: list[Append]) -> None:
        """Store one transaction's worth of events, making room first; lose them (and say
        so) if they do not fit or the disk refuses them even after room was made."""
        size = sum(a.size for a in chunk)
        error: Exception | None = None
        try:
            if not self._make_room(writer.conn, size):
                self._lose(chunk, log_loss.DISK_CAP)
                return
            writer.insert(chunk)
            self._failures = 0
            return
        except Exception as e:  # the writer must outlive any failure
            writer.forget()
            error = e
        if is_disk_full(error):
            # The disk filled under us (another writer): give up the emergency file and the
            # oldest events, and try once more, so lines already read are not lost to it.
            try:
                self.budget.release_emergency()
                self._shrink(writer.conn, self._target(size))
                writer.insert(chunk)
                self._failures = 0
                return
            except Exception as e:
                writer.forget()
                error = e
        self._failures += 1
        if self._failures == 1 or self._failures % 100 == 0:
            _log.warning("log store: %d batches of log events lost: %s", self._failures, error)
        self._lose(chunk, log_loss.WRITE_FAILED)

    def _target(self, size: int) -> int:
        """Pages in use to prune down to so that `size` more bytes fit in the budget, with a
        tenth of the budget spare so that the next batches do not each prune."""
        limit = self.budget.limit()
        return max(0, limit - self._fixed(limit) - size - limit // 10)

    def _fixed(self, limit: int) -> int:
        """What the budget keeps beside the pages: the WAL's room and the emergency file
        (a quarter of the budget at most: a small cap still holds events)."""
        return min(WAL_ALLOWANCE_BYTES + self.budget.emergency_bytes(), limit // 4)

    def _make_room(self, conn: sqlite3.Connection, size: int) -> bool:
        """Whether `size` bytes of events fit in the budget, after pruning the oldest if
        needed (the budget is read from the filesystem at most once a second)."""
        need = size + size // 5
        limit = self.budget.limit()
        fixed = self._fixed(limit)
        if used_bytes(conn) + need + fixed <= limit:
            return True
        self._shrink(conn, self._target(need))
        return used_bytes(conn) + need + fixed <= limit

    def _lose(self, chunk: list[Append], reason: str) -> None:
        for item in chunk:
            lines = len(item.events)
            size = sum(len(m.encode("utf-8", "replace")) + 1 for _, m in item.events)
            first = min(ts for ts, _ in item.events)
            self._lost.setdefault(item.source, Losses()).add(reason, lines, size, first)
            if self.on_loss is not None:
                with contextlib.suppress(Exception):  # a metric must not stop the writer
                    self.on_loss(item.source.function, reason, lines, size)

    def _write_markers(self, writer: Writer) -> None:
        """Say each loss in its stream; kept for the next batch if that cannot be written
        either (markers are small: a little room is enough)."""
        markers = [
            Append(source, losses.markers(source.json), 0) for source, losses in self._lost.items()
        ]
        try:
            writer.insert(markers)
        except Exception:  # the writer must outlive any failure
            writer.forget()
            return
        self._lost.clear()

    def _prune(self, conn: sqlite3.Connection) -> None:
        now = now_ms()
        try:
            self._expire(conn, now)
            self.budget.limit(fresh=True)
            self._shrink(conn, self._target(0))
            give_back(conn)
            # Give the WAL's pages back too, so the files stay within the budget.
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as e:
            if not is_disk_full(e):
                raise
            # Even the emergency file is gone (or never was: a disk filled by an older
            # Lamina): prune with the journal in memory, which needs no disk.
            self._close_readers()
            with journal_in_memory(conn):
                self._expire(conn, now)
                self._shrink(conn, self._target(0))
                give_back(conn)
        self.budget.ensure_emergency()

    def _expire(self, conn: sqlite3.Connection, now: int) -> None:
        """Delete events older than their group's retention, a few thousand at a time."""
        groups = conn.execute(
            "SELECT id, retention_days FROM log_groups WHERE retention_days IS NOT NULL"
        ).fetchall()
        for group_id, days in groups:
            cutoff = now - days * 86_400_000
            while True:
                row = conn.execute(
                    "SELECT MAX(id) FROM (SELECT id FROM log_events WHERE group_id = ? AND "
                    "timestamp_ms < ? ORDER BY id LIMIT ?)",
                    (group_id, cutoff, PRUNE_ROWS),
                ).fetchone()
                if row[0] is None:
                    break
                self._delete(
                    conn,
                    "group_id = ? AND timestamp_ms < ? AND id <= ?",
                    (group_id, cutoff, row[0]),
                )

    def _shrink(self, conn: sqlite3.Connection, target: int) -> None:
        """Delete the oldest events until the pages in use are at most `target` bytes, in
        small transactions."""
        while True:
            excess = used_bytes(conn) - target
            if excess <= 0:
                return
            upto = oldest_upto(conn, excess)
            if upto is None:
                return
            self._delete(conn, "id <= ?", (upto,))

    def _delete(self, conn: sqlite3.Connection, where: str, args: tuple[Any, ...]) -> None:
        """One small deleting transaction; on a full disk, the emergency file makes room
        for its journal and it is tried again."""
        try:
            with transaction(conn):
                delete_events(conn, where, args)
        except sqlite3.Error as e:
            if not (is_disk_full(e) and self.budget.release_emergency()):
                raise
            with transaction(conn):
                delete_events(conn, where, args)

    def _close_readers(self) -> None:
        """Close the idle read connections (the journal mode can only change without them)."""
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()


class _Own:
    """An operation that manages its own transactions (prune: several short ones, so that
    appends are not held up for one long one)."""

    def __init__(self, fn: _Op) -> None:
        self.fn = fn

    def __call__(self, conn: sqlite3.Connection) -> Any:
        return self.fn(conn)


def _group_id(conn: sqlite3.Connection, group: str) -> int:
    row = conn.execute("SELECT id FROM log_groups WHERE name = ?", (group,)).fetchone()
    if row is None:
        raise KeyError(group)
    return int(row[0])


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
