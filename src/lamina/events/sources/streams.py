"""Lambda's stream delivery rules (as for Kinesis), written once for every `StreamSource`.

`deliver_stream` reads a source in order and invokes the mapping's function with batches:

- **Batching**: up to `BatchSize` records, waiting up to `MaximumBatchingWindowInSeconds` for a
  batch to fill, never more than the 6 MB synchronous payload. Records that fail every
  `FilterCriteria` filter (matched against the Kinesis record's fields, `data` decoded) count
  as processed: they are checkpointed and never reach the function.
- **Checkpoints**: a record is checkpointed only once it and everything read before it is done
  (the function succeeded for it, it was filtered out, or it was discarded after the error
  rules, having reached the on-failure destination if there is one). At least once: a crash
  re-reads from the checkpoint.
- **Errors**: a batch the function fails is retried (`MaximumRetryAttempts`, -1: until the
  records expire); `BisectBatchOnFunctionError` splits it in two first, and splitting does not
  count as a retry (as AWS documents). With `ReportBatchItemFailures` the function names failed
  records by `sequenceNumber`: everything before the lowest one is done and the rest is
  retried; an identifier that is empty, null or not in the batch fails the whole batch.
  Records older than `MaximumRecordAgeInSeconds` are discarded before an invoke. A discarded
  batch goes to the on-failure destination as Lambda's stream failure record
  (`stream_events.failure_record`, condition `RetryAttemptsExhausted` or `RecordAgeExceeded`);
  without a destination it is skipped, as Lambda skips it.
- **Throttles**: an invoke that did not reach the function (throttled, function unavailable) is
  retried with back-off; it is not an attempt and never discards a record (only the record age
  limit, which applies before every invoke, can).
- **ParallelizationFactor** N: records are spread over N lanes by a hash of their partition key;
  each lane delivers its batches one at a time, in order, so one key's records are in order and
  never in two invokes at once, while up to N batches are in flight. The checkpoint is the
  highest position below which everything is done.
- **Tumbling windows** (`TumblingWindowInSeconds`): windows are aligned on the epoch and a record
  belongs to the window of its arrival time. A batch holds records of one window; each invoke
  gets `window`, the `state` the previous invoke of that window returned (`{}` first),
  `shardId`, `eventSourceARN`, `isFinalInvokeForWindow`, `isWindowTerminatedEarly`, and must
  return `{"state": {...}}` (else it failed). When the window is over (a record of a later
  window was read, or the source was read to its end after the window's end) a final invoke
  with no records and `isFinalInvokeForWindow: true` gets the state; it is retried until it
  succeeds, and only then are the window's records checkpointed, so a crash re-runs the whole
  window with a fresh state. A state over 1 MB ends the window early (a final invoke with
  `isWindowTerminatedEarly: true`); the window then goes on with a fresh state. Windows use one
  lane whatever the ParallelizationFactor: the state is per shard.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lamina import untrusted_json
from lamina.events.sources import stream_events
from lamina.events.sources.api import (
    Invoker,
    MappingStats,
    Outcome,
    SourceUnavailable,
    StreamRecord,
    StreamSource,
)
from lamina.filter_criteria import FilterSet, compile_filters
from lamina.limits import SYNC_PAYLOAD_MAX_BYTES
from lamina.mappings import RESULT_OK, EventSourceMapping, problem

#: Lambda ends a tumbling window early when its state grows past this
MAX_WINDOW_STATE_BYTES = 1024 * 1024
#: room kept in the 6 MB payload for the event's own fields (and a window's state)
_EVENT_OVERHEAD = 1024


@dataclass(frozen=True)
class Pacing:
    """How long the rules wait between tries; each is (first, most) seconds, doubling.
    Tests shorten them."""

    function_error: tuple[float, float] = (0.2, 10.0)
    throttle: tuple[float, float] = (0.1, 10.0)
    destination: tuple[float, float] = (1.0, 30.0)
    #: the longest a read waits for records (Lambda polls a shard once a second)
    poll_s: float = 1.0
    #: how often `source.lag()` is asked
    lag_every_s: float = 5.0


async def deliver_stream(
    mapping: EventSourceMapping,
    source: StreamSource,
    invoker: Invoker,
    report: Callable[[str], None],
    stats: MappingStats,
    *,
    pacing: Pacing | None = None,
) -> None:
    """Deliver `source` (already opened) to the mapping's function until cancelled. Raises
    `SourceUnavailable` when the source fails (reading, checkpointing, asking its lag); the
    records not yet checkpointed are then read again after the source is reopened."""
    await _Delivery(mapping, source, invoker, report, stats, pacing or Pacing()).run()


@dataclass
class _Item:
    """A record on its way: its place in read order and its size in the event."""

    ordinal: int
    record: StreamRecord
    size: int


@dataclass
class _Lane:
    items: deque[_Item] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, item: _Item) -> None:
        self.items.append(item)
        self.wake.set()


class _Checkpoints:
    """Records in read order, each done or not; checkpoints the done prefix, in order."""

    def __init__(self, source: StreamSource) -> None:
        self._source = source
        self._pending: deque[list[Any]] = deque()  # [record, done]
        self._first = 0  # ordinal of _pending[0]
        self._lock = asyncio.Lock()

    def add(self, record: StreamRecord) -> int:
        self._pending.append([record, False])
        return self._first + len(self._pending) - 1

    def slim(self, ordinals: Sequence[int]) -> None:
        """Keep only what a checkpoint needs of these (a tumbling window holds its records
        until its end): not their data."""
        for o in ordinals:
            entry = self._pending[o - self._first]
            r: StreamRecord = entry[0]
            entry[0] = StreamRecord(r.sequence, r.key, b"", r.arrived_at, {}, r.token)

    async def done(self, ordinals: Sequence[int]) -> None:
        # marking and popping happen without an await in between, so ordinals stay valid
        for o in ordinals:
            self._pending[o - self._first][1] = True
        async with self._lock:  # checkpoints reach the source one at a time, in order
            ready: list[StreamRecord] = []
            while self._pending and self._pending[0][1]:
                ready.append(self._pending.popleft()[0])
                self._first += 1
            if ready:
                await self._source.checkpoint(ready)


@dataclass
class _Window:
    """The open tumbling window of the (single) lane."""

    bounds: tuple[float, float]
    state: dict[str, Any] = field(default_factory=dict)
    held: list[int] = field(default_factory=list)  # ordinals processed, checkpointed at the end


class _Failed(Exception):
    """The function's response fails the whole batch (invalid identifiers, no state)."""


class _Delivery:
    def __init__(
        self,
        mapping: EventSourceMapping,
        source: StreamSource,
        invoker: Invoker,
        report: Callable[[str], None],
        stats: MappingStats,
        pacing: Pacing,
    ) -> None:
        self.m = mapping
        self.source = source
        self.invoker = invoker
        self.report = report
        self.stats = stats
        self.pacing = pacing
        self.filters: FilterSet = compile_filters(mapping.filters)
        self.windowed = mapping.tumbling_window_s > 0
        n = 1 if self.windowed else max(1, mapping.parallelization_factor)
        self.lanes = [_Lane() for _ in range(n)]
        self.checkpoints = _Checkpoints(source)
        self.batch_size = max(1, mapping.batch_size)
        # read ahead at most this many records (and bytes) not yet through the rules: a batch
        # for each lane and one more
        self.cap = self.batch_size * (n + 1)
        self.byte_cap = SYNC_PAYLOAD_MAX_BYTES * (n + 1)
        self.outstanding = 0
        self.outstanding_bytes = 0
        self.room = asyncio.Event()
        self.caught_up_at = 0.0  # wall time of the last read that found nothing new
        self.throttle_delay = pacing.throttle[0]

    async def run(self) -> None:
        tasks = [asyncio.create_task(self._read_loop())]
        for lane in self.lanes:
            loop = self._window_loop(lane) if self.windowed else self._lane_loop(lane)
            tasks.append(asyncio.create_task(loop))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # reading

    async def _read_loop(self) -> None:
        last_lag = 0.0
        while True:
            while self.outstanding >= self.cap or self.outstanding_bytes >= self.byte_cap:
                self.room.clear()
                await self.room.wait()
            records = await self.source.read(self.cap - self.outstanding, self.pacing.poll_s)
            now = time.time()
            if now - last_lag >= self.pacing.lag_every_s:
                self.stats.lag = await self.source.lag()
                last_lag = now
            if not records:
                self.caught_up_at = now
                for lane in self.lanes:
                    lane.wake.set()  # a window may be over
                continue
            self.stats.records_received += len(records)
            filtered: list[int] = []
            for r in records:
                ordinal = self.checkpoints.add(r)
                if not self._accepts(r):
                    filtered.append(ordinal)
                    continue
                size = len(json.dumps(r.record, separators=(",", ":"))) + 1
                self.outstanding += 1
                self.outstanding_bytes += size
                self._lane_of(r.key).push(_Item(ordinal, r, size))
            if filtered:
                self.stats.records_filtered += len(filtered)
                await self.checkpoints.done(filtered)

    def _accepts(self, r: StreamRecord) -> bool:
        if not self.filters.patterns:
            return True
        fields = {k: v for k, v in r.record.get("kinesis", {}).items() if k != "data"}
        return self.filters.accepts(fields, "data", r.data)

    def _lane_of(self, key: str) -> _Lane:
        if len(self.lanes) == 1:
            return self.lanes[0]
        # a stable hash: the same key always lands in the same lane
        return self.lanes[zlib.crc32(key.encode("utf-8", "surrogatepass")) % len(self.lanes)]

    async def _next_batch(
        self, lane: _Lane, budget: int, window: _Window | None = None
    ) -> list[_Item]:
        """The lane's next batch: waits for a first record, then up to the batching window
        for more, up to BatchSize and the payload budget (and one tumbling window)."""
        while not lane.items:
            lane.wake.clear()
            await lane.wake.wait()
        deadline = time.monotonic() + self.m.batching_window
        batch: list[_Item] = []
        size = 0
        while True:
            while lane.items and len(batch) < self.batch_size:
                item = lane.items[0]
                if window is not None and self._window_of(item) != window.bounds:
                    return batch
                if batch and size + item.size > budget:
                    return batch
                batch.append(lane.items.popleft())
                size += item.size
            if len(batch) >= self.batch_size:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return batch
            lane.wake.clear()
            try:
                await asyncio.wait_for(lane.wake.wait(), remaining)
            except TimeoutError:
                return batch

    # plain delivery

    async def _lane_loop(self, lane: _Lane) -> None:
        budget = SYNC_PAYLOAD_MAX_BYTES - _EVENT_OVERHEAD
        while True:
            batch = await self._next_batch(lane, budget)
            await self._deliver(batch, None)

    async def _finish(self, items: Sequence[_Item], hold: bool = False) -> None:
        """These went through the rules; checkpoint them unless a window holds them."""
        self.outstanding -= len(items)
        self.outstanding_bytes -= sum(i.size for i in items)
        self.room.set()
        if hold:
            self.checkpoints.slim([i.ordinal for i in items])
        else:
            await self.checkpoints.done([i.ordinal for i in items])

    async def _deliver(self, items: list[_Item], window: _Window | None) -> None:
        """Invoke the function with `items` until each succeeded or was discarded, finishing
        each part as soon as it is (a window holds its parts for the window's end)."""
        hold = window is not None
        # (batch, attempts, invokes): bisected halves inherit the counts of their batch
        todo: deque[tuple[list[_Item], int, int]] = deque([(items, 0, 0)])
        while todo:
            batch, attempts, invokes = todo.popleft()
            last: Outcome | None = None
            delay = self.pacing.function_error[0]
            while batch:
                batch = await self._drop_expired(batch, invokes, last, hold)
                if not batch:
                    break
                outcome = await self._invoke(self._event(batch, window))
                if outcome is None:
                    continue  # throttled: backed off; records may have aged meanwhile
                invokes += 1
                last = outcome
                failed_at = 0
                if outcome.status == "ok":
                    try:
                        reported = self._failed_at(outcome, batch, window)
                    except _Failed:
                        reported = 0
                    if reported is None:
                        self._succeeded(batch)
                        await self._finish(batch, hold)
                        break
                    failed_at = reported
                    if failed_at > 0:
                        # the records before the lowest failed one are done
                        await self._finish(batch[:failed_at], hold)
                        batch = batch[failed_at:]
                        if self.m.bisect_on_error:
                            # split at the reported record: not a retry (as AWS documents)
                            continue
                else:
                    self.stats.function_errors += 1
                self.report(problem("Function call failed"))
                if failed_at == 0 and self.m.bisect_on_error and len(batch) > 1:
                    half = len(batch) // 2
                    todo.appendleft((batch[half:], attempts, invokes))
                    batch = batch[:half]
                    continue
                attempts += 1
                if 0 <= self.m.maximum_retry_attempts < attempts:
                    await self._discard(batch, stream_events.RETRIES_EXHAUSTED, invokes, last)
                    await self._finish(batch, hold)
                    break
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.pacing.function_error[1])

    def _event(self, batch: Sequence[_Item], window: _Window | None) -> dict[str, Any]:
        records = [i.record for i in batch]
        if window is None:
            return stream_events.batch_event(records)
        return stream_events.window_event(
            self.m,
            self.source.shard_id,
            records,
            window.bounds,
            window.state,
            final=False,
            terminated_early=False,
        )

    async def _invoke(self, event: dict[str, Any]) -> Outcome | None:
        """One invoke; None if it did not reach the function (after backing off)."""
        outcome = await self.invoker.invoke(self.m, event)
        if outcome.status in ("ok", "function_error"):
            self.stats.batches += 1
            self.throttle_delay = self.pacing.throttle[0]
            return outcome
        if outcome.status == "throttled":
            self.stats.throttles += 1
        else:
            self.report(
                problem(f"The function cannot be invoked ({outcome.error_type or outcome.status})")
            )
        # jitter keeps the lanes of a throttled mapping from retrying in step
        await asyncio.sleep(self.throttle_delay * (0.5 + random.random() / 2))
        self.throttle_delay = min(self.throttle_delay * 2, self.pacing.throttle[1])
        return None

    def _failed_at(
        self, outcome: Outcome, batch: Sequence[_Item], window: _Window | None
    ) -> int | None:
        """Where the batch failed by the function's response: None (all succeeded) or the
        index of the first record to retry. Raises `_Failed` when the response fails it all.
        Sets the window's state from the response."""
        strict = window is not None or self.m.report_batch_item_failures
        response = _parse(outcome.payload, strict)
        if window is not None:
            state = response.get("state") if isinstance(response, dict) else None
            if not isinstance(state, dict):
                raise _Failed  # Lambda: a window invoke must return a state
            window.state = state
        if not self.m.report_batch_item_failures or not isinstance(response, dict):
            return None
        failures = response.get("batchItemFailures")
        if not failures:
            return None
        if not isinstance(failures, list):
            raise _Failed
        index = {i.record.sequence: n for n, i in enumerate(batch)}
        lowest = len(batch)
        for f in failures:
            ident = f.get("itemIdentifier") if isinstance(f, dict) else None
            if not isinstance(ident, str) or ident not in index:
                raise _Failed
            lowest = min(lowest, index[ident])
        return lowest

    def _succeeded(self, batch: Sequence[_Item]) -> None:
        self.report(RESULT_OK)
        # IteratorAge: how old the batch's last record was when it was done
        self.stats.backlog_age_s = max(0.0, time.time() - batch[-1].record.arrived_at)
        if self.stats.on_iterator_age is not None:
            self.stats.on_iterator_age(self.stats.backlog_age_s * 1000)

    async def _drop_expired(
        self, batch: list[_Item], invokes: int, last: Outcome | None, hold: bool
    ) -> list[_Item]:
        limit = self.m.maximum_record_age_s
        if limit < 0:
            return batch
        oldest_ok = time.time() - limit
        expired = [i for i in batch if i.record.arrived_at < oldest_ok]
        if not expired:
            return batch
        await self._discard(expired, stream_events.RECORD_AGE_EXCEEDED, invokes, last)
        await self._finish(expired, hold)
        return [i for i in batch if i.record.arrived_at >= oldest_ok]

    async def _discard(
        self, items: Sequence[_Item], condition: str, invokes: int, last: Outcome | None
    ) -> None:
        """Give up on these: to the on-failure destination if there is one (until it takes
        them), else skipped. They are checkpointed with their batch."""
        if not self.m.on_failure:
            return
        record = stream_events.failure_record(
            self.m, self.source.shard_id, [i.record for i in items], condition, invokes, last
        )
        delay = self.pacing.destination[0]
        while True:
            try:
                await self.invoker.send_to_failure_destination(self.m, record)
                break
            except SourceUnavailable as e:
                if self.stats.on_delivery_failure is not None:
                    self.stats.on_delivery_failure()
                self.report(problem(f"The on-failure destination cannot be reached: {e}"))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.pacing.destination[1])
        self.stats.records_to_failure_destination += len(items)

    # tumbling windows

    def _window_of(self, item: _Item) -> tuple[float, float]:
        w = self.m.tumbling_window_s
        start = (int(item.record.arrived_at) // w) * w
        return (float(start), float(start + w))

    async def _window_loop(self, lane: _Lane) -> None:
        window: _Window | None = None
        while True:
            if window is not None and (
                (lane.items and self._window_of(lane.items[0]) != window.bounds)
                or (not lane.items and self.caught_up_at >= window.bounds[1])
            ):
                await self._close_window(window, early=False)
                window = None
                continue
            if not lane.items:
                lane.wake.clear()
                await lane.wake.wait()
                continue
            if window is None:
                window = _Window(self._window_of(lane.items[0]))
            budget = SYNC_PAYLOAD_MAX_BYTES - _EVENT_OVERHEAD - len(json.dumps(window.state))
            batch = await self._next_batch(lane, max(budget, 1), window)
            if not batch:
                continue
            await self._deliver(batch, window)
            window.held.extend(i.ordinal for i in batch)
            if len(json.dumps(window.state)) > MAX_WINDOW_STATE_BYTES:
                await self._close_window(window, early=True)
                window = _Window(window.bounds)

    async def _close_window(self, window: _Window, early: bool) -> None:
        """The final invoke, retried until it succeeds; then the window's records are
        checkpointed."""
        event = stream_events.window_event(
            self.m,
            self.source.shard_id,
            [],
            window.bounds,
            window.state,
            final=True,
            terminated_early=early,
        )
        delay = self.pacing.function_error[0]
        while True:
            outcome = await self._invoke(event)
            if outcome is None:
                continue
            if outcome.status == "ok":
                self.report(RESULT_OK)
                break
            self.stats.function_errors += 1
            self.report(problem("Function call failed"))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.pacing.function_error[1])
        await self.checkpoints.done(window.held)


def _parse(payload: bytes, strict: bool) -> Any:
    """The function's response (an empty one is null). A response that is not JSON fails
    the batch when the response matters (`strict`: batch item failures, window state)."""
    if not payload.strip():
        return None
    try:
        return untrusted_json.loads(payload.decode("utf-8"))
    except (ValueError, TypeError, RecursionError, UnicodeDecodeError):
        if strict:
            raise _Failed from None
        return None
