"""The durable store of asynchronous events: what has been accepted and not yet finished.

`EventStore` is the interface the async queue (`events/async_queue.py`) uses; a cluster
backend (PostgreSQL, NATS JetStream) implements the same methods. `SqliteEventStore` is the
single-node one: SQLite in WAL mode with `synchronous=FULL`, so a commit has reached the disk
(the WAL is fsynced) before the caller hears back.

Every change goes through one writer thread that owns the connection and commits whatever has
piled up while the previous commit was syncing, in one transaction (group commit): sixteen
concurrent accepts cost one fsync, not sixteen, and the event loop never waits on the disk.

The writer shares the interpreter's lock with the event loop, and every SQLite call gives the
lock up and must win it back, which takes up to a switch interval (5 ms) while the loop is
busy. So a batch is written in as few statements as it takes: the events it adds go in one
multi-row INSERT, the events it finishes without follow-ups in one DELETE, and a batch that is
a single statement is committed by it alone (autocommit: one statement is one transaction, with
the same sync) instead of between BEGIN and COMMIT.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lamina._batches import batches

#: why an event left the queue without success (kept in `dropped_events`)
EVENT_AGE_EXCEEDED = "EventAgeExceeded"
RETRIES_EXHAUSTED = "RetriesExhausted"
FUNCTION_NOT_FOUND = "FunctionNotFound"
#: stopped by recursive loop detection (the chain ran the function 16 times already)
RECURSIVE_LOOP = "RecursiveInvocationException"


@dataclass(eq=False)
class QueuedEvent:
    """One accepted asynchronous invocation, as stored (compared by identity: the queue
    keeps the running ones in sets)."""

    #: the request id Invoke answered with; every attempt runs under it, as on Lambda
    id: str
    function_name: str
    #: the qualifier the caller used (None: unqualified); resolved again on every attempt
    qualifier: str | None
    #: None when not held in memory (read back from the store when it is due)
    payload: bytes | None
    #: epoch seconds when it was accepted: its age counts from here
    enqueued_at: float
    #: attempts that ended in a function error so far
    attempts: int = 0
    #: epoch seconds before which it may not run (a retry's back-off)
    due: float = 0.0
    #: the X-Ray trace header it arrived with (its `Lineage` counts a recursive chain)
    trace: str = ""


@dataclass(frozen=True)
class DroppedEvent:
    """The record of why an event was given up (events past their age, out of retries, or
    of a function that no longer exists)."""

    id: str
    function_name: str
    qualifier: str | None
    reason: str
    attempts: int
    enqueued_at: float
    dropped_at: float
    detail: str = ""


class EventStore(Protocol):
    """Durable storage of queued events. Every coroutine returns once its change is durable;
    changes are applied in the order they were asked for. A failure (disk full, I/O error)
    raises `OSError` and leaves the store as it was before that change."""

    async def add(self, events: Sequence[QueuedEvent]) -> None:
        """Store new events (their payloads must be set)."""

    async def finish(
        self,
        event_id: str,
        follow_ups: Sequence[QueuedEvent] = (),
        dropped: DroppedEvent | None = None,
    ) -> None:
        """Remove a finished event and, in the same transaction, store the events it leads to
        (destination records, dead letters) and the record of why it was dropped."""

    async def reschedule(self, event_id: str, attempts: int, due: float) -> None:
        """Record a failed attempt and when the next one may start."""

    async def payload(self, event_id: str) -> bytes | None:
        """An event's payload (None if it is gone)."""

    async def load(self, with_payload_bytes: int) -> list[QueuedEvent]:
        """Every stored event, oldest first; payloads only while their total stays within
        `with_payload_bytes` (the rest are read back with `payload()` when due)."""

    async def dropped(self, limit: int) -> list[DroppedEvent]:
        """The most recent records of dropped events, newest first."""

    async def close(self) -> None:
        """Finish what was asked and close; nothing may be called after."""


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        id TEXT PRIMARY KEY,
        function_name TEXT NOT NULL,
        qualifier TEXT,
        payload BLOB NOT NULL,
        enqueued_at REAL NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        due REAL NOT NULL DEFAULT 0,
        trace TEXT NOT NULL DEFAULT ''
    )""",
    """CREATE TABLE IF NOT EXISTS dropped_events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL,
        function_name TEXT NOT NULL,
        qualifier TEXT,
        reason TEXT NOT NULL,
        attempts INTEGER NOT NULL,
        enqueued_at REAL NOT NULL,
        dropped_at REAL NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    )""",
)
_INSERT_EVENTS = (
    "INSERT INTO events (id, function_name, qualifier, payload, enqueued_at, attempts, due, trace)"
    " VALUES "
)
_INSERT_ROW = "(?, ?, ?, ?, ?, ?, ?, ?)"
#: records of dropped events kept (the oldest are pruned past this)
_DROPPED_KEEP = 10_000
#: changes committed in one transaction at most
_BATCH_MAX = 1024
#: rows one INSERT adds, ids one DELETE removes at most (a batch above it takes more
#: statements; 64 x 8 parameters stays far below SQLite's bound of 32,766)
_PER_STATEMENT = 64
#: prepared statements the connection keeps: an INSERT and a DELETE for each count of rows up
#: to `_PER_STATEMENT`, and the others
_CACHED_STATEMENTS = 4 * _PER_STATEMENT

_Op = Callable[[sqlite3.Connection], Any]
_Row = tuple[str, str, str | None, bytes | None, float, int, float, str]

#: what a change asks of the writer (the first member of a `_Change`)
_ADD = 0  # insert these rows (a list of `_Row`)
_REMOVE = 1  # delete the event with this id
_RUN = 2  # call this `_Op` with the connection (what it returns is the change's result)
_Change = tuple[int, Any, "asyncio.Future[Any]"]


@functools.cache
def _insert(rows: int) -> str:
    return _INSERT_EVENTS + ", ".join([_INSERT_ROW] * rows)


@functools.cache
def _remove(ids: int) -> str:
    return "DELETE FROM events WHERE id IN (" + ", ".join("?" * ids) + ")"


def _row(e: QueuedEvent) -> _Row:
    return (
        e.id,
        e.function_name,
        e.qualifier,
        e.payload,
        e.enqueued_at,
        e.attempts,
        e.due,
        e.trace,
    )


class SqliteEventStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._ops: queue.SimpleQueue[_Change | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pruned = 0

    def open(self) -> None:
        """Create the database if needed and start the writer thread."""
        self._loop = asyncio.get_running_loop()
        conn = sqlite3.connect(
            self._path,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=_CACHED_STATEMENTS,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: in WAL mode, NORMAL would not sync the WAL on commit, and an accepted event
        # could be lost to a power cut.
        conn.execute("PRAGMA synchronous=FULL")
        for statement in _SCHEMA:
            conn.execute(statement)
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if "trace" not in columns:  # a queue made before recursion detection came
            conn.execute("ALTER TABLE events ADD COLUMN trace TEXT NOT NULL DEFAULT ''")
        self._thread = threading.Thread(
            target=self._write_forever, args=(conn,), name="lamina-event-store", daemon=True
        )
        self._thread.start()

    # -- EventStore ----------------------------------------------------------------------

    async def add(self, events: Sequence[QueuedEvent]) -> None:
        await self._submit(_ADD, [_row(e) for e in events])

    async def finish(
        self,
        event_id: str,
        follow_ups: Sequence[QueuedEvent] = (),
        dropped: DroppedEvent | None = None,
    ) -> None:
        if not follow_ups and dropped is None:
            await self._submit(_REMOVE, event_id)
            return
        rows = [_row(e) for e in follow_ups]

        def op(conn: sqlite3.Connection) -> None:
            if rows:
                conn.executemany(_insert(1), rows)
            if dropped is not None:
                d = dropped
                conn.execute(
                    "INSERT INTO dropped_events (id, function_name, qualifier, reason, "
                    "attempts, enqueued_at, dropped_at, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        d.id,
                        d.function_name,
                        d.qualifier,
                        d.reason,
                        d.attempts,
                        d.enqueued_at,
                        d.dropped_at,
                        d.detail,
                    ),
                )
                self._pruned += 1
                if self._pruned >= 1000:  # keep the record bounded, cheaply
                    self._pruned = 0
                    conn.execute(
                        "DELETE FROM dropped_events WHERE seq <= "
                        "(SELECT MAX(seq) FROM dropped_events) - ?",
                        (_DROPPED_KEEP,),
                    )
            conn.execute("DELETE FROM events WHERE id = ?", (event_id,))

        await self._submit(_RUN, op)

    async def reschedule(self, event_id: str, attempts: int, due: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE events SET attempts = ?, due = ? WHERE id = ?", (attempts, due, event_id)
            )

        await self._submit(_RUN, op)

    async def payload(self, event_id: str) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT payload FROM events WHERE id = ?", (event_id,)).fetchone()
            return None if row is None else bytes(row[0])

        result: bytes | None = await self._submit(_RUN, op)
        return result

    async def load(self, with_payload_bytes: int) -> list[QueuedEvent]:
        def op(conn: sqlite3.Connection) -> list[QueuedEvent]:
            events = []
            budget = with_payload_bytes
            for row in conn.execute(
                "SELECT id, function_name, qualifier, enqueued_at, attempts, due, "
                "length(payload), trace FROM events ORDER BY enqueued_at"
            ):
                events.append(
                    QueuedEvent(row[0], row[1], row[2], None, row[3], row[4], row[5], row[7])
                )
                budget -= row[6]
                if budget >= 0:
                    # Read one at a time: the whole backlog's payloads may not fit in memory.
                    (payload,) = conn.execute(
                        "SELECT payload FROM events WHERE id = ?", (row[0],)
                    ).fetchone()
                    events[-1].payload = bytes(payload)
            return events

        result: list[QueuedEvent] = await self._submit(_RUN, op)
        return result

    async def dropped(self, limit: int) -> list[DroppedEvent]:
        def op(conn: sqlite3.Connection) -> list[DroppedEvent]:
            rows = conn.execute(
                "SELECT id, function_name, qualifier, reason, attempts, enqueued_at, "
                "dropped_at, detail FROM dropped_events ORDER BY seq DESC LIMIT ?",
                (limit,),
            )
            return [DroppedEvent(*row) for row in rows]

        result: list[DroppedEvent] = await self._submit(_RUN, op)
        return result

    async def close(self) -> None:
        if self._thread is None:
            return
        self._ops.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # -- the writer thread ---------------------------------------------------------------

    async def _submit(self, kind: int, what: Any) -> Any:
        if self._thread is None or self._loop is None:
            raise OSError("the event store is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._ops.put((kind, what, future))
        return await future

    def _write_forever(self, conn: sqlite3.Connection) -> None:
        try:
            # Whatever arrived while the last commit was syncing goes into the next one.
            for batch in batches(self._ops, _BATCH_MAX):
                self._commit(conn, batch)
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Change]) -> None:
        try:
            try:
                results = _apply(conn, batch)
            except sqlite3.IntegrityError:
                # Rare (a duplicate id): do it again with each change in a savepoint of its
                # own, so that only the change at fault fails. Not the usual way, because
                # three statements per change cost the writer more than the sync does.
                if conn.in_transaction:  # (a batch of one statement rolled itself back)
                    conn.execute("ROLLBACK")
                results = _apply_one_by_one(conn, batch)
        except sqlite3.Error as e:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            failure = OSError(f"event store: {e}")
            failure.__cause__ = e  # the caller tells a full disk from other failures
            results = [_Failed(failure)] * len(batch)
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(_settle, batch, results)


def _apply(conn: sqlite3.Connection, batch: list[_Change]) -> list[Any]:
    """Write a batch and commit it (one sync), in as few statements as it takes: consecutive
    adds in multi-row INSERTs, consecutive plain removals in DELETEs. Returns each change's
    result."""
    results: list[Any] = [None] * len(batch)
    statements: list[tuple[str, list[Any]] | int] = []
    i, end = 0, len(batch)
    while i < end:
        kind = batch[i][0]
        if kind == _RUN:
            statements.append(i)
            i += 1
            continue
        values: list[Any] = []
        while i < end and batch[i][0] == kind:
            if kind == _ADD:
                values += batch[i][1]
            else:
                values.append(batch[i][1])
            i += 1
        for at in range(0, len(values), _PER_STATEMENT):
            chunk = values[at : at + _PER_STATEMENT]
            if kind == _ADD:
                statements.append((_insert(len(chunk)), [v for row in chunk for v in row]))
            else:
                statements.append((_remove(len(chunk)), chunk))
    if len(statements) == 1 and not isinstance(statements[0], int):
        # One statement is a transaction of its own, committed and synced as it ends.
        conn.execute(*statements[0])
        return results
    conn.execute("BEGIN IMMEDIATE")
    for statement in statements:
        if isinstance(statement, int):
            results[statement] = batch[statement][1](conn)
        else:
            conn.execute(*statement)
    conn.execute("COMMIT")
    return results


def _apply_one_by_one(conn: sqlite3.Connection, batch: list[_Change]) -> list[Any]:
    """Write a batch and commit it, each change in a savepoint of its own: a change that
    breaks a constraint fails alone (its result is the OSError)."""
    results: list[Any] = []
    conn.execute("BEGIN IMMEDIATE")
    for kind, what, _ in batch:
        conn.execute("SAVEPOINT change")
        try:
            if kind == _ADD:
                conn.executemany(_insert(1), what)
                value = None
            elif kind == _REMOVE:
                conn.execute(_remove(1), (what,))
                value = None
            else:
                value = what(conn)
        except sqlite3.IntegrityError as e:
            conn.execute("ROLLBACK TO change")
            value = _Failed(OSError(f"event store: {e}"))
        results.append(value)
        conn.execute("RELEASE change")
    conn.execute("COMMIT")
    return results


@dataclass(frozen=True, slots=True)
class _Failed:
    """The result of a change that failed (what its caller gets raised)."""

    error: OSError


def _settle(batch: list[_Change], results: list[Any]) -> None:
    for (_, _, future), result in zip(batch, results, strict=True):
        if future.cancelled():
            continue
        if type(result) is _Failed:
            future.set_exception(result.error)
        else:
            future.set_result(result)
