"""The durable store of asynchronous events: what has been accepted and not yet finished.

`EventStore` is the interface the async queue (`events/async_queue.py`) uses; a cluster
backend (PostgreSQL, NATS JetStream) implements the same methods. `SqliteEventStore` is the
single-node one: SQLite in WAL mode with `synchronous=FULL`, so a commit has reached the disk
(the WAL is fsynced) before the caller hears back.

Every change goes through one writer thread that owns the connection and commits whatever has
piled up while the previous commit was syncing, in one transaction (group commit): sixteen
concurrent accepts cost one fsync, not sixteen, and the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
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
_INSERT_EVENT = (
    "INSERT INTO events (id, function_name, qualifier, payload, enqueued_at, attempts, due, "
    "trace) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
#: records of dropped events kept (the oldest are pruned past this)
_DROPPED_KEEP = 10_000
#: changes committed in one transaction at most
_BATCH_MAX = 1024

_Op = Callable[[sqlite3.Connection], Any]


class SqliteEventStore:
    def __init__(self, path: Path) -> None:
        self._path = path
        self._ops: queue.SimpleQueue[tuple[_Op, asyncio.Future[Any]] | None] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._pruned = 0

    def open(self) -> None:
        """Create the database if needed and start the writer thread."""
        self._loop = asyncio.get_running_loop()
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
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
        rows = [
            (
                e.id,
                e.function_name,
                e.qualifier,
                e.payload,
                e.enqueued_at,
                e.attempts,
                e.due,
                e.trace,
            )
            for e in events
        ]

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(_INSERT_EVENT, rows)

        await self._submit(op)

    async def finish(
        self,
        event_id: str,
        follow_ups: Sequence[QueuedEvent] = (),
        dropped: DroppedEvent | None = None,
    ) -> None:
        rows = [
            (
                e.id,
                e.function_name,
                e.qualifier,
                e.payload,
                e.enqueued_at,
                e.attempts,
                e.due,
                e.trace,
            )
            for e in follow_ups
        ]

        def op(conn: sqlite3.Connection) -> None:
            if rows:
                conn.executemany(_INSERT_EVENT, rows)
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

        await self._submit(op)

    async def reschedule(self, event_id: str, attempts: int, due: float) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "UPDATE events SET attempts = ?, due = ? WHERE id = ?", (attempts, due, event_id)
            )

        await self._submit(op)

    async def payload(self, event_id: str) -> bytes | None:
        def op(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute("SELECT payload FROM events WHERE id = ?", (event_id,)).fetchone()
            return None if row is None else bytes(row[0])

        result: bytes | None = await self._submit(op)
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

        result: list[QueuedEvent] = await self._submit(op)
        return result

    async def dropped(self, limit: int) -> list[DroppedEvent]:
        def op(conn: sqlite3.Connection) -> list[DroppedEvent]:
            rows = conn.execute(
                "SELECT id, function_name, qualifier, reason, attempts, enqueued_at, "
                "dropped_at, detail FROM dropped_events ORDER BY seq DESC LIMIT ?",
                (limit,),
            )
            return [DroppedEvent(*row) for row in rows]

        result: list[DroppedEvent] = await self._submit(op)
        return result

    async def close(self) -> None:
        if self._thread is None:
            return
        self._ops.put(None)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    # -- the writer thread ---------------------------------------------------------------

    async def _submit(self, op: _Op) -> Any:
        if self._thread is None or self._loop is None:
            raise OSError("the event store is closed")
        future: asyncio.Future[Any] = self._loop.create_future()
        self._ops.put((op, future))
        return await future

    def _write_forever(self, conn: sqlite3.Connection) -> None:
        try:
            # Whatever arrived while the last commit was syncing goes into the next one.
            for batch in batches(self._ops, _BATCH_MAX):
                self._commit(conn, batch)
        finally:
            conn.close()

    def _commit(
        self, conn: sqlite3.Connection, batch: list[tuple[_Op, asyncio.Future[Any]]]
    ) -> None:
        try:
            try:
                results = self._apply(conn, batch, isolate=False)
            except sqlite3.IntegrityError:
                # Rare (a duplicate id): do it again with each change in a savepoint of its
                # own, so that only the change at fault fails. Not the usual way, because
                # three statements per change cost the writer more than the sync does.
                conn.execute("ROLLBACK")
                results = self._apply(conn, batch, isolate=True)
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            failure = OSError(f"event store: {e}")
            failure.__cause__ = e  # the caller tells a full disk from other failures
            results = [(future, None, failure) for _, future in batch]
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(_settle, results)

    @staticmethod
    def _apply(
        conn: sqlite3.Connection, batch: list[tuple[_Op, asyncio.Future[Any]]], *, isolate: bool
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        """Run a batch in one transaction and commit it (one sync)."""
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        conn.execute("BEGIN IMMEDIATE")
        for op, future in batch:
            if not isolate:
                results.append((future, op(conn), None))
                continue
            conn.execute("SAVEPOINT op")
            try:
                value = op(conn)
            except sqlite3.IntegrityError as e:
                conn.execute("ROLLBACK TO op")
                results.append((future, None, OSError(f"event store: {e}")))
            else:
                results.append((future, value, None))
            conn.execute("RELEASE op")
        conn.execute("COMMIT")
        return results


def _settle(results: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, value, error in results:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)
