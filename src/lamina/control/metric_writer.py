"""Moves CloudWatch metric minutes from the in-memory recorder to the metadata database.

A background task: every few seconds it samples the gauges (concurrency: CloudWatch reports
their per-minute Maximum, so sampling often enough catches the peaks users read), drains the
closed minutes and writes them on a worker thread; hourly it prunes rows past retention.
A write that fails (the database away) is logged and its rows kept for the next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from lamina.observability.cw_metrics import (
    NAMESPACE,
    RETENTION_S,
    Dimensions,
    MetricRecorder,
    MinuteRow,
)
from lamina.store.metric_data import MetricDataStore

log = logging.getLogger(__name__)

#: how often gauges are sampled and closed minutes written
TICK_S = 5.0
PRUNE_EVERY_S = 3600.0
#: rows kept in memory while the database is away (about a day of a busy server's minutes)
MAX_PENDING = 200_000

Sample = tuple[str, Iterable[Dimensions], float]


class MetricWriter:
    def __init__(
        self,
        recorder: MetricRecorder,
        store: MetricDataStore,
        gauges: Callable[[], Iterable[Sample]] = lambda: (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._recorder = recorder
        self._store = store
        self._gauges = gauges
        self._clock = clock
        self._pending: list[MinuteRow] = []
        self._task: asyncio.Task[None] | None = None
        self._pruned_at = 0.0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop, and write everything recorded, the open minute too."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush(everything=True)

    async def flush(self, *, everything: bool = False) -> None:
        self._pending.extend(self._recorder.drain(everything=everything))
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self._store.write, NAMESPACE, rows)
        except Exception as e:  # the database away: keep them for the next round
            log.warning("cloudwatch metrics: writing %d rows failed: %s", len(rows), e)
            self._pending = rows[-MAX_PENDING:]

    def sample(self) -> None:
        for metric, dims, value in self._gauges():
            self._recorder.add(metric, dims, value)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                self.sample()
                await self.flush()
                now = self._clock()
                if now - self._pruned_at >= PRUNE_EVERY_S:
                    self._pruned_at = now
                    await asyncio.to_thread(self._store.prune, int(now) - RETENTION_S)
            except Exception:
                log.exception("cloudwatch metrics: a round failed")
