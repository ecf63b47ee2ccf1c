"""Lambda's delivery rules for queues (SQS, Amazon MQ for RabbitMQ), written once for every
`QueueSource`.

One mapping's delivery is a few *pollers*, each a task that gathers a batch, invokes the
function with it and settles it, and a supervisor that scales them:

- **Batching**: a poller long-polls for the first messages, then, with a
  `MaximumBatchingWindowInSeconds`, keeps receiving until the batch holds `BatchSize`
  messages, the window (counted from the first message) has passed, or the next message would
  take the event over Lambda's 6 MB synchronous payload (that message starts the next batch).
  Without a window the batch is whatever the first receive brought. With a window, pollers
  gather in turn (as many at once as keep filling their batches), so that messages trickling
  in fill one batch rather than one partial batch per poller.
- **Filtering** (`FilterCriteria`): messages no filter accepts are acknowledged at once and
  never reach the function, as Lambda deletes them. The payload the filters see is `body`
  (SQS) or `data` (RabbitMQ), matched as JSON when it is JSON.
- **Settling**: the function succeeded → every message is acknowledged; it failed (error,
  timeout) → every message is released to the broker, whose redelivery and dead-lettering
  (SQS's redrive policy, RabbitMQ's dead-letter exchange) apply as on Lambda. With
  `ReportBatchItemFailures` the messages the response names are released and the others
  acknowledged; a null or empty response, or an empty or null `batchItemFailures`, means all
  succeeded; a response that is not valid fails the whole batch.
- **Throttles** (no concurrency, or the function cannot run now): the *same* batch is invoked
  again after a back-off from 0.1 s doubling to 5 s, however long it takes; it is never
  released or counted as a failure, so a throttled message never reaches a dead-letter queue.
- **Scaling**: five pollers to start (Lambda processes five batches at once at first); while
  messages wait and no poller comes back empty-handed, up to five more a second (Lambda's 300
  a minute), up to `ScalingConfig.MaximumConcurrency` or, without one, the account's
  concurrency limit (RabbitMQ: one batch at a time, as Lambda's Amazon MQ source). A poller
  whose receive comes back empty retires, down to two (five with a `MaximumConcurrency`, as
  Lambda keeps five then). A throttle shrinks the target to what was running without it.

Nothing is acknowledged before the function succeeded for it: a poller cancelled mid-batch
(server stopping, mapping updated) leaves its messages leased, and the source's `close()`
hands them back. At least once, as Lambda's.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from lamina import limits, untrusted_json
from lamina.errors import InvalidParameterValueError
from lamina.events.sources.api import (
    Invoker,
    MappingStats,
    Message,
    Outcome,
    QueueSource,
    SourceUnavailable,
)
from lamina.filter_criteria import FilterSet, compile_filters
from lamina.mappings import RESULT_NONE, RESULT_OK, EventSourceMapping, SourceKind, problem

#: pollers a mapping starts with (Lambda: five batches at once)
START_POLLERS = 5
#: pollers an idle mapping keeps without a MaximumConcurrency (Lambda: as few as two)
IDLE_POLLERS = 2
#: pollers added at most per scaling step, and the step (Lambda: up to 300 a minute)
SCALE_STEP = 5
SCALE_EVERY_S = 1.0
#: a receive waits this long for a first message (SQS's longest long poll)
POLL_WAIT_S = 20.0
#: back-off of a throttled batch: from this, doubling, up to the next
THROTTLE_FIRST_S = 0.1
THROTTLE_MAX_S = 5.0
#: after a throttle the pollers do not grow for this long
THROTTLE_HOLD_S = 2.0
#: nothing received for this long (and nothing in flight): `No records processed`
QUIET_S = 1.0
#: a receive that came back empty sooner than this is followed by a pause this long
_SPIN_S = 0.05
#: what an event adds around its records (keys, the queue names of an `aws:rmq` event)
_ENVELOPE_BYTES = 4096

#: the record field FilterCriteria's payload pattern is matched against, per kind
PAYLOAD_KEY = {SourceKind.SQS: "body", SourceKind.RABBITMQ: "data"}
#: batches at once of a mapping without `MaximumConcurrency`, for kinds Lambda limits: one for
#: Amazon MQ ("for RabbitMQ, the number of concurrent execution environments is limited to 1
#: for each Amazon MQ event source mapping"). The RabbitMQ source sizes its prefetch for it.
DEFAULT_CONCURRENCY = {SourceKind.RABBITMQ: 1}


async def deliver_queue(
    mapping: EventSourceMapping,
    source: QueueSource,
    invoker: Invoker,
    report: Callable[[str], None],
    stats: MappingStats,
    *,
    limit: int = 1000,
    stop: asyncio.Event | None = None,
) -> None:
    """Deliver the messages of an open `source` to `mapping`'s function until cancelled, or,
    once `stop` is set, until the batches in flight are settled (the others' leases are left
    for `source.close()`). Raises `SourceUnavailable` when the source fails. `limit` is the
    account's concurrency limit, which bounds the pollers of a mapping without
    `MaximumConcurrency`; `report` gets `LastProcessingResult` values when they change."""
    await _Delivery(mapping, source, invoker, report, stats, limit, stop).run()


class _Delivery:
    """One mapping's pollers and what they share. One event loop: no locks; every decision
    between two awaits is atomic."""

    def __init__(
        self,
        mapping: EventSourceMapping,
        source: QueueSource,
        invoker: Invoker,
        report: Callable[[str], None],
        stats: MappingStats,
        limit: int,
        stop: asyncio.Event | None,
    ) -> None:
        self.mapping = mapping
        self.source = source
        self.invoker = invoker
        self._report_to = report
        self.stats = stats
        self.stop = stop
        try:
            self.filters: FilterSet = compile_filters(mapping.filters)
        except InvalidParameterValueError as e:  # validated by control: a stored bad one
            raise SourceUnavailable(f"FilterCriteria: {e}") from None
        self.payload_key = PAYLOAD_KEY.get(mapping.kind, "body")
        default = DEFAULT_CONCURRENCY.get(mapping.kind, limit)
        self.cap = max(1, min(mapping.maximum_concurrency or default, limit))
        floor = START_POLLERS if mapping.maximum_concurrency is not None else IDLE_POLLERS
        self.floor = min(floor, self.cap)
        self.target = min(START_POLLERS, self.cap)
        self.pollers: set[asyncio.Task[None]] = set()
        #: pollers between receiving a batch and settling it
        self.invoking: set[asyncio.Task[None]] = set()
        self.live = 0
        self.stopping = False
        #: With a batching window, pollers gathering at once split what arrives between
        #: them: each waits out the window with part of a batch, and a broker that hands out
        #: a bounded number of unacknowledged messages (RabbitMQ's prefetch) is soon held up
        #: by partial batches. So only `gather_limit` pollers gather at once: it grows by
        #: one with each batch that fills up (a backlog: more at once do no harm) and halves
        #: with each that the window ends (traffic a single gatherer keeps up with).
        self.gather_limit = 1
        self.gathering = 0
        self.turns = asyncio.Condition()
        #: since the last scaling step: a receive came back full / came back empty
        self.full = False
        self.empty = False
        self.throttled_at = -math.inf
        self.last_activity = time.monotonic()
        self._result: str | None = None

    # -- the supervisor --------------------------------------------------------------------

    async def run(self) -> None:
        waiter = asyncio.ensure_future(self.stop.wait()) if self.stop is not None else None
        try:
            while True:
                while self.live < self.target:
                    self._spawn()
                watched: set[asyncio.Future[Any]] = set(self.pollers)
                if waiter is not None:
                    watched.add(waiter)
                done, _ = await asyncio.wait(
                    watched, timeout=SCALE_EVERY_S, return_when=asyncio.FIRST_COMPLETED
                )
                for task in done:
                    if task is waiter:
                        continue
                    self.pollers.discard(task)
                    error = task.exception()
                    if error is not None:
                        raise error
                if waiter is not None and waiter.done():
                    await self._drain()
                    return
                await self._scale()
        finally:
            if waiter is not None:
                waiter.cancel()
            for task in self.pollers:
                task.cancel()
            await asyncio.gather(*self.pollers, return_exceptions=True)
            if waiter is not None:
                await asyncio.gather(waiter, return_exceptions=True)
            self.stats.pollers = 0

    def _spawn(self) -> None:
        self.live += 1
        self.stats.pollers = self.live
        task = asyncio.get_running_loop().create_task(self._poll())
        self.pollers.add(task)

    async def _drain(self) -> None:
        """Stop receiving; let the batches in flight be settled."""
        self.stopping = True
        for task in self.pollers - self.invoking:
            task.cancel()
        results = await asyncio.gather(*self.pollers, return_exceptions=True)
        self.pollers.clear()
        for result in results:
            if isinstance(result, SourceUnavailable):
                raise result

    async def _scale(self) -> None:
        backlog = await self.source.backlog()
        self.stats.lag = backlog
        waiting = backlog > 0 if backlog is not None else self.full
        calm = time.monotonic() - self.throttled_at >= THROTTLE_HOLD_S
        if waiting and not self.empty and calm and self.target < self.cap:
            self.target = min(self.cap, self.target + SCALE_STEP)
        self.full = self.empty = False

    def _throttled(self) -> None:
        """Concurrency ran out: keep as many pollers as were invoking besides this one."""
        self.throttled_at = time.monotonic()
        self.target = max(self.floor, min(self.target, len(self.invoking) - 1))

    # -- one poller --------------------------------------------------------------------------

    async def _poll(self) -> None:
        me = asyncio.current_task()
        assert me is not None
        carry: list[Message] = []
        try:
            while not self.stopping:
                if self.live > self.target and not carry:
                    return  # retire (the count drops in `finally`, before any other check)
                batch, carry, received = await self._gather_in_turn(carry)
                if not batch:
                    if not received:
                        self._idle()
                    continue
                self.invoking.add(me)
                try:
                    await self._deliver(batch)
                finally:
                    self.invoking.discard(me)
        finally:
            self.live -= 1
            self.stats.pollers = self.live

    def _idle(self) -> None:
        """A receive came back empty: one poller fewer, and `No records processed` once
        nothing has come for a while."""
        self.empty = True
        if self.target > self.floor:
            self.target -= 1
        if not self.invoking and time.monotonic() - self.last_activity >= QUIET_S:
            self._report(RESULT_NONE)

    async def _gather_in_turn(
        self, carry: list[Message]
    ) -> tuple[list[Message], list[Message], bool]:
        """`_gather`, with a batching window only as many pollers at once as fill their
        batches: see `gather_limit`."""
        if self.mapping.batching_window <= 0:
            return await self._gather(carry)
        async with self.turns:
            await self.turns.wait_for(lambda: self.gathering < self.gather_limit)
            self.gathering += 1
        try:
            batch, carry, received = await self._gather(carry)
        finally:
            async with self.turns:
                self.gathering -= 1
                self.turns.notify_all()
        if carry or len(batch) >= self.mapping.batch_size:
            self.gather_limit = min(self.gather_limit + 1, self.cap)
        elif batch:  # the window ran out before the batch was full
            self.gather_limit = max(1, self.gather_limit // 2)
        return batch, carry, received

    async def _gather(self, carry: list[Message]) -> tuple[list[Message], list[Message], bool]:
        """(the batch to invoke with, messages received for the next one, whether anything
        was received at all: filtered messages count)."""
        size_cap = limits.SYNC_PAYLOAD_MAX_BYTES - _ENVELOPE_BYTES
        batch_size = self.mapping.batch_size
        window = self.mapping.batching_window
        batch: list[Message] = []
        size = 0
        pending, received = carry, bool(carry)
        if not pending:
            pending, received = await self._receive(batch_size, POLL_WAIT_S)
        deadline: float | None = None
        while True:
            for at, message in enumerate(pending):
                n = _record_size(message)
                if batch and size + n > size_cap:
                    return batch, pending[at:], True
                batch.append(message)
                size += n
            if len(batch) >= batch_size or window <= 0 or not received:
                return batch, [], received
            now = time.monotonic()
            if deadline is None:
                deadline = now + window
            if now >= deadline:
                return batch, [], received
            pending, _ = await self._receive(batch_size - len(batch), deadline - now)

    async def _receive(self, max_messages: int, wait_s: float) -> tuple[list[Message], bool]:
        """Receive, count, and acknowledge what the filters drop: (the rest, whether anything
        came)."""
        started = time.monotonic()
        got = await self.source.receive(max_messages, wait_s)
        if not got:
            if time.monotonic() - started < _SPIN_S:
                # A source that answers at once rather than long-polling: do not spin.
                await asyncio.sleep(_SPIN_S)
            return [], False
        self.last_activity = time.monotonic()
        self.stats.records_received += len(got)
        if len(got) >= max_messages:
            self.full = True
        if not self.filters.patterns:
            return got, True
        kept: list[Message] = []
        dropped: list[Message] = []
        for message in got:
            accepted = self.filters.accepts(message.record, self.payload_key, message.body)
            (kept if accepted else dropped).append(message)
        if dropped:
            self.stats.records_filtered += len(dropped)
            await self.source.acknowledge(dropped)
            self._report(RESULT_OK)
        return kept, True

    async def _deliver(self, batch: list[Message]) -> None:
        """Invoke with one batch, retrying throttles, and settle it."""
        now = time.time()
        oldest = min((m.sent_at or m.received_at) for m in batch)
        self.stats.backlog_age_s = max(0.0, now - oldest)
        event = self.source.event(batch)
        delay = 0.0
        while True:
            outcome = await self.invoker.invoke(self.mapping, event)
            if outcome.status not in ("throttled", "unavailable"):
                break
            self.stats.throttles += 1
            self._throttled()
            if outcome.status == "unavailable":
                what = f" ({outcome.error_type})" if outcome.error_type else ""
                self._report(problem(f"the function cannot be invoked now{what}"))
            if self.stopping:
                return  # the batch stays leased: `close()` hands it back
            delay = min(max(delay * 2, THROTTLE_FIRST_S), THROTTLE_MAX_S)
            await asyncio.sleep(delay)
        self.stats.batches += 1
        self.last_activity = time.monotonic()
        failed = self._failed(outcome, batch)
        if failed is None:
            self.stats.function_errors += 1
            await self.source.release(batch)
        else:
            done = [m for m in batch if m.id not in failed]
            if done:
                await self.source.acknowledge(done)
            if failed:
                await self.source.release([m for m in batch if m.id in failed])
        self._report(RESULT_OK)

    def _failed(self, outcome: Outcome, batch: Sequence[Message]) -> set[str] | None:
        """The ids of the batch's messages that failed; None: all of them."""
        if outcome.status != "ok":
            return None
        if not self.mapping.report_batch_item_failures:
            return set()
        response = _response(outcome.payload)
        if response is _INVALID:
            return None
        if response is None or response == {}:
            return set()
        if not isinstance(response, dict):
            return None
        if response.get("batchItemFailures") in (None, []):
            return set()
        return self.source.failed_ids(response, batch)

    def _report(self, result: str) -> None:
        if result != self._result:
            self._result = result
            self._report_to(result)


_INVALID = object()


def _response(payload: bytes) -> Any:
    """The function's response as JSON (None for an empty one), or `_INVALID`."""
    if not payload.strip():
        return None
    try:
        return untrusted_json.loads(payload)
    except ValueError:
        return _INVALID


def _record_size(message: Message) -> int:
    """What the message's record adds to the event's JSON (its separator included)."""
    return len(json.dumps(message.record, separators=(",", ":")).encode()) + 1
