"""The orchestration of durable executions (`DurableRunner`): invoke, suspend, resume.

Each execution is driven by at most one task at a time on this node: it asks
`control.durable` for the next invocation (the event with the checkpoint token and the
operations), runs it through the scheduler like any other invocation of that version, and
hands the output back. When the function returns PENDING, nothing of it is kept: no task,
no environment, only the execution's earliest timer in one heap that a single task sleeps
on. A timer that comes due, a callback completed, a chained invoke finished: each starts a
driving task again, which replays the function from its checkpoint log.

Timers live in the store (`wake_at`): `start` re-arms every running execution, so waits and
retries fire after a restart; an invocation cut off by the restart is invoked again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import heapq
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from lamina import ids, untrusted_json
from lamina.control.durable import DurableExecutions, Invocation, Outcome
from lamina.control.durable_pause import ACTIVE
from lamina.control.functions import FunctionService
from lamina.errors import LaminaError, ServiceError
from lamina.models import FunctionConfig, InvokeRequest, InvokeResult
from lamina.observability import Metrics
from lamina.scheduler import Scheduler
from lamina.store.durable import ExecutionRecord

log = logging.getLogger(__name__)

#: seconds before an invocation that could not run (throttled, no environment) is tried again
RETRY_DELAY_S = 1.0
#: seconds between deletions of ended executions past their retention
PRUNE_INTERVAL_S = 3600.0
#: how many invocations of one function version's durable executions may run at once on this
#: node beyond its environments past their init: how many cold starts they may cause at once
#: (four per CPU: a burst of cold starts on a small host does not starve each other's inits,
#: while the warm environments all stay busy)
INVOCATIONS_IN_FLIGHT = max(8, 4 * (os.cpu_count() or 1))
#: how far ahead the timers are looked at for executions of one version waking together: up
#: to `invocations_in_flight` environments more are started before the burst (their inits
#: then do not compete with the burst's invocations)
PREWARM_AHEAD_S = 10.0
#: seconds between those looks
PREWARM_INTERVAL_S = 1.0
#: seconds between looks at the store while waiting for an execution's end (it may end on
#: another node)
END_POLL_S = 1.0
#: seconds between scans of the store for due executions no timer here knows of
SCAN_INTERVAL_S = 2.0
#: how long a synchronous start waits for its execution (Lambda's 15 minutes)
SYNC_WAIT_MAX_S = 900.0
_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


class DurableRunner:
    """Drives the durable executions of this node (see the module's docstring)."""

    def __init__(
        self,
        executions: DurableExecutions,
        functions: FunctionService,
        scheduler: Scheduler,
        *,
        recover: bool = True,
        scan_interval_s: float = SCAN_INTERVAL_S,
        metrics: Metrics | None = None,
        invocations_in_flight: int = INVOCATIONS_IN_FLIGHT,
    ) -> None:
        """`recover`: at start, take over the invocations the store says are running (they
        were cut off when this server stopped). Not in a cluster, where another node may be
        running them now. `scan_interval_s`: how often the store is asked for executions due
        that this node has no timer for (another node suspended them, or ran them and is
        gone): in a cluster, how late a timer may fire at worst."""
        self._recover = recover
        self._metrics = metrics
        self._invocations_in_flight = invocations_in_flight
        self._slots: dict[tuple[str, str], _Slots] = {}
        self._scan_interval_s = scan_interval_s
        self.executions = executions
        self._functions = functions
        self._scheduler = scheduler
        self._driving: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._timers: list[tuple[float, str]] = []
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop_task: asyncio.Task[None] | None = None
        self._waiters: dict[str, list[asyncio.Future[ExecutionRecord]]] = {}
        self._closed = False
        #: versions whose environments are being started ahead of a burst: how many
        self._prewarming: dict[tuple[str, str], int] = {}
        executions.on_ended.append(self._execution_ended)
        executions.on_ready = self.kick
        executions.on_chained = self._chained

    async def start(self) -> None:
        """Re-arm every running execution from the store, then serve timers."""
        self._loop_task = asyncio.get_running_loop().create_task(self._timer_loop())
        self._spawn(self._prune_loop())
        self._spawn(self._scan_loop())
        self._spawn(self._prewarm_loop())
        for record in await self.executions.running():
            recovered = await self.executions.recover(record.arn) if self._recover else record
            if recovered is None:
                continue
            wake = recovered.wake_at.timestamp() if recovered.wake_at else time.time()
            self._arm(recovered.arn, wake)
            for _, doc in recovered.operations.values():
                if doc["Type"] == "CHAINED_INVOKE" and doc["Status"] == "STARTED":
                    # Its target's run was lost with the server: run it again.
                    self._chained(recovered.arn, doc["Id"], dict(doc.get("_invoke") or {}))

    async def close(self) -> None:
        self._closed = True
        tasks = [*self._driving.values(), *self._tasks]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for waiters in self._waiters.values():
            for fut in waiters:
                fut.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- driving -------------------------------------------------------------------

    def kick(self, arn: str) -> None:
        """Invoke the execution now (or once more after the invocation now running)."""
        if self._closed:
            return
        if arn in self._driving:
            self._again.add(arn)
            return
        task = asyncio.get_running_loop().create_task(self._drive(arn))
        self._driving[arn] = task
        task.add_done_callback(lambda _: self._driving.pop(arn, None))

    async def _drive(self, arn: str) -> None:
        wake: float | None = None
        try:
            while True:
                self._again.discard(arn)
                # A slot first, then the claim: a claim's lease does not run out in a queue.
                async with self._slot(arn):
                    inv = await self.executions.begin_invocation(arn, self._lease_s(arn))
                    if inv is None:
                        if wake is not None:
                            # e.g. paused as its last invocation ended: its timers still fire
                            self._arm(arn, wake)
                        return
                    outcome = await self._invoke(inv)
                if outcome.ended:
                    return
                wake = outcome.wake_at
                if outcome.again or arn in self._again:
                    continue
                if outcome.wake_at is not None:
                    self._arm(arn, outcome.wake_at)
                return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("durable execution %s: driving failed; trying again shortly", arn)
            self._arm(arn, time.time() + RETRY_DELAY_S)

    def _slot(self, arn: str) -> _Slots:
        """The function version's share of invocations in flight: executions that wake
        together (a thousand waits ending at once) run on every warm environment at once,
        but start at most `invocations_in_flight` more at a time, rather than all starting
        environments at once, which on a small host would time out their inits."""
        key = _version_of(arn)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slots(
                self._invocations_in_flight,
                # environments being started ahead count as cold starts under way (never
                # below none ready: `extra` may always run, so that a queue always moves)
                lambda: max(0, self._scheduler.ready(*key) - self._prewarming.get(key, 0)),
            )
        return slot

    def _lease_s(self, arn: str) -> float:
        """How long an invocation of the execution may hold it: its function's timeout and
        a minute (the ARN names the function and version)."""
        _, _, rest = arn.partition(":function:")
        name, _, version = rest.split("/", 1)[0].partition(":")
        config = self._functions.version(name, version)
        return float(config.timeout if config is not None else 900) + 60.0

    async def _invoke(self, inv: Invocation) -> Outcome:
        config = self._functions.version(inv.function_name, inv.version)
        request_id = ids.request_id()
        started = time.time()
        if config is None:
            failure: dict[str, Any] | None = {
                "ErrorType": "ResourceNotFoundException",
                "ErrorMessage": f"Function not found: {inv.function_name}:{inv.version}",
            }
            return await self.executions.end_invocation(inv, None, failure, request_id, started)
        try:
            result = await self._scheduler.invoke(
                config,
                InvokeRequest(
                    request_id=request_id,
                    payload=inv.payload,
                    invoked_arn=self._functions.arn(inv.function_name, inv.version),
                    source="Durable",
                ),
            )
        except LaminaError as e:
            failure = {"ErrorType": e.error_type, "ErrorMessage": e.message}
            return await self.executions.end_invocation(inv, None, failure, request_id, started)
        output: dict[str, Any] | None = None
        failure = None
        if result.function_error:
            failure = _function_error(result.payload)
        else:
            try:
                parsed = untrusted_json.loads(result.payload)
            except (ValueError, UnicodeDecodeError):
                parsed = None
            if isinstance(parsed, dict):
                output = parsed
        return await self.executions.end_invocation(inv, output, failure, request_id, started)

    # ---- timers ------------------------------------------------------------------------

    def _arm(self, arn: str, at: float) -> None:
        heapq.heappush(self._timers, (at, arn))
        self._wake.set()

    async def _timer_loop(self) -> None:
        while True:
            now = time.time()
            while self._timers and self._timers[0][0] <= now:
                _, arn = heapq.heappop(self._timers)
                self._spawn(self._fire(arn))
            self._wake.clear()
            timeout = self._timers[0][0] - now if self._timers else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _fire(self, arn: str) -> None:
        outcome = await self.executions.wake(arn)
        if outcome.again:
            self.kick(arn)
        elif not outcome.ended and outcome.wake_at is not None and outcome.wake_at > time.time():
            # A stale entry (the timer moved, e.g. a heartbeat): keep the current one armed.
            self._arm(arn, outcome.wake_at)

    async def _prewarm_loop(self) -> None:
        while True:
            await asyncio.sleep(PREWARM_INTERVAL_S)
            try:
                self._prewarm_due()
            except Exception:
                log.exception("durable: starting environments ahead of due timers failed")

    def _prewarm_due(self) -> None:
        """Executions of one version whose timers end within `PREWARM_AHEAD_S`, more of them
        than its environments past their init: start up to `invocations_in_flight` more now,
        so that the burst runs on warm ones rather than waiting for inits."""
        horizon = time.time() + PREWARM_AHEAD_S
        due: dict[tuple[str, str], set[str]] = {}
        for at, arn in self._timers:
            if at <= horizon:
                due.setdefault(_version_of(arn), set()).add(arn)
        for key, arns in due.items():
            if key in self._prewarming:
                continue
            ready = self._scheduler.ready(*key)
            slot = self._slots.get(key)
            # invocations of the version waiting on a cold start now count against the bound
            starting = max(0, (slot.in_flight if slot else 0) - ready)
            missing = min(len(arns) - ready, self._invocations_in_flight - starting)
            config = self._functions.version(*key)
            if missing <= 0 or config is None:
                continue
            self._prewarming[key] = missing
            self._spawn(self._prewarm(key, config, missing))

    async def _prewarm(self, key: tuple[str, str], config: FunctionConfig, count: int) -> None:
        try:
            started = await self._scheduler.prewarm(config, count)
            log.info("durable: %d environments of %s:%s started ahead of due timers", started, *key)
        finally:
            self._prewarming.pop(key, None)
            slot = self._slots.get(key)
            if slot is not None:
                slot.admit()  # executions queued meanwhile run on what started

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(self._scan_interval_s)
            try:
                for arn in await self.executions.due():
                    if arn in self._driving:
                        continue
                    # A lapsed claim: its node is gone (a live one would have ended it).
                    if await self.executions.recover(arn, stale_only=True) is not None:
                        self._spawn(self._fire(arn))
            except Exception:
                log.exception("durable: the scan for due executions failed")

    async def _prune_loop(self) -> None:
        while True:
            try:
                gone = await self.executions.prune()
                if gone:
                    log.info("durable: deleted %d executions past their retention", gone)
            except Exception:
                log.exception("durable: retention pass failed")
            await asyncio.sleep(PRUNE_INTERVAL_S)

    # ---- ends, waiters, chained invokes -------------------------------------------------

    def _execution_ended(self, record: ExecutionRecord) -> None:
        if self._metrics is not None:
            self._metrics.durable_executions_ended.labels(record.function_name, record.status).inc()
        for fut in self._waiters.pop(record.arn, []):
            if not fut.done():
                fut.set_result(record)

    async def wait_for_end(self, arn: str, timeout_s: float) -> ExecutionRecord | None:
        """The execution once it has ended (None if `timeout_s` passed first)."""
        fut: asyncio.Future[ExecutionRecord] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(arn, []).append(fut)
        record = await self.executions.get(arn)
        if record.status not in ACTIVE:
            self._waiters[arn].remove(fut)
            return record
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), min(left, END_POLL_S))
                except TimeoutError:
                    # It may have ended on another node of the cluster: ask the store.
                    record = await self.executions.get(arn)
                    if record.status not in ACTIVE:
                        return record
        finally:
            waiters = self._waiters.get(arn)
            if waiters is not None and fut in waiters:
                waiters.remove(fut)

    async def start_for(
        self, config: FunctionConfig, request: InvokeRequest, *, wait: bool
    ) -> InvokeResult:
        """Start a durable execution of `config` for an invocation that did not come through
        Invoke (an asynchronous event, an event-source batch), named after its request id so
        that the same invocation run again starts it once. `wait`: answer with the
        execution's outcome once it has ended, as a synchronous invoke would (up to Lambda's
        15 minutes); otherwise as soon as it has started."""
        assert config.durable is not None
        name = request.request_id if _NAME.fullmatch(request.request_id) else None
        record, created = await self.executions.start(config, name, request.payload)
        if created:
            self.kick(record.arn)
        if not wait:
            return InvokeResult(payload=b"", executed_version=record.version)
        ended = await self.wait_for_end(
            record.arn, min(SYNC_WAIT_MAX_S, config.durable.execution_timeout + 5.0)
        )
        if ended is None:
            raise ServiceError(f"The durable execution {record.arn} did not end in time.")
        return outcome_of(ended)

    def _chained(self, arn: str, op_id: str, options: dict[str, Any]) -> None:
        if not self._closed:
            self._spawn(self._run_chained(arn, op_id, options))

    async def _run_chained(self, arn: str, op_id: str, options: dict[str, Any]) -> None:
        """Run a chained invoke's target and record its result in the caller's execution."""
        payload = (options.get("input") or "{}").encode()
        try:
            ref = self._functions.ref(str(options.get("function") or ""), namespaced=True)
            config = await self._functions.resolve_current(ref)
            if config.durable is not None:
                # Named after the caller's operation: run again after a restart, the same
                # child execution is found, not a second one started.
                child_name = hashlib.sha256(f"{arn}\n{op_id}".encode()).hexdigest()[:32]
                child, created = await self.executions.start(config, child_name, payload)
                if created:
                    self.kick(child.arn)
                ended = await self.wait_for_end(child.arn, float(config.durable.execution_timeout))
                if ended is None or ended.status != "SUCCEEDED":
                    how = ended.status if ended else "TIMED_OUT"
                    error = (ended.error if ended else None) or {
                        "ErrorType": "ChainedInvokeFailed",
                        "ErrorMessage": f"The chained execution ended {how}",
                    }
                    await self.executions.chained_done(arn, op_id, None, error)
                else:
                    await self.executions.chained_done(arn, op_id, ended.result, None)
                return
            result = await self._scheduler.invoke(
                config,
                InvokeRequest(
                    request_id=ids.request_id(),
                    payload=payload,
                    invoked_arn=self._functions.arn(ref.name, ref.qualifier),
                    tenant_id=options.get("tenant"),
                    source="Durable",
                ),
            )
        except LaminaError as e:
            await self.executions.chained_done(
                arn, op_id, None, {"ErrorType": e.error_type, "ErrorMessage": e.message}
            )
            return
        if result.function_error:
            await self.executions.chained_done(arn, op_id, None, _function_error(result.payload))
        else:
            await self.executions.chained_done(arn, op_id, result.payload.decode(), None)


def _version_of(arn: str) -> tuple[str, str]:
    """The function and version an execution ARN names."""
    name, _, version = arn.partition(":function:")[2].partition("/")[0].partition(":")
    return name, version


class _Slots:
    """Invocations in flight of one function version: at most `extra` more than the
    environments it has past their init (`ready()`), so that at most `extra` of them wait
    on a cold start at once however many executions wake together. Waiters go in turn."""

    def __init__(self, extra: int, ready: Callable[[], int]) -> None:
        self._extra = extra
        self._ready = ready
        self._in_flight = 0
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()

    def admit(self) -> None:
        """Let queued invocations run as far as there is room now."""
        # An environment that finished its init makes room without an invocation ending:
        # seen at the next entry or exit (both frequent while executions queue here).
        while self._queue and self._in_flight < self._extra + self._ready():
            fut = self._queue.popleft()
            if not fut.done():
                self._in_flight += 1
                fut.set_result(None)

    async def __aenter__(self) -> None:
        self.admit()
        if not self._queue and self._in_flight < self._extra + self._ready():
            self._in_flight += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._in_flight -= 1  # admitted as it was cancelled: pass the turn on
                self.admit()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self._in_flight -= 1
        self.admit()

    @property
    def in_flight(self) -> int:
        return self._in_flight


def outcome_of(ended: ExecutionRecord) -> InvokeResult:
    """An ended execution as an invocation's result: its Result, or its Error as a function
    error (`{"errorType", "errorMessage"}`, as a handler's error reads)."""
    if ended.status == "SUCCEEDED":
        return InvokeResult(
            payload=(ended.result or "null").encode(), executed_version=ended.version
        )
    error = ended.error or {}
    body = {
        "errorType": error.get("ErrorType") or ended.status,
        "errorMessage": error.get("ErrorMessage") or f"The durable execution ended {ended.status}",
    }
    return InvokeResult(
        payload=json.dumps(body).encode(),
        executed_version=ended.version,
        function_error="Unhandled",
        error_type=str(body["errorType"]),
    )


def _function_error(payload: bytes) -> dict[str, Any]:
    """A function's error response as an ErrorObject."""
    try:
        body = untrusted_json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return {"ErrorType": "Unhandled", "ErrorMessage": payload.decode(errors="replace")}
    error: dict[str, Any] = {
        "ErrorType": str(body.get("errorType") or "Unhandled"),
        "ErrorMessage": str(body.get("errorMessage") or ""),
    }
    trace = body.get("stackTrace")
    if isinstance(trace, list):
        error["StackTrace"] = [str(t) for t in trace]
    return error
