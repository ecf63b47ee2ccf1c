"""The durable event store: what is stored survives closing, changes apply in order, one bad
change fails alone, and concurrent changes share commits."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from lamina.store.event_queue import _RUN, DroppedEvent, QueuedEvent, SqliteEventStore


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


async def _hold_writer(
    store: SqliteEventStore, then: str = ""
) -> tuple[threading.Event, asyncio.Future[None]]:
    """Keep the writer thread busy until the returned event is set, so that the changes asked
    for meanwhile are written together, as one batch; `then` is SQL it runs before it lets
    go."""
    release = threading.Event()
    started = threading.Event()

    def wait(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(10)
        if then:
            conn.execute(then)

    held = asyncio.ensure_future(store._submit(_RUN, wait))
    await asyncio.to_thread(started.wait, 10)
    assert started.is_set()
    return release, held


def test_one_batch_of_mixed_changes_applies_in_order(tmp_path: Path) -> None:
    """Adds written as multi-row INSERTs, finishes as one DELETE, and the changes between
    them, all in one transaction, in the order they were asked for."""

    async def main() -> None:
        store = await opened(tmp_path / "e.db")
        await store.add([event(1), event(2)])
        commits = 0
        real = store._commit

        def counting(conn: sqlite3.Connection, batch: list) -> None:  # type: ignore[type-arg]
            nonlocal commits
            commits += 1
            real(conn, batch)

        store._commit = counting  # type: ignore[method-assign]
        release, held = await _hold_writer(store)
        drop = DroppedEvent("id-4", "fn", None, "RetriesExhausted", 3, 1004.0, 2000.0)
        changes = [
            store.finish("id-1"),
            store.add([event(3), event(4)]),
            store.add([event(5)]),
            store.reschedule("id-3", 2, 55.0),
            store.finish("id-2"),
            store.finish("id-5"),
            store.finish("id-4", [event(6)], drop),
            store.add([event(i) for i in range(100, 300)]),  # more than one INSERT's rows
            store.finish("id-150"),
            store.payload("id-3"),
        ]
        tasks = [asyncio.ensure_future(c) for c in changes]
        await asyncio.sleep(0.05)  # every change is queued behind the held one
        release.set()
        await held
        results = await asyncio.gather(*tasks)
        assert results[-1] == b'{"i": 1}'
        assert commits == 2  # the held change's, and one for all the others
        loaded = {e.id: e for e in await store.load(1 << 20)}
        expected = {"id-3", "id-6"} | {f"id-{i}" for i in range(100, 300)} - {"id-150"}
        assert set(loaded) == expected
        assert (loaded["id-3"].attempts, loaded["id-3"].due) == (2, 55.0)
        assert await store.dropped(10) == [drop]
        await store.close()

    asyncio.run(main())


@pytest.mark.parametrize("with_removal", [False, True])
def test_a_duplicate_in_one_batch_fails_alone(tmp_path: Path, with_removal: bool) -> None:
    """Whether the batch was one statement (autocommit) or a transaction of several, only the
    change at fault fails, and the others are stored."""

    async def main() -> None:
        store = await opened(tmp_path / "e.db")
        await store.add([event(1), event(9)])
        release, held = await _hold_writer(store)
        changes = [store.add([event(2)]), store.add([event(3), event(1)]), store.add([event(4)])]
        if with_removal:
            changes.append(store.finish("id-9"))
        tasks = [asyncio.ensure_future(c) for c in changes]
        await asyncio.sleep(0.05)
        release.set()
        await held
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[1], OSError)
        assert [r for i, r in enumerate(results) if i != 1] == [None] * (len(results) - 1)
        stored = sorted(e.id for e in await store.load(1 << 20))
        assert stored == ["id-1", "id-2", "id-4"] + ([] if with_removal else ["id-9"])
        await store.close()

    asyncio.run(main())


def test_a_failed_commit_fails_every_change_of_its_batch(tmp_path: Path) -> None:
    """A write the database refuses (here: made read-only under the store) fails every change
    of the batch with OSError, and nothing of it is stored."""

    async def main() -> None:
        store = await opened(tmp_path / "e.db")
        await store.add([event(1)])
        await store.close()
        for removal in (False, True):  # one statement, and a transaction of two
            store = await opened(tmp_path / "e.db")
            release, held = await _hold_writer(store, then="PRAGMA query_only = ON")
            changes = [store.add([event(2)]), store.add([event(3)])]
            if removal:
                changes.append(store.finish("id-1"))
            tasks = [asyncio.ensure_future(c) for c in changes]
            await asyncio.sleep(0.05)
            release.set()
            await held
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, OSError) for r in results), results
            await store.close()
        store = await opened(tmp_path / "e.db")
        assert [e.id for e in await store.load(1 << 20)] == ["id-1"]
        await store.close()

    asyncio.run(main())
