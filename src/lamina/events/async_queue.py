"""Asynchronous invocation (InvocationType=Event): accept durably, run, retry, report.

An event is stored (`store/event_queue.py`) before Invoke answers 202, and leaves the store
only once its outcome is settled: the function succeeded, or it was given up and whatever
that leads to (destination records, the dead letter) is stored in the same transaction. A
crash at any point re-runs the events still stored: delivery is at least once, as Lambda's.

Events run through the same scheduler as synchronous invokes, so reserved concurrency,
provisioned environments and memory capacity apply unchanged. Each function has a lane that
runs its due events with a window of concurrent attempts. The window shrinks to what was
running when an attempt is throttled and grows back to a few at once. Past that, while
events wait, it grows by a quarter every tenth of a second as long as the host has CPU to
spare — up to as many environments as it takes to use the host's CPUs (each gets
MemorySize/1,769 of one), or without bound while no attempt ends for a while (the function
is slow) — and shrinks by a quarter while the host's CPU is busy: a backlog of slow
functions scales out as Lambda's would, while a backlog of quick ones is not spread over
more environments than the host has CPUs to run them. A throttled event is not an attempt: it waits
and runs again, backing off from 1 s to 5 min while nothing of the function can run, as
Lambda retries throttles, until it is older than its maximum age.

A function error or timeout is retried `MaximumRetryAttempts` times (default 2) after 1 and
then 2 minutes (Lambda's back-off); `--retry-base-delay` scales every back-off here, so tests
run in fractions of a second. An event older than `MaximumEventAgeInSeconds` (default 6 h)
when it is due is dropped, with a record of why.

A destination or dead-letter target is a function, validated when configured; one deleted
since (or whose version or alias was) cannot take the record when the event is settled: that
delivery fails, as Lambda's invoke of a missing target does, and is counted in CloudWatch's
DestinationDeliveryFailures or DeadLetterErrors of the event's function.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
import itertools
import json
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lamina import ids, limits, untrusted_json
from lamina.arns import FunctionRef, parse_function_ref
from lamina.control import FunctionService
from lamina.errors import LaminaError, ResourceNotFoundError, TooManyRequestsError
from lamina.models import (
    LATEST,
    EventInvokeConfig,
    FunctionConfig,
    FunctionState,
    InvokeRequest,
    InvokeResult,
)
from lamina.observability import Metrics
from lamina.observability.cw_metrics import function_dimensions
from lamina.scheduler import Scheduler
from lamina.settings import Settings
from lamina.store.event_queue import (
    EVENT_AGE_EXCEEDED,
    FUNCTION_NOT_FOUND,
    RECURSIVE_LOOP,
    RETRIES_EXHAUSTED,
    DroppedEvent,
    EventStore,
    QueuedEvent,
)

log = logging.getLogger(__name__)

#: starts a durable execution for an invocation (`events.durable.DurableRunner.start_for`)
DurableStart = Callable[[FunctionConfig, InvokeRequest], Awaitable[InvokeResult]]

#: payload bytes of queued events held in memory; past this, payloads are read back when due
_HOLD_BYTES = 64 * 1024 * 1024
#: concurrent attempts a lane starts with, and grows back to whatever its attempts take
_WINDOW_START = 4
#: a full window with events waiting grows when no attempt has ended for this long
#: (seconds), while the host's CPU is less busy than `_CPU_BUSY` (a function slowed by a
#: busy CPU would only get slower with more environments)
_SATURATED_S = 0.02
_CPU_BUSY = 0.9
#: the window is resized past `_WINDOW_START` at most this often (seconds)
_RESIZE_EVERY_S = 0.1
#: Lambda gives a function one vCPU at 1,769 MB of memory, and a share in proportion below
_MB_PER_CPU = 1769
#: after a throttle, the window does not grow for this long (seconds)
_THROTTLE_HOLD_S = 1.0
#: Lambda's back-off for throttled events: from 1 s, doubling, up to 5 minutes
_THROTTLE_FIRST_S = 1.0
_THROTTLE_MAX_S = 300.0
#: the shortest back-off however small the scale (a lane would spin otherwise)
_BACKOFF_FLOOR_S = 0.01
#: Lambda's waits before the second and the third attempt are 1 and 2 minutes
_RETRY_UNIT_S = 60.0


@dataclass
class _Lane:
    """The queued events of one function and the attempts running for it."""

    name: str
    window: int
    ready: list[tuple[float, int, QueuedEvent]] = field(default_factory=list)
    #: running attempts' events, with when each started (monotonic seconds)
    running: dict[QueuedEvent, float] = field(default_factory=dict)
    paused_until: float = 0.0
    backoff: float = 0.0
    #: when `_scale_out` last looked at the window (monotonic seconds)
    resized: float = 0.0
    #: when an attempt was last throttled (monotonic seconds): the window then stays put a
    #: while rather than probe the limit again on every completion
    throttled: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: until when the lane's task sleeps unless woken (epoch seconds; inf: until an attempt
    #: ends): a new event due later than this needs no wake-up
    sleeping_until: float = 0.0
    task: asyncio.Task[None] | None = None

    def oldest(self) -> float | None:
        times = [e.enqueued_at for _, _, e in self.ready]
        times.extend(e.enqueued_at for e in self.running)
        return min(times, default=None)


@dataclass
class _Attempt:
    """What the last attempt of an event gave (for its invocation record)."""

    result: InvokeResult | None
    status: int


#: the CloudWatch metric each outcome counts in (AsyncEventsDropped: events that never ran
#: successfully, whether or not a destination or dead-letter queue then got them)
_CLOUDWATCH = {
    "accepted": "AsyncEventsReceived",
    "expired": "AsyncEventsDropped",
    "failed": "AsyncEventsDropped",
    "dropped": "AsyncEventsDropped",
}


class AsyncQueue:
    def __init__(
        self,
        settings: Settings,
        store: EventStore,
        functions: FunctionService,
        scheduler: Scheduler,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._functions = functions
        self._scheduler = scheduler
        #: how an event of a durable function starts its execution (`events.durable`); None:
        #: invoked like any other function
        self.start_durable: DurableStart | None = None
        self._metrics = metrics
        self._clock = clock
        #: every back-off is Lambda's times this (`--retry-base-delay` / 60 s)
        self._scale = settings.retry_base_delay_s / _RETRY_UNIT_S
        self._lanes: dict[str, _Lane] = {}
        self._seq = itertools.count()
        self._held = 0
        self._last: dict[str, _Attempt] = {}
        self._attempts: set[asyncio.Task[None]] = set()
        self._closing = False
        self._cpu = _HostCpu()
        #: functions shown in the gauges at the last scrape
        self._reported: set[str] = set()
        self._counters: dict[tuple[str, str], Any] = {}
        #: totals since start-up, by outcome (the metrics have them by function too)
        self.counts: collections.Counter[str] = collections.Counter()
        metrics.on_scrape(self._refresh_gauges)

    async def start(self) -> None:
        """Take up every event a previous run left stored."""
        for event in await self._store.load(_HOLD_BYTES):
            if event.payload is not None:
                self._held += len(event.payload)
            self._push(event)

    def adopt(self, events: Sequence[QueuedEvent]) -> None:
        """Take up events moved here from a node that died (`cluster.adoption`; already
        stored under this node's name), as `start` takes up those a previous run left."""
        for event in events:
            if event.payload is not None:
                self._hold(event)
            self._push(event)

    async def accept(
        self,
        name: str,
        qualifier: str | None,
        payload: bytes,
        request_id: str,
        trace: str = "",
    ) -> None:
        """Store one event durably and queue it. Raises OSError if it could not be stored
        (then it was not accepted). `trace` is the caller's X-Amzn-Trace-Id, if any: its
        Lineage is counted when the event runs (recursive loop detection)."""
        event = QueuedEvent(request_id, name, qualifier, payload, self._clock(), trace=trace)
        await self._store.add([event])
        self._count(name, "accepted")
        self._hold(event)
        self._push(event)

    def nudge(self, name: str) -> None:
        """The function's concurrency changed: end a throttle back-off now rather than at its
        end, so events held back by a reservation of 0 run as soon as it is lifted."""
        lane = self._lanes.get(name)
        if lane is not None:
            lane.paused_until = 0.0
            lane.backoff = 0.0
            lane.window = max(lane.window, _WINDOW_START)
            lane.wake.set()

    async def close(self) -> None:
        """Start nothing more, give running attempts the shutdown grace to end, then stop
        them (events still stored run again at the next start)."""
        self._closing = True
        lanes = [lane.task for lane in self._lanes.values() if lane.task]
        for task in lanes:
            task.cancel()
        if self._attempts:
            await asyncio.wait(list(self._attempts), timeout=self._settings.shutdown_grace_s)
        attempts = list(self._attempts)
        for task in attempts:
            task.cancel()
        await asyncio.gather(*lanes, *attempts, return_exceptions=True)
        await self._store.close()

    # -- what /health and /metrics show ----------------------------------------------------

    def summary(self) -> dict[str, Any]:
        now = self._clock()
        functions = {}
        for name, lane in sorted(self._lanes.items()):
            oldest = lane.oldest()
            functions[name] = {
                "depth": len(lane.ready) + len(lane.running),
                "running": len(lane.running),
                "window": lane.window,
                "oldestAgeSeconds": round(now - oldest, 3) if oldest is not None else 0,
            }
        return {
            "depth": sum(f["depth"] for f in functions.values()),
            "functions": functions,
            **{outcome: self.counts[outcome] for outcome in _OUTCOMES},
        }

    async def dropped(self, limit: int = 100) -> list[DroppedEvent]:
        return await self._store.dropped(limit)

    def _refresh_gauges(self) -> None:
        now = self._clock()
        depth, age = self._metrics.async_queue_depth, self._metrics.async_oldest_age
        for name, lane in self._lanes.items():
            depth.labels(name).set(len(lane.ready) + len(lane.running))
            oldest = lane.oldest()
            age.labels(name).set(now - oldest if oldest is not None else 0)
        # Functions whose lanes emptied since the last scrape read 0, not their last value.
        for name in self._reported - self._lanes.keys():
            depth.labels(name).set(0)
            age.labels(name).set(0)
        self._reported = set(self._lanes)

    def _count(self, name: str, outcome: str) -> None:
        self.counts[outcome] += 1
        counter = self._counters.get((name, outcome))
        if counter is None:  # prometheus_client's labels() is dear for a per-event path
            counter = self._counters[(name, outcome)] = self._metrics.async_events.labels(
                name, outcome
            )
        counter.inc()
        cw_metric = _CLOUDWATCH.get(outcome)
        if cw_metric is not None:
            self._metrics.cloudwatch.add(cw_metric, ((), (("FunctionName", name),)), 1.0)

    # -- lanes -----------------------------------------------------------------------------

    def _hold(self, event: QueuedEvent) -> None:
        """Keep the payload in memory while the budget allows (it is stored either way)."""
        assert event.payload is not None
        if self._held + len(event.payload) <= _HOLD_BYTES:
            self._held += len(event.payload)
        else:
            event.payload = None

    def _push(self, event: QueuedEvent) -> None:
        if self._closing:
            return
        lane = self._lanes.get(event.function_name)
        if lane is None:
            lane = self._lanes[event.function_name] = _Lane(event.function_name, _WINDOW_START)
        heapq.heappush(lane.ready, (event.due, next(self._seq), event))
        if lane.task is None or lane.task.done():
            lane.task = asyncio.get_running_loop().create_task(self._run_lane(lane))
            lane.task.add_done_callback(_report_failure)
        elif (
            max(event.due, lane.paused_until) < lane.sleeping_until
            and len(lane.running) < lane.window
        ):
            # Only when it changes what the lane would do: while it is paused by a throttle
            # or its window is full, a wake-up per accepted event is wasted work.
            lane.wake.set()

    async def _run_lane(self, lane: _Lane) -> None:
        while lane.ready or lane.running:
            now = self._clock()
            while (
                lane.ready
                and len(lane.running) < lane.window
                and lane.ready[0][0] <= now
                and lane.paused_until <= now
            ):
                _, _, event = heapq.heappop(lane.ready)
                lane.running[event] = time.monotonic()
                task = asyncio.get_running_loop().create_task(self._attempt(lane, event))
                self._attempts.add(task)
                task.add_done_callback(self._attempts.discard)
            timeout = None
            if lane.ready and len(lane.running) < lane.window:
                timeout = max(lane.ready[0][0], lane.paused_until) - now
            elif lane.ready and lane.ready[0][0] <= now:
                # Full, with events waiting: look again soon whether to scale out.
                if self._scale_out(lane):
                    continue
                timeout = _RESIZE_EVERY_S
            lane.wake.clear()
            if timeout is None:
                lane.sleeping_until = math.inf
                await lane.wake.wait()
            else:
                lane.sleeping_until = now + timeout
                timer = asyncio.get_running_loop().call_later(max(timeout, 0.0), lane.wake.set)
                try:
                    await lane.wake.wait()
                finally:
                    timer.cancel()
            lane.sleeping_until = 0.0
        if self._lanes.get(lane.name) is lane:
            del self._lanes[lane.name]

    async def _attempt(self, lane: _Lane, event: QueuedEvent) -> None:
        try:
            await self._run(lane, event)
        except asyncio.CancelledError:
            raise  # the server is stopping: the event stays stored and runs after restart
        except Exception:  # a bug of ours must not lose the event or stop the lane
            log.exception("async event %s of %s failed to run", event.id, event.function_name)
            self._requeue_later(lane, event)
        finally:
            lane.running.pop(event, None)
            lane.wake.set()

    def _requeue_later(self, lane: _Lane, event: QueuedEvent) -> None:
        """Back off (Lambda's throttle and service-error back-off) and try the event again.

        The back-off doubles once per pause, not once per failed attempt: attempts that ran
        together and failed together (a NATS server lost under a full window) are one
        failure, not a window's worth of doublings that would stall the lane for minutes."""
        now = self._clock()
        if lane.paused_until <= now:
            lane.backoff = min(
                max(lane.backoff * 2, _THROTTLE_FIRST_S * self._scale, _BACKOFF_FLOOR_S),
                max(_THROTTLE_MAX_S * self._scale, _BACKOFF_FLOOR_S),
            )
            lane.paused_until = now + lane.backoff
        event.due = now
        self._push(event)

    # -- one attempt -----------------------------------------------------------------------

    async def _run(self, lane: _Lane, event: QueuedEvent) -> None:
        name, qualifier = event.function_name, event.qualifier
        settings = self._event_config(name, qualifier)
        now = self._clock()
        if now - event.enqueued_at > settings.event_age_s:
            await self._give_up(event, settings, EVENT_AGE_EXCEEDED)
            return
        try:
            config = self._functions.resolve(self._functions.ref(name, qualifier))
        except ResourceNotFoundError:
            await self._drop_unknown(event)
            return
        payload = event.payload
        if payload is None:
            payload = await self._store.payload(event.id)
            if payload is None:  # gone: adopted by another node while this one was cut off
                return
        if config.state is not FunctionState.ACTIVE:
            self._count(name, "throttled")
            self._requeue_later(lane, event)
            return
        trace, allowed = self._functions.recursion.trace(name, event.trace or None)
        if not allowed:
            self._metrics.recursive_invocations_dropped.labels(name).inc()
            await self._give_up(event, settings, RECURSIVE_LOOP, config, payload)
            return
        request = InvokeRequest(
            request_id=event.id,
            payload=payload,
            invoked_arn=self._functions.arn(name, qualifier),
            trace_id=trace,
            source="Event",
            attempt=event.attempts + 1,
            queued_at=event.enqueued_at,
        )
        invoke: DurableStart = self._scheduler.invoke
        if config.durable is not None and self.start_durable is not None:
            # A durable function's event starts a durable execution (named after the event:
            # an event run twice after a crash starts it once).
            invoke = self.start_durable
        # CloudWatch's AsyncEventAge: from queued to this attempt's invoke (recorded once
        # the function ran: a throttled attempt invoked nothing)
        age_ms = max(0.0, (self._clock() - event.enqueued_at) * 1000)
        try:
            result = await invoke(config, request)
        except TooManyRequestsError:
            self._count(name, "throttled")
            self._last[event.id] = _Attempt(None, 429)
            others = len(lane.running) - 1
            lane.throttled = time.monotonic()
            if others > 0:
                # Concurrency is taken by this function's own attempts: run when one ends.
                lane.window = others
                event.due = now
                self._push(event)
            else:
                self._requeue_later(lane, event)
            return
        except LaminaError as e:  # Lambda's 5xx: retried like a throttle, not an attempt
            log.warning("async event %s of %s: %s", event.id, name, e)
            self._last[event.id] = _Attempt(None, e.status)
            self._count(name, "throttled")
            self._requeue_later(lane, event)
            return
        self._metrics.cloudwatch.add("AsyncEventAge", ((), (("FunctionName", name),)), age_ms)
        lane.backoff = 0.0
        if lane.window < _WINDOW_START and lane.ready and not self._throttled_lately(lane):
            lane.window += 1
        event.attempts += 1
        self._last[event.id] = _Attempt(result, 200)
        if result.trace_header is not None:
            trace = result.trace_header  # traced: destinations continue from its handler
        if result.function_error is None:
            await self._succeed(event, config, settings, payload, trace)
        elif event.attempts <= settings.retry_attempts:
            await self._retry(event, settings)
        else:
            await self._give_up(event, settings, RETRIES_EXHAUSTED, config, payload, trace)

    def _cpu_share_window(self, name: str) -> int:
        """How many of the function's environments it takes to use every CPU of the host,
        each getting MemorySize/1,769 of a CPU as on Lambda: a quick function scales out to
        this many while its events wait and the host has CPU to spare."""
        config = self._functions.latest(name)
        memory = config.memory_size if config is not None else limits.MEMORY_DEFAULT_MB
        return math.ceil((os.cpu_count() or 1) * _MB_PER_CPU / memory)

    @staticmethod
    def _throttled_lately(lane: _Lane) -> bool:
        return time.monotonic() - lane.throttled < _THROTTLE_HOLD_S

    def _scale_out(self, lane: _Lane) -> bool:
        """A full lane with events waiting: grow its window by a quarter if no attempt has
        ended for a while and the host has CPU to spare, or shrink it by a quarter (not below
        the start) while the host's CPU is busy. True if it grew."""
        now = time.monotonic()
        if now - lane.resized < _RESIZE_EVERY_S:
            return False
        lane.resized = now
        if self._cpu.busy() >= _CPU_BUSY:
            lane.window = max(_WINDOW_START, min(lane.window, lane.window * 3 // 4))
            return False
        if self._throttled_lately(lane):
            return False
        stalled = bool(lane.running) and now - max(lane.running.values()) >= _SATURATED_S
        if not stalled and lane.window >= self._cpu_share_window(lane.name):
            return False
        lane.window = min(lane.window + max(1, lane.window // 4), self._settings.concurrency_limit)
        return True

    def _event_config(self, name: str, qualifier: str | None) -> EventInvokeConfig:
        found = self._functions.event_invoke.effective(name, qualifier)
        if found is not None:
            return found
        return EventInvokeConfig(name, qualifier or LATEST, datetime.now(UTC))

    async def _succeed(
        self,
        event: QueuedEvent,
        config: FunctionConfig,
        settings: EventInvokeConfig,
        payload: bytes,
        trace: str,
    ) -> None:
        follow_ups = []
        if settings.on_success:
            record = self._record(event, "Success", payload)
            follow_ups += self._follow_up(
                event, settings.on_success, record, trace, "DestinationDeliveryFailures"
            )
        await self._finish(event, follow_ups)
        self._count(event.function_name, "succeeded")
        if follow_ups:
            self._count(event.function_name, "destination")

    async def _retry(self, event: QueuedEvent, settings: EventInvokeConfig) -> None:
        now = self._clock()
        delay = max(_RETRY_UNIT_S * self._scale * event.attempts, _BACKOFF_FLOOR_S)
        # Past its maximum age it would only be dropped: be due when that happens.
        expires = event.enqueued_at + settings.event_age_s
        event.due = min(now + delay, expires + _BACKOFF_FLOOR_S)
        await self._store.reschedule(event.id, event.attempts, event.due)
        self._count(event.function_name, "retried")
        self._push(event)

    async def _give_up(
        self,
        event: QueuedEvent,
        settings: EventInvokeConfig,
        reason: str,
        config: FunctionConfig | None = None,
        payload: bytes | None = None,
        trace: str = "",
    ) -> None:
        """The event failed for good: tell its OnFailure destination and its dead-letter
        target, and keep the record of why. `trace` is the header the event ran with: the
        destinations continue its chain."""
        if payload is None:
            payload = event.payload or await self._store.payload(event.id) or b"null"
        if config is None:
            config = self._config_or_none(event)
        destination: list[QueuedEvent] = []
        if settings.on_failure:
            record = self._record(event, reason, payload)
            destination = self._follow_up(
                event, settings.on_failure, record, trace, "DestinationDeliveryFailures"
            )
        dead_letter: list[QueuedEvent] = []
        if config is not None and config.dead_letter_target:
            dead_letter = self._follow_up(
                event, config.dead_letter_target, payload, trace, "DeadLetterErrors"
            )
        follow_ups = destination + dead_letter
        last = self._last.get(event.id)
        detail = ""
        if last is not None and last.result is not None and last.result.function_error:
            detail = _error_type(last.result.payload)
        dropped = DroppedEvent(
            event.id,
            event.function_name,
            event.qualifier,
            reason,
            event.attempts,
            event.enqueued_at,
            self._clock(),
            detail,
        )
        await self._finish(event, follow_ups, dropped)
        log.warning(
            "async event %s of %s dropped: %s after %d attempt(s)%s",
            event.id,
            event.function_name,
            reason,
            event.attempts,
            f" ({detail})" if detail else "",
        )
        self._count(event.function_name, "expired" if reason == EVENT_AGE_EXCEEDED else "failed")
        if destination:
            self._count(event.function_name, "destination")
        if dead_letter:
            self._count(event.function_name, "dead_lettered")

    async def _drop_unknown(self, event: QueuedEvent) -> None:
        dropped = DroppedEvent(
            event.id,
            event.function_name,
            event.qualifier,
            FUNCTION_NOT_FOUND,
            event.attempts,
            event.enqueued_at,
            self._clock(),
            self._functions.arn(event.function_name, event.qualifier),
        )
        await self._finish(event, (), dropped)
        log.warning("async event %s dropped: function %s not found", event.id, dropped.detail)
        self._count(event.function_name, "dropped")

    async def _finish(
        self,
        event: QueuedEvent,
        follow_ups: list[QueuedEvent] | tuple[()],
        dropped: DroppedEvent | None = None,
    ) -> None:
        await self._store.finish(event.id, follow_ups, dropped)
        self._last.pop(event.id, None)
        if event.payload is not None:
            self._held -= len(event.payload)
            event.payload = None
        for follow_up in follow_ups:
            self._count(follow_up.function_name, "accepted")
            self._hold(follow_up)
            self._push(follow_up)

    def _config_or_none(self, event: QueuedEvent) -> FunctionConfig | None:
        try:
            return self._functions.resolve(
                self._functions.ref(event.function_name, event.qualifier)
            )
        except LaminaError:
            return None

    # -- records ---------------------------------------------------------------------------

    def _follow_up(
        self, event: QueuedEvent, target_arn: str, payload: bytes, trace: str, failure: str
    ) -> list[QueuedEvent]:
        """The event for `event`'s destination or dead-letter function, in the same chain of
        requests as `trace`; none if that function, version or alias no longer exists: the
        delivery fails, counted in `failure` (CloudWatch's DestinationDeliveryFailures or
        DeadLetterErrors) in the dimension sets of `event`'s invocations."""
        ref: FunctionRef = parse_function_ref(
            target_arn, region=self._settings.region, account=self._settings.account_id
        )
        try:
            self._functions.resolve(ref)
        except ResourceNotFoundError:
            last = self._last.get(event.id)
            executed = last.result.executed_version if last and last.result else None
            dims = function_dimensions(event.function_name, event.qualifier, executed)
            self._metrics.cloudwatch.add(failure, dims, 1.0)
            log.warning(
                "async event %s of %s: cannot deliver to %s: it does not exist (%s)",
                event.id,
                event.function_name,
                target_arn,
                failure,
            )
            return []
        return [
            QueuedEvent(
                ids.request_id(), ref.name, ref.qualifier, payload, self._clock(), trace=trace
            )
        ]

    def _record(self, event: QueuedEvent, condition: str, payload: bytes) -> bytes:
        """Lambda's invocation record, as destinations receive it."""
        last = self._last.get(event.id)
        record: dict[str, Any] = {
            "version": "1.0",
            "timestamp": _iso(self._clock()),
            "requestContext": {
                "requestId": event.id,
                "functionArn": self._functions.arn(event.function_name, event.qualifier or LATEST),
                "condition": condition,
                "approximateInvokeCount": event.attempts,
            },
            "requestPayload": _json_or_text(payload),
        }
        if last is not None:
            context: dict[str, Any] = {"statusCode": last.status}
            if last.result is not None:
                context["executedVersion"] = last.result.executed_version
                if last.result.function_error:
                    context["functionError"] = last.result.function_error
            record["responseContext"] = context
            if last.result is not None:
                record["responsePayload"] = _json_or_text(last.result.payload)
        return json.dumps(record, separators=(",", ":")).encode()


#: the outcomes counted (and shown in /health)
_OUTCOMES = (
    "accepted",
    "succeeded",
    "retried",
    "throttled",
    "failed",
    "expired",
    "dropped",
    "destination",
    "dead_lettered",
)


class _HostCpu:
    """The host's CPU use over the last quarter second or so, from /proc/stat (0 where that
    cannot be read: then the window grows on slowness alone)."""

    _INTERVAL_S = 0.25

    def __init__(self) -> None:
        self._at = 0.0
        self._last = self._sample()
        self._busy = 0.0

    def busy(self) -> float:
        now = time.monotonic()
        if now - self._at >= self._INTERVAL_S:
            sample = self._sample()
            total = sample[0] - self._last[0]
            if total > 0:
                self._busy = 1 - (sample[1] - self._last[1]) / total
            self._at, self._last = now, sample
        return self._busy

    @staticmethod
    def _sample() -> tuple[int, int]:
        """(all jiffies, idle and iowait jiffies) since boot."""
        try:
            with open("/proc/stat", "rb") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return (0, 0)
        return sum(fields[:8]), fields[3] + fields[4]


def _report_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("async queue lane failed", exc_info=task.exception())


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json_or_text(data: bytes) -> Any:
    try:
        return untrusted_json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return data.decode(errors="replace")


def _error_type(payload: bytes) -> str:
    try:
        value = untrusted_json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return ""
    return str(value.get("errorType", "")) if isinstance(value, dict) else ""
