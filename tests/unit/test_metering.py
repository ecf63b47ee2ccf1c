"""The meter: billed ms and GB-seconds per function, version and UTC day, kept in SQLite."""

from __future__ import annotations

import asyncio
import calendar
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from lamina.api.usage import since_day
from lamina.cli.usage import _price, since_param, summarize
from lamina.errors import InvalidParameterValueError
from lamina.observability import Meter, Report, Usage
from lamina.observability.metering import utc_day

DAY1 = calendar.timegm((2026, 3, 1, 0, 0, 0))


def report(
    duration_ms: float,
    memory: int = 128,
    *,
    function: str = "fn",
    version: str = "$LATEST",
    init_ms: float | None = None,
    bill_init: bool = False,
) -> Report:
    return Report(
        request_id="r",
        duration_ms=duration_ms,
        memory_size_mb=memory,
        max_memory_used_mb=10,
        init_duration_ms=init_ms,
        bill_init=bill_init,
        function_name=function,
        version=version,
    )


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_billed_ms_rounds_up_to_the_millisecond_and_bills_custom_runtime_init() -> None:
    assert report(0.2).billed_ms() == 1
    assert report(1.0).billed_ms() == 1
    assert report(1.001).billed_ms() == 2
    assert report(10.5, init_ms=100.2).billed_ms() == 11  # managed runtime: init is free
    assert report(10.5, init_ms=100.2, bill_init=True).billed_ms() == 111


def test_usage_sums_requests_billed_ms_and_gb_seconds(tmp_path: Path) -> None:
    async def run() -> list[Usage]:
        meter = Meter(tmp_path / "usage.db", clock=Clock(DAY1 + 10))
        await meter.open()
        meter.record(report(99.1, 1024))  # 100 ms at 1 GB
        meter.record(report(0.3, 1024))  # 1 ms
        meter.record(report(1999.5, 512, version="1"))  # 2,000 ms at 0.5 GB
        rows = await meter.usage()
        await meter.close()
        return rows

    rows = asyncio.run(run())
    assert rows == [
        Usage("fn", "$LATEST", "2026-03-01", 2, 101, 101 * 1024),
        Usage("fn", "1", "2026-03-01", 1, 2000, 2000 * 512),
    ]
    assert rows[0].gb_seconds == pytest.approx(0.101)
    assert rows[1].gb_seconds == pytest.approx(1.0)


def test_usage_is_bucketed_by_utc_day(tmp_path: Path) -> None:
    clock = Clock(DAY1 - 0.001)  # the last millisecond of 28 February

    async def run() -> list[Usage]:
        meter = Meter(tmp_path / "usage.db", clock=clock)
        await meter.open()
        meter.record(report(5))
        clock.now = DAY1  # midnight belongs to the new day
        meter.record(report(7))
        clock.now = DAY1 + 86_399.999
        meter.record(report(9))
        clock.now = DAY1 - 3600  # a clock stepped back still lands on its own day
        meter.record(report(11))
        rows = await meter.usage()
        since = await meter.usage(since_day="2026-03-01")
        await meter.close()
        return [*rows, Usage("-", "-", "-", 0, 0, 0), *since]

    rows = asyncio.run(run())
    assert [(r.day, r.requests, r.billed_ms) for r in rows] == [
        ("2026-02-28", 2, 16),
        ("2026-03-01", 2, 16),
        ("-", 0, 0),
        ("2026-03-01", 2, 16),
    ]


def test_usage_survives_reopening_and_adds_up(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"

    async def session(durations: list[float]) -> None:
        meter = Meter(path, clock=Clock(DAY1))
        await meter.open()
        for d in durations:
            meter.record(report(d, 256))
        await meter.close()  # close writes out what is left

    asyncio.run(session([10, 20]))
    asyncio.run(session([30]))

    async def read(function: str | None) -> list[Usage]:
        meter = Meter(path)
        await meter.open()
        try:
            return await meter.usage(function=function)
        finally:
            await meter.close()

    assert asyncio.run(read(None)) == [Usage("fn", "$LATEST", "2026-03-01", 3, 60, 60 * 256)]
    assert asyncio.run(read("other")) == []


def test_a_batch_is_written_within_the_flush_interval(tmp_path: Path) -> None:
    path = tmp_path / "usage.db"

    async def run() -> int:
        meter = Meter(path)
        await meter.open()
        meter.record(report(3))
        await asyncio.sleep(1.3)  # no flush asked for: the meter's own timer writes it
        with sqlite3.connect(path) as conn:
            (requests,) = conn.execute("SELECT SUM(requests) FROM usage").fetchone()
        await meter.close()
        return int(requests)

    assert asyncio.run(run()) == 1


def test_a_failed_write_is_kept_for_the_next_batch(tmp_path: Path) -> None:
    async def run() -> list[Usage]:
        meter = Meter(tmp_path / "usage.db", clock=Clock(DAY1))
        await meter.open()
        db = meter._db
        assert db is not None
        write = db.add
        fail = [True]

        def add(batch: Any) -> None:
            if fail.pop():
                raise OperationalError(
                    "INSERT", None, sqlite3.OperationalError("database is locked")
                )
            write(batch)

        db.add = add  # type: ignore[method-assign]
        meter.record(report(3))
        await meter.flush()  # fails; logged, and the batch is kept
        fail.append(False)
        meter.record(report(4))
        rows = await meter.usage()
        await meter.close()
        return rows

    assert asyncio.run(run()) == [Usage("fn", "$LATEST", "2026-03-01", 2, 7, 7 * 128)]


def test_utc_day_and_since_parameter() -> None:
    assert utc_day(DAY1) == "2026-03-01"
    assert utc_day(DAY1 - 1) == "2026-02-28"
    assert since_day(None) is None
    assert since_day(str(DAY1 + 5)) == "2026-03-01"
    assert since_day("2026-03-01") == "2026-03-01"
    assert since_day("2026-03-01T23:30:00-02:00") == "2026-03-02"
    with pytest.raises(InvalidParameterValueError):
        since_day("last week")
    assert since_param("7d", DAY1) == str(DAY1 - 7 * 86_400)
    assert since_param("24h", DAY1) == str(DAY1 - 86_400)
    assert since_param("2026-01-01", DAY1) == "2026-01-01"
    assert since_param("all", DAY1) is None
    assert (_price(0.0000166667), _price(0.2), _price(3)) == ("0.0000166667", "0.20", "3.00")


def test_cli_sums_days_per_version_in_version_order() -> None:
    rows = [
        {"function": "f", "version": v, "day": d, "requests": 1, "billedMs": 2, "gbSeconds": 0.5}
        for v, d in [("10", "a"), ("2", "a"), ("$LATEST", "a"), ("$LATEST", "b")]
    ]
    lines = summarize(rows)
    assert [(x.version, x.requests, x.billed_ms, x.gb_seconds) for x in lines] == [
        ("$LATEST", 2, 4, 1.0),
        ("2", 1, 2, 0.5),
        ("10", 1, 2, 0.5),
    ]
    assert lines[0].cost(0.0000166667, 0.20) == pytest.approx(1.0 * 0.0000166667 + 2 * 0.20 / 1e6)
