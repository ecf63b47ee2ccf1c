"""Metering: what each function version used per UTC day, as Lambda would bill it.

Every invocation's `Report` adds one request, its billed milliseconds (Lambda's 1 ms granularity,
init included where Lambda bills it) and its billed milliseconds x memory to the bucket of its
(function, version, UTC day). The hot path is a dict update on the event loop; the totals reach
the database in batches, about once a second and on close, on one writer thread of the meter's
own, so they survive a restart and the event loop never waits on the disk. The database is
`<data-dir>/usage.db` on a single machine and the cluster's shared one in a cluster, where
every node adds to the same rows (`store.usage`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, TypeVarTuple

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from lamina.observability.logs import Report
from lamina.store.engine import make_engine
from lamina.store.usage import UsageRows, usage

log = logging.getLogger("lamina.metering")

_T = TypeVar("_T")
_Args = TypeVarTuple("_Args")

#: how long a recorded invocation may wait in memory before it is written out
FLUSH_INTERVAL_S = 1.0

_DAY_S = 86_400
#: MB-milliseconds in one GB-second (1,024 MB x 1,000 ms), Lambda's unit of compute
MB_MS_PER_GB_SECOND = 1_024_000


@dataclass(frozen=True)
class Usage:
    """What one function version used on one UTC day."""

    function: str
    version: str
    day: str  # YYYY-MM-DD, UTC
    requests: int
    billed_ms: int
    #: billed ms x memory MB, summed. Kept as an integer so that totals over millions of
    #: invocations are exact; GB-seconds are derived from it only when asked.
    mb_ms: int

    @property
    def gb_seconds(self) -> float:
        return self.mb_ms / MB_MS_PER_GB_SECOND


def utc_day(epoch: float) -> str:
    """The UTC calendar day (YYYY-MM-DD) of a moment: the bucket usage at that moment is in."""
    return time.strftime("%Y-%m-%d", time.gmtime(epoch))


# (function, version, day) -> [requests, billed_ms, mb_ms]
_Pending = dict[tuple[str, str, str], list[int]]


class Meter:
    """Accumulates usage from `Report`s and keeps it in `database`: a SQLite file of its own
    (`usage.db`), or an engine whose schema the migrations made (a cluster's database).

    `record` must be called on the event loop (it is a `LogWriter.on_report` observer);
    `open`, `flush`, `usage` and `close` are coroutines on that loop. Writes are additive
    upserts, so batches may land in any order and a failed batch is simply retried with the
    next one. Usage recorded after `close` is not written.
    """

    def __init__(self, database: Path | Engine, clock: Callable[[], float] = time.time) -> None:
        self._database = database
        self._clock = clock
        self._pending: _Pending = {}
        # One thread writes: batches are serialized without a lock, and a SQLite file's
        # connection never crosses threads.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lamina-meter")
        self._db: _UsageDb | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._closed = False
        # The current day's bounds, so that bucketing an invocation is a comparison, not a
        # time conversion.
        self._day = ""
        self._day_end = 0.0

    async def open(self) -> None:
        """Open (or create) the database, off the event loop."""
        self._db = await self._in_thread(_UsageDb, self._database)

    # -- the hot path ------------------------------------------------------------------

    def record(self, report: Report) -> None:
        """Count one invocation (called on the event loop with every REPORT), on the UTC day
        it ended."""
        now = self._clock()
        if not (self._day_end - _DAY_S <= now < self._day_end):
            start = now - now % _DAY_S  # POSIX time has no leap seconds: days are 86,400 s
            self._day, self._day_end = utc_day(start), start + _DAY_S
        # SnapStart's Billed Restore Duration is charged as duration (see `Report.metered_ms`)
        billed = report.metered_ms()
        key = (report.function_name, report.version, self._day)
        bucket = self._pending.get(key)
        if bucket is None:
            self._pending[key] = [1, billed, billed * report.memory_size_mb]
        else:
            bucket[0] += 1
            bucket[1] += billed
            bucket[2] += billed * report.memory_size_mb
        if self._timer is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(FLUSH_INTERVAL_S, self._flush_in_background)

    def _flush_in_background(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush())
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    # -- writing and reading -----------------------------------------------------------

    async def flush(self) -> None:
        """Write out everything recorded so far."""
        if not self._pending or self._db is None:
            return
        batch, self._pending = self._pending, {}
        try:
            await self._in_thread(self._db.add, batch)
        except (SQLAlchemyError, OSError):
            # Usage is what a team is billed by: keep it for the next batch, not lost.
            log.exception("metering: could not write usage; will retry with the next batch")
            for key, (requests, billed, mb_ms) in batch.items():
                bucket = self._pending.setdefault(key, [0, 0, 0])
                bucket[0] += requests
                bucket[1] += billed
                bucket[2] += mb_ms

    async def usage(self, since_day: str | None = None, function: str | None = None) -> list[Usage]:
        """Usage per function, version and day, from `since_day` (YYYY-MM-DD, UTC) on,
        including what has not been written out yet."""
        await self.flush()
        if self._db is None:
            return []
        return await self._in_thread(self._db.query, since_day, function)

    async def close(self) -> None:
        """Write out what is left and close the database; in-flight batches finish first."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushes:
            await asyncio.gather(*self._flushes)
        await self.flush()
        if self._db is not None:
            await self._in_thread(self._db.close)
            self._db = None
        self._executor.shutdown(wait=False)

    async def _in_thread(self, fn: Callable[[*_Args], _T], *args: *_Args) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)


class _UsageDb:
    """The usage table; used only from the meter's writer thread."""

    def __init__(self, database: Path | Engine) -> None:
        self._owned: Engine | None = None
        if isinstance(database, Path):
            database.parent.mkdir(parents=True, exist_ok=True)
            database = self._owned = make_engine(f"sqlite:///{database}")
            usage.create(database, checkfirst=True)  # the file's one table, as it always was
        self._rows = UsageRows(database)

    def add(self, batch: _Pending) -> None:
        self._rows.add([(f, v, d, r, b, m) for (f, v, d), (r, b, m) in batch.items()])

    def query(self, since_day: str | None, function: str | None) -> list[Usage]:
        return [Usage(*row) for row in self._rows.query(since_day, function)]

    def close(self) -> None:
        if self._owned is not None:
            self._owned.dispose()
