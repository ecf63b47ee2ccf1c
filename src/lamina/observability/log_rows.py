"""How log events become rows of `logs.db`: its schema, and the writer thread's side of it.

The store (`log_store.py`) decides when and whether a batch is written (the disk budget,
losses and their markers, the queue of appends and operations); this module is what writes
it: `Writer` holds the writer thread's connection and its cache of group and stream ids, and
inserts appends many rows per statement; messages longer than CloudWatch's largest event are
split between characters; `chunks` cuts a backlog into transactions of bounded size. Nothing
here is thread-safe: only the writer thread uses a `Writer`.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import time
from collections.abc import Iterator, Sequence

from lamina.observability.log_disk import transaction
from lamina.observability.log_loss import LogSource

#: CloudWatch counts each event as its message's UTF-8 bytes plus this
EVENT_OVERHEAD_BYTES = 26
#: CloudWatch's largest event (message plus overhead); longer lines are split
MAX_EVENT_BYTES = 256 * 1024
MAX_MESSAGE_BYTES = MAX_EVENT_BYTES - EVENT_OVERHEAD_BYTES
#: rows inserted in one transaction at most (a batch larger than this is split)
_BATCH_ROWS = 20_000
#: events inserted by one statement at most (see `Writer._insert_rows`)
_INSERT_CHUNK_ROWS = 256

#: the tables and indexes of `logs.db` (created by `LogStore.open`)
SCHEMA = (
    """CREATE TABLE IF NOT EXISTS log_groups (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL,
        retention_days INTEGER
    )""",
    """CREATE TABLE IF NOT EXISTS log_streams (
        id INTEGER PRIMARY KEY,
        group_id INTEGER NOT NULL REFERENCES log_groups(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        first_event_ms INTEGER,
        last_event_ms INTEGER,
        last_ingestion_ms INTEGER,
        stored_bytes INTEGER NOT NULL DEFAULT 0,
        UNIQUE (group_id, name)
    )""",
    # AUTOINCREMENT: ids are never reused, even after the newest events are pruned, so an id
    # handed out as a paging cursor keeps its meaning.
    """CREATE TABLE IF NOT EXISTS log_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        group_id INTEGER NOT NULL,
        stream_id INTEGER NOT NULL,
        timestamp_ms INTEGER NOT NULL,
        ingestion_ms INTEGER NOT NULL,
        bytes INTEGER NOT NULL,
        message TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS log_events_stream "
    "ON log_events (group_id, stream_id, timestamp_ms)",
    "CREATE INDEX IF NOT EXISTS log_events_group ON log_events (group_id, timestamp_ms)",
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def message_bytes(message: str) -> int:
    return len(message.encode("utf-8", "replace"))


class Append:
    """Events for one stream, queued for the writer, and their size (approximate bytes)."""

    __slots__ = ("events", "size", "source")

    def __init__(self, source: LogSource, events: Sequence[tuple[int, str]], size: int) -> None:
        self.source = source
        self.events = events
        self.size = size


class Writer:
    """The writer thread's connection, and its cache of group and stream ids."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        # Rows per INSERT: a power of two within SQLite's bound on a statement's parameters.
        self._chunk_rows = _INSERT_CHUNK_ROWS
        while self._chunk_rows * 6 > conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER):
            self._chunk_rows //= 2
        self._groups: dict[str, int] = {}
        self._streams: dict[tuple[str, str], int] = {}

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return transaction(self.conn)

    def forget(self) -> None:
        """After a failure or a deletion, ids are read again."""
        self._groups.clear()
        self._streams.clear()

    def insert(self, appends: list[Append]) -> None:
        ingestion = now_ms()
        rows: list[tuple[int, int, int, int, int, str]] = []
        touched: dict[int, list[int]] = {}  # stream -> [first, last, bytes]
        with self.transaction():
            for item in appends:
                events = item.events
                group_id, stream_id = self._ids(item.source.group, item.source.stream, ingestion)
                stats = touched.setdefault(stream_id, [events[0][0], events[0][0], 0])
                for ts, message in events:
                    for part in _split(message):
                        size = message_bytes(part) + EVENT_OVERHEAD_BYTES
                        rows.append((group_id, stream_id, ts, ingestion, size, part))
                        stats[2] += size
                    stats[0] = min(stats[0], ts)
                    stats[1] = max(stats[1], ts)
                    if len(rows) >= _BATCH_ROWS:
                        self._insert_rows(rows)
                        rows = []
            self._insert_rows(rows)
            self.conn.executemany(
                "UPDATE log_streams SET "
                "first_event_ms = MIN(COALESCE(first_event_ms, ?1), ?1), "
                "last_event_ms = MAX(COALESCE(last_event_ms, ?2), ?2), "
                "last_ingestion_ms = ?3, stored_bytes = stored_bytes + ?4 WHERE id = ?5",
                [(f, la, ingestion, b, sid) for sid, (f, la, b) in touched.items()],
            )

    def _insert_rows(self, rows: list[tuple[int, int, int, int, int, str]]) -> None:
        # Many rows per statement, not `executemany` of a one-row INSERT: the sqlite3 module
        # lets go of the GIL around every step of a statement and takes it back after, and
        # each time it wants it back the event loop's thread is made to hand it over (a
        # context switch or two on the invoke path, for every log line). Chunks are powers
        # of two, so that a few statements, each prepared once, cover any number of rows.
        at, left, size = 0, len(rows), self._chunk_rows
        while left:
            while size > left:
                size //= 2
            params = [value for row in rows[at : at + size] for value in row]
            self.conn.execute(_insert_sql(size), params)
            at += size
            left -= size

    def _ids(self, group: str, stream: str, now: int) -> tuple[int, int]:
        stream_id = self._streams.get((group, stream))
        group_id = self._groups.get(group)
        if stream_id is not None and group_id is not None:
            return group_id, stream_id
        if group_id is None:
            self.conn.execute(
                "INSERT OR IGNORE INTO log_groups (name, created_ms) VALUES (?, ?)", (group, now)
            )
            (group_id,) = self.conn.execute(
                "SELECT id FROM log_groups WHERE name = ?", (group,)
            ).fetchone()
            self._groups[group] = group_id
        self.conn.execute(
            "INSERT OR IGNORE INTO log_streams (group_id, name, created_ms) VALUES (?, ?, ?)",
            (group_id, stream, now),
        )
        (stream_id,) = self.conn.execute(
            "SELECT id FROM log_streams WHERE group_id = ? AND name = ?", (group_id, stream)
        ).fetchone()
        self._streams[(group, stream)] = stream_id
        return group_id, stream_id


@functools.cache
def _insert_sql(rows: int) -> str:
    """The INSERT of `rows` events."""
    return (
        "INSERT INTO log_events (group_id, stream_id, timestamp_ms, ingestion_ms, bytes, "
        "message) VALUES " + ",".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    )


def _split(message: str) -> list[str]:
    """A message as events of at most MAX_MESSAGE_BYTES, cut between characters."""
    if len(message) * 4 <= MAX_MESSAGE_BYTES:
        return [message]
    data = message.encode("utf-8", "replace")
    if len(data) <= MAX_MESSAGE_BYTES:
        return [message]
    parts = []
    start = 0
    while start < len(data):
        end = min(start + MAX_MESSAGE_BYTES, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        parts.append(data[start:end].decode("utf-8", "replace"))
        start = end
    return parts


def chunks(appends: list[Append], limit: int) -> Iterator[list[Append]]:
    """The appends in groups of about `limit` bytes (a larger append is cut between
    events), one transaction each."""
    chunk: list[Append] = []
    size = 0
    for item in appends:
        if item.size <= limit:
            if size + item.size > limit and chunk:
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += item.size
            continue
        start = 0
        part = 0
        for i, (_, message) in enumerate(item.events):
            part += len(message) + EVENT_OVERHEAD_BYTES
            if part >= limit:
                yield [*chunk, Append(item.source, item.events[start : i + 1], part)]
                chunk, size = [], 0
                start, part = i + 1, 0
        if start < len(item.events):
            chunk.append(Append(item.source, item.events[start:], part))
            size += part
    if chunk:
        yield chunk
