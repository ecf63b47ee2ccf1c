"""The durable event store: what is stored survives closing, changes apply in order, one bad
change fails alone, and concurrent changes share commits."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from lamina.store.event_queue import DroppedEvent, QueuedEvent, SqliteEventStore


def event(i: int, payload: bytes = b'{"i": 1}', at: float = 0.0) -> QueuedEvent:
    return QueuedEvent(f"id-{i}", "fn", None, payload, enqueued_at=at or 1000.0 + i)


async def opened(path: Path) -> SqliteEventStore:
    store = SqliteEventStore(path)
    store.open()
    return store


def test_stored_events_load_back_in_age_order(tmp_path: Path) -> None:
    async def main() -> list[QueuedEvent]:
        store = await opened(tmp_path / "e.db")
        await store.add([event(2), event(1)])
        await store.add([QueuedEvent("q", "other", "live", b"[]", 999.0, attempts=1, due=5.0)])
        await store.close()
        store = await opened(tmp_path / "e.db")
        loaded = await store.load(1 << 20)
        await store.close()
        return loaded

    loaded = asyncio.run(main())
    assert [e.id for e in loaded] == ["q", "id-1", "id-2"]
    q = loaded[0]
    assert (q.function_name, q.qualifier, q.payload, q.enqueued_at, q.attempts, q.due) == (
        "other",
        "live",
        b"[]",
        999.0,
        1,
        5.0,
    )


def test_payloads_past_the_budget_are_read_back_when_asked(tmp_path: Path) -> None:
    async def main() -> None:
        store = await opened(tmp_path / "e.db")
        await store.add([event(i, payload=b"x" * 100) for i in range(5)])
        loaded = await store.load(250)
        assert [e.payload is not None for e in loaded] == [True, True, False, False, False]
        assert await store.payload("id-4") == b"x" * 100
        assert await store.payload("nope") is None
        await store.close()

    asyncio.run(main())


def test_finish_removes_stores_follow_ups_and_the_drop_record_together(tmp_path: Path) -> None:
    async def main() -> None:
        store = await opened(tmp_path / "e.db")
        await store.add([event(1), event(2)])
        drop = DroppedEvent("id-1", "fn", None, "RetriesExhausted", 3, 1001.0, 2000.0, "E")
        await store.finish("id-1", [event(3)], drop)
        await store.reschedule("id-2", 1, 77.0)
        assert [(e.id, e.attempts, e.due) for e in await store.load(1 << 20)] == [
            ("id-2", 1, 77.0),
            ("id-3", 0, 0.0),
        ]
        assert await store.dropped(10) == [drop]
        await store.close()

    asyncio.run(main())


def test_a_failing_change_fails_alone(tmp_path: Path) -> None:
    """A duplicate id is refused with OSError; the changes committed with it are kept."""

    async def main() -> None:
        store = await opened(tmp_path / "e.db")
        await store.add([event(1)])
        results = await asyncio.gather(
            store.add([event(2)]),
            store.add([event(1)]),
            store.add([event(3)]),
            return_exceptions=True,
        )
        assert results[0] is None and results[2] is None
        assert isinstance(results[1], OSError)
        assert sorted(e.id for e in await store.load(1 << 20)) == ["id-1", "id-2", "id-3"]
        await store.close()

    asyncio.run(main())


def test_concurrent_adds_share_commits(tmp_path: Path) -> None:
    """Group commit: 200 concurrent adds are durable in far fewer transactions."""

    async def main() -> int:
        store = await opened(tmp_path / "e.db")
        commits = 0
        real = store._commit

        def counting(conn: sqlite3.Connection, batch: list) -> None:  # type: ignore[type-arg]
            nonlocal commits
            commits += 1
            real(conn, batch)

        store._commit = counting  # type: ignore[method-assign]
        await asyncio.gather(*(store.add([event(i)]) for i in range(200)))
        assert len(await store.load(1 << 20)) == 200
        await store.close()
        return commits

    commits = asyncio.run(main())
    assert commits < 100


def test_the_database_is_synced_wal(tmp_path: Path) -> None:
    async def main() -> None:
        store = await opened(tmp_path / "e.db")
        await store.add([event(1)])
        await store.close()

    asyncio.run(main())
    with sqlite3.connect(tmp_path / "e.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_closed_store_refuses(tmp_path: Path) -> None:
    async def main() -> None:
        store = await opened(tmp_path / "e.db")
        await store.close()
        with pytest.raises(OSError):
            await store.add([event(1)])

    asyncio.run(main())
