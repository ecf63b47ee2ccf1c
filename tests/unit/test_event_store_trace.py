"""The event store keeps each event's trace header (recursive loop detection), also in a queue
made before the column existed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from lamina.store.event_queue import QueuedEvent, SqliteEventStore

TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=0;Lineage=abcdef01:3"


async def _reopen_and_load(path: Path, add: list[QueuedEvent]) -> list[QueuedEvent]:
    store = SqliteEventStore(path)
    store.open()
    await store.add(add)
    await store.finish("none", [QueuedEvent("f", "dest", None, b"{}", 3.0, trace=TRACE)])
    await store.close()
    store = SqliteEventStore(path)
    store.open()
    loaded = await store.load(1 << 20)
    await store.close()
    return loaded


def test_traces_survive_a_restart(tmp_path: Path) -> None:
    loaded = asyncio.run(
        _reopen_and_load(
            tmp_path / "e.db",
            [
                QueuedEvent("a", "fn", None, b"{}", 1.0, trace=TRACE),
                QueuedEvent("b", "fn", None, b"{}", 2.0),
            ],
        )
    )
    assert [(e.id, e.trace) for e in loaded] == [("a", TRACE), ("b", ""), ("f", TRACE)]


def test_a_queue_from_before_traces_is_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "e.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE events (id TEXT PRIMARY KEY, function_name TEXT NOT NULL, qualifier TEXT,"
        " payload BLOB NOT NULL, enqueued_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,"
        " due REAL NOT NULL DEFAULT 0)"
    )
    conn.execute("INSERT INTO events VALUES ('old', 'fn', NULL, X'7b7d', 0.5, 0, 0)")
    conn.commit()
    conn.close()
    loaded = asyncio.run(
        _reopen_and_load(path, [QueuedEvent("new", "fn", None, b"{}", 1.0, trace=TRACE)])
    )
    assert [(e.id, e.trace, e.payload) for e in loaded] == [
        ("old", "", b"{}"),
        ("new", TRACE, b"{}"),
        ("f", TRACE, b"{}"),
    ]
