"""The log store: groups, streams and events in SQLite, written by one thread."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from lamina.models import LogFormat, LoggingConfig
from lamina.observability import LogStore, logs
from lamina.observability.log_rows import MAX_MESSAGE_BYTES, Writer, now_ms
from lamina.observability.logs import LogWriter, Report

G = "/aws/lambda/fn"


def run(coro_fn: Callable[[LogStore], Awaitable[None]], path: Path, cap: int = 1 << 30) -> None:
    async def main() -> None:
        store = LogStore(path, cap)
        store.open()
        try:
            await coro_fn(store)
        finally:
            await store.close()

    asyncio.run(main())


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "logs.db"


def messages(events: Any) -> list[str]:
    return [e.message for e in events]


def test_events_in_order_with_groups_and_streams(db: Path) -> None:
    async def body(store: LogStore) -> None:
        store.append(G, "2026/01/01/[$LATEST]b", [(100, "b1"), (300, "b2")])
        store.append(G, "2026/01/01/[$LATEST]a", [(200, "a1"), (200, "a2")])
        store.append("/aws/lambda/other", "s", [(50, "o")])
        await store.flush()
        assert [g.name for g in await store.groups()] == [G, "/aws/lambda/other"]
        assert [g.name for g in await store.groups("/aws/lambda/o")] == ["/aws/lambda/other"]
        streams = await store.streams(G)
        assert [s.name for s in streams] == ["2026/01/01/[$LATEST]a", "2026/01/01/[$LATEST]b"]
        b = streams[1]
        assert (b.first_event_ms, b.last_event_ms) == (100, 300)
        assert b.stored_bytes == 2 * (2 + 26)
        assert b.last_ingestion_ms is not None and b.last_ingestion_ms >= b.created_ms
        group = (await store.groups(G))[0]
        assert group.stored_bytes == 4 * (2 + 26)
        assert group.retention_days is None
        assert [s.name for s in await store.streams(G, "2026/01/01/[$LATEST]b")] == [b.name]
        # By timestamp, then by insertion (id).
        events = await store.events(G)
        assert messages(events) == ["b1", "a1", "a2", "b2"]
        assert events[1].stream == "2026/01/01/[$LATEST]a"
        assert messages(await store.events(G, newest_first=True)) == ["b2", "a2", "a1", "b1"]
        assert messages(await store.events(G, streams=[b.name])) == ["b1", "b2"]
        assert messages(await store.events(G, streams=[])) == []
        assert messages(await store.events(G, stream_prefix="2026/01/01/[$LATEST]a")) == [
            "a1",
            "a2",
        ]
        assert messages(await store.events(G, start_ms=200, end_ms=300)) == ["a1", "a2"]
        assert messages(await store.events(G, start_ms=201)) == ["b2"]

    run(body, db)


def test_paging_with_ids(db: Path) -> None:
    async def body(store: LogStore) -> None:
        store.append(G, "s", [(1000 + i, f"m{i}") for i in range(25)])
        await store.flush()
        seen: list[str] = []
        after = None
        while True:
            page = await store.events(G, after_id=after, limit=10)
            if not page:
                break
            seen += messages(page)
            after = page[-1].id
        assert seen == [f"m{i}" for i in range(25)]
        ids = [e.id for e in await store.events(G)]
        assert ids == sorted(ids) and len(set(ids)) == 25
        back = await store.events(G, before_id=ids[10], limit=3, newest_first=True)
        assert messages(back) == ["m9", "m8", "m7"]

    run(body, db)


def test_a_large_batch_keeps_every_event_in_order(db: Path) -> None:
    """Events are inserted many to a statement (chunks of powers of two): a batch of any
    size keeps them all, with increasing ids in the order they were appended."""

    async def body(store: LogStore) -> None:
        count = 1000  # 3 x 256 + 128 + 64 + 32 + 8
        store.append(G, "s", [(5, f"m{i}") for i in range(count)])
        store.append(G, "t", [(5, "t0")])
        await store.flush()
        events = await store.events(G, streams=["s"], limit=10_000)
        assert messages(events) == [f"m{i}" for i in range(count)]
        ids = [e.id for e in events]
        assert ids == sorted(ids) and len(set(ids)) == count
        (stream,) = await store.streams(G, "s")
        assert stream.stored_bytes == sum(len(f"m{i}") + 26 for i in range(count))

    run(body, db)


def test_unknown_group_is_a_key_error(db: Path) -> None:
    async def body(store: LogStore) -> None:
        for call in (
            store.streams("nope"),
            store.events("nope"),
            store.set_retention("nope", 1),
            store.delete_group("nope"),
        ):
            with pytest.raises(KeyError):
                await call

    run(body, db)


def test_delete_group_and_recreate(db: Path) -> None:
    async def body(store: LogStore) -> None:
        store.append(G, "s", [(1, "old")])
        await store.flush()
        await store.delete_group(G)
        assert await store.groups() == []
        store.append(G, "s", [(2, "new")])
        await store.flush()
        assert messages(await store.events(G)) == ["new"]

    run(body, db)


def test_long_messages_are_split_between_characters(db: Path) -> None:
    async def body(store: LogStore) -> None:
        text = "é" * MAX_MESSAGE_BYTES  # 2 bytes each
        store.append(G, "s", [(1, text)])
        await store.flush()
        parts = messages(await store.events(G))
        assert "".join(parts) == text
        assert len(parts) == 2
        assert all(len(p.encode()) <= MAX_MESSAGE_BYTES for p in parts)

    run(body, db)


def test_retention_prunes_old_events(db: Path) -> None:
    async def body(store: LogStore) -> None:
        now = now_ms()
        day = 86_400_000
        store.append(G, "s", [(now - 3 * day, "old"), (now - 1000, "recent")])
        store.append("/aws/lambda/kept", "s", [(now - 30 * day, "no retention")])
        await store.flush()
        await store.set_retention(G, 1)
        await store.prune()
        assert messages(await store.events(G)) == ["recent"]
        assert (await store.groups(G))[0].retention_days == 1
        stream = (await store.streams(G))[0]
        assert stream.stored_bytes == len("recent") + 26
        assert stream.first_event_ms == now - 1000
        assert messages(await store.events("/aws/lambda/kept")) == ["no retention"]
        await store.set_retention(G, None)
        assert (await store.groups(G))[0].retention_days is None

    run(body, db)


def test_disk_cap_drops_the_oldest_first(db: Path) -> None:
    cap = 512 * 1024

    async def body(store: LogStore) -> None:
        line = "x" * 1000
        for batch in range(40):  # ~4 MB, twice the page overhead
            store.append(G, "s", [(batch * 100 + i, f"{batch} {i} {line}") for i in range(100)])
        await store.flush()
        await store.prune()
        events = await store.events(G)
        assert 0 < len(events) < 4000
        assert events[-1].message.startswith("39 99 ")  # the newest are kept
        first = int(events[0].message.split()[0])
        assert first > 0  # the oldest went
        stream = (await store.streams(G))[0]
        assert stream.stored_bytes == sum(len(e.message) + 26 for e in events)

    run(body, db, cap=cap)
    assert db.stat().st_size <= cap + 64 * 1024  # pages given back to the disk
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_flush_waits_for_producers(db: Path) -> None:
    """flush() first takes what a LogWriter still buffers, so a reader sees every line."""

    async def body(store: LogStore) -> None:
        writer = LogWriter(store)
        log = writer.log(G, "s")
        log._output(b"one\ntwo\npart")
        await store.flush()
        assert messages(await store.events(G)) == ["one", "two"]
        log.close()  # the unfinished line ends with the environment
        await store.flush()
        assert messages(await store.events(G)) == ["one", "two", "part"]
        await writer.close()

    run(body, db)


def test_json_format_records_levels_and_drops(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In JSON format the platform lines are `platform.*` records filtered by the system
    level, the function's lines are filtered by the application level (JSON by `level`,
    anything else as INFO), and a drop is reported as `platform.logsDropped`."""
    monkeypatch.setattr(logs, "MAX_PENDING_BYTES", 200)
    config = LoggingConfig(LogFormat.JSON, application_log_level="WARN", system_log_level="INFO")

    async def body(store: LogStore) -> None:
        writer = LogWriter(store)
        log = writer.log(G, "s", config)
        log.start("rid", "$LATEST")
        log._output(b'plain\n{"level":"debug","m":1}\n{"level":"Error","m":2}\n{"m":3}\n')
        big = b'{"level":"WARN","pad":"' + b"x" * 300 + b'"}'
        log._output(b'{"level":"WARN","m":4}\n' + big + b"\n")  # over the cap: dropped
        log.finish(Report("rid", 1.2, 128, 30, status="timeout"), "Task timed out")
        await store.flush()
        got = [json.loads(m) for m in messages(await store.events(G))]
        assert [r.get("type") or r["m"] for r in got] == [
            "platform.start",
            2,
            4,
            "platform.logsDropped",
            "platform.report",
        ]
        assert got[3]["record"]["droppedBytes"] == len(big) + 1
        assert got[4]["record"] == {
            "requestId": "rid",
            "metrics": {
                "durationMs": 1.2,
                "billedDurationMs": 2,
                "memorySizeMB": 128,
                "maxMemoryUsedMB": 30,
            },
            "status": "timeout",
        }
        await writer.close()

    run(body, db)


def test_reopen_keeps_events_and_ids_increase(db: Path) -> None:
    async def first(store: LogStore) -> None:
        store.append(G, "s", [(1, "a")])

    async def second(store: LogStore) -> None:
        store.append(G, "s", [(2, "b")])
        await store.flush()
        events = await store.events(G)
        assert messages(events) == ["a", "b"]
        assert events[0].id < events[1].id

    run(first, db)  # close() writes what was queued
    run(second, db)


def test_a_failing_disk_loses_the_batch_not_the_store(
    db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch the disk refuses even after room was made is lost, and a marker in its
    stream says so (with the count); the next batch is stored."""
    real = Writer.insert
    failures = [sqlite3.OperationalError("database or disk is full")] * 3

    def insert(self: Writer, appends: Any) -> None:
        if failures:
            raise failures.pop()
        real(self, appends)

    monkeypatch.setattr(Writer, "insert", insert)

    async def body(store: LogStore) -> None:
        store.append(G, "s", [(1, "lost")])
        await store.flush()
        store.append(G, "s", [(2, "kept")])
        await store.flush()
        assert messages(await store.events(G)) == [
            "[lamina: 1 log lines (5 bytes) dropped: the log store could not write them]",
            "kept",
        ]
        assert store.backlog_bytes == 0

    run(body, db)
