"""Log limits: the per-function rate limit, the disk budget, and the marker every loss leaves."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from lamina.models import LogFormat, LoggingConfig
from lamina.observability import LogStore
from lamina.observability.log_disk import MB, DiskBudget, default_reserve
from lamina.observability.log_loss import RateLimiter
from lamina.observability.logs import LogWriter, Report

G = "/aws/lambda/fn"
Loss = tuple[str, str, int, int]


def run(body: Callable[[LogStore], Awaitable[None]], store: LogStore) -> None:
    async def main() -> None:
        store.open()
        try:
            await body(store)
        finally:
            await store.close()

    asyncio.run(main())


def messages(events: object) -> list[str]:
    return [e.message for e in events]  # type: ignore[attr-defined]


def test_the_bucket_allows_a_burst_then_its_rate() -> None:
    bucket = RateLimiter(rate=100, burst=1000)
    bucket.refill(bucket._at)
    assert bucket.allow(600) and bucket.allow(400)
    assert not bucket.allow(1)
    bucket.refill(bucket._at + 2.0)  # two seconds at 100 a second
    assert bucket.allow(200) and not bucket.allow(1)
    bucket.refill(bucket._at + 3600)  # never more than the burst
    assert bucket.allow(1000) and not bucket.allow(1)


def test_default_reserve() -> None:
    assert default_reserve(64 * MB) == 16 * MB  # a quarter of a small disk
    assert default_reserve(2048 * MB) == 256 * MB
    assert default_reserve(100 * 1024 * MB) == 5 * 1024 * MB  # 5% of a large one


@pytest.mark.parametrize("json_format", [False, True])
def test_lines_over_the_rate_are_dropped_with_a_marker_and_counted(
    tmp_path: Path, json_format: bool
) -> None:
    """A function over its rate loses lines, not platform lines; the stream says how many
    lines and bytes went (Text: a bracketed line, JSON: platform.logsDropped), and the
    metric hook hears the same counts."""
    losses: list[Loss] = []
    config = LoggingConfig(LogFormat.JSON if json_format else LogFormat.TEXT)
    store = LogStore(tmp_path / "logs.db", 1 << 30)

    async def body(store: LogStore) -> None:
        writer = LogWriter(
            store, rate_bytes_s=1, burst_bytes=100, on_loss=lambda *a: losses.append(a)
        )
        log = writer.log(G, "s", config, function="fn")
        log.start("rid", "$LATEST")
        # 10 lines of 20 bytes (19 + newline) fit in 100 bytes: 5 kept, 5 dropped
        log._output(b"".join(b"%02d" % i + b"x" * 17 + b"\n" for i in range(10)))
        log.finish(Report("rid", 1.0, 128, 10))
        await store.flush()
        got = messages(await store.events(G))
        kept = [m for m in got if m.endswith("x" * 17)]
        assert [m[:2] for m in kept] == ["00", "01", "02", "03", "04"]
        dropped = [m for m in got if "dropped" in m or "logsDropped" in m]
        assert len(dropped) == 1
        if json_format:
            record = json.loads(dropped[0])
            assert record["type"] == "platform.logsDropped"
            assert record["record"]["droppedRecords"] == 5
            assert record["record"]["droppedBytes"] == 100
        else:
            assert dropped[0] == (
                "[lamina: 5 log lines (100 bytes) dropped: the function wrote faster than "
                "its log rate limit]"
            )
        # the marker stands where the lost lines were: after the kept ones, before the end
        assert got.index(dropped[0]) > got.index(kept[-1])
        assert losses == [("fn", "rate_limit", 5, 100)]
        await writer.close()

    run(body, store)


def test_functions_have_buckets_of_their_own(tmp_path: Path) -> None:
    store = LogStore(tmp_path / "logs.db", 1 << 30)

    async def body(store: LogStore) -> None:
        writer = LogWriter(store, rate_bytes_s=1, burst_bytes=10)
        a = writer.log(G, "a", function="a")
        b = writer.log(G, "b", function="b")
        a2 = writer.log(G, "a2", function="a")  # another environment of a
        a._output(b"123456789\n")
        b._output(b"123456789\n")
        a2._output(b"123456789\n")  # a's bucket is empty
        await store.flush()
        got = messages(await store.events(G))
        assert got.count("123456789") == 2
        assert any(m.startswith("[lamina: 1 log lines (10 bytes) dropped") for m in got)
        await writer.close()

    run(body, store)


class FakeDisk:
    """statvfs of a filesystem whose free space the test sets (4 KB blocks)."""

    def __init__(self, size: int, free: int) -> None:
        self.size = size
        self.free = free

    def __call__(self, path: str) -> os.statvfs_result:
        blocks, free = self.size // 4096, self.free // 4096
        return os.statvfs_result((4096, 4096, blocks, free, free, 0, 0, 0, 0, 255))


def test_logs_leave_the_reserve_and_say_what_they_lost(tmp_path: Path) -> None:
    """With no room above the reserve, new lines are dropped (a disk_cap marker counts
    them, written as soon as a little room is back); the store shrinks to give space back
    when another writer takes the disk, without a restart."""
    losses: list[Loss] = []
    disk = FakeDisk(size=1024 * MB, free=600 * MB)
    store = LogStore(tmp_path / "logs.db", 1 << 40, on_loss=lambda *a: losses.append(a))
    store.budget = DiskBudget(store.path, 1 << 40, 100 * MB, statvfs=disk)
    line = "z" * 1000

    async def body(store: LogStore) -> None:
        for i in range(200):
            store.append(G, "s", [(i, f"{i} {line}")])
        await store.flush()
        assert len(await store.events(G)) == 200
        own = store.budget.files_bytes()
        # Another writer leaves only the reserve: the logs may keep nothing more (the
        # budget is read again within CHECK_INTERVAL_S; fresh here).
        disk.free = 100 * MB - own
        store.budget.limit(fresh=True)
        store.append(G, "s", [(1000, "lost one"), (1001, "lost two")])
        await store.flush()
        assert "lost one" not in messages(await store.events(G))
        assert ("", "disk_cap", 2, len("lost one\n") + len("lost two\n")) in losses
        # The room comes back: the marker is written first, then new lines.
        disk.free = 600 * MB
        store.budget.limit(fresh=True)
        store.append(G, "s", [(2000, "back")])
        await store.flush()
        got = messages(await store.events(G))
        marker = (
            "[lamina: 2 log lines (18 bytes) dropped: the log store had no room left under "
            "its disk cap]"
        )
        assert got[-2:] == [marker, "back"]
        # Another writer takes space again: a prune gives it back (oldest first).
        before = store.budget.files_bytes()
        disk.free = 100 * MB - before // 2
        await store.prune()
        assert store.budget.files_bytes() <= before // 2 + 64 * 1024
        got = messages(await store.events(G))
        assert got[-1] == "back" and not got[0].startswith("0 ")

    run(body, store)


def test_a_full_disk_is_a_429_with_retry_after_not_a_500() -> None:
    """A request that fails for want of disk (SQLite's SQLITE_FULL, wrapped by SQLAlchemy,
    or ENOSPC) is answered 429 TooManyRequestsException with Retry-After; other failures
    stay 500s."""
    import errno
    import sqlite3

    from sqlalchemy.exc import OperationalError
    from starlette.requests import Request

    from lamina.api.errors import unexpected_error

    def answer(exc: Exception) -> tuple[int, str, str | None]:
        request = Request({"type": "http", "method": "POST", "path": "/", "headers": []})
        resp = asyncio.run(unexpected_error(request, exc))
        return resp.status_code, resp.headers["x-amzn-ErrorType"], resp.headers.get("retry-after")

    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    assert answer(full) == (429, "TooManyRequestsException", "5")
    assert answer(OSError(errno.ENOSPC, "No space left on device"))[0] == 429
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as wrapped:
        assert answer(wrapped)[0] == 429
    assert answer(RuntimeError("other")) == (500, "ServiceException", None)
