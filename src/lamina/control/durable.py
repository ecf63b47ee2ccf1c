"""Durable executions: their rules (`DurableExecutions`).

An execution is started by an Invoke of a durable function; its log of operations is
checkpointed by the function through CheckpointDurableExecution, read back through
GetDurableExecutionState, and completed from outside by callbacks, timers and chained
invokes. `events.durable` drives the invocations; this module decides what each call does
to the stored execution (`store.durable`), one call at a time per execution.

Checkpoint tokens: each invocation gets a fresh random token; the checkpoints and state
reads of that invocation must carry it, and it stops working when the invocation ends (a
late checkpoint from an invocation that lost its turn is refused, as on Lambda).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from lamina.control import durable_ops as ops
from lamina.control import durable_pause as pauses
from lamina.control.durable_log import (
    add_event,
    end_execution,
    execution_op_id,
    fire_due,
    to_datetime,
    wake_at,
)
from lamina.control.durable_pause import ACTIVE
from lamina.errors import (
    InvalidParameterValueError,
    LaminaError,
    ResourceConflictError,
    ResourceNotFoundError,
    ServiceError,
    UserError,
)
from lamina.models import FunctionConfig
from lamina.store.durable import DurableStore, ExecutionRecord

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ARN = re.compile(
    r"arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\d{12}:function:([a-zA-Z0-9_-]+):"
    r"(\$LATEST(?:\.PUBLISHED)?|[0-9]+)/durable-execution/([a-zA-Z0-9_-]+)/([a-zA-Z0-9_-]+)"
)
#: how many times an invocation that failed (crash, timeout) is tried again before the
#: execution fails (Lambda retries a durable function's failed invocations; see report)
INVOCATION_RETRIES = 2
STATE_PAGE_MAX = 1000
#: invocations that did not run the function at all (no concurrency left): not failures
_NOT_RAN = frozenset({"TooManyRequestsException"})
#: seconds before a throttled invocation is tried again
THROTTLE_RETRY_S = 1.0
#: how much of the operation log an invocation's event carries (below the 6 MB payload limit)
INITIAL_STATE_MAX_BYTES = 4 * 1024 * 1024


#: how many times a call is decided again after another node wrote the same execution
_WRITE_ATTEMPTS = 8
_T = TypeVar("_T")


class _Conflict(Exception):
    """Another writer changed the execution since it was read."""


class DurableExecutionAlreadyStartedError(UserError):
    error_type = "DurableExecutionAlreadyStartedException"
    status = 409


class CallbackTimeoutError(UserError):
    error_type = "CallbackTimeoutException"
    status = 400


@dataclass(frozen=True)
class Invocation:
    """One invocation of an execution, as `events.durable` sends it."""

    arn: str
    function_name: str
    version: str
    token: str
    payload: bytes
    #: which invocation this is (checkpoint tokens change with each checkpoint)
    invocation_id: str


@dataclass(frozen=True)
class Outcome:
    """What to do after an invocation: `ended` (the execution is over), else `again` (invoke
    now) or sleep until `wake_at` (seconds since the epoch; None: until something happens)."""

    ended: bool
    again: bool = False
    wake_at: float | None = None


def _now() -> float:
    return time.time()


class DurableExecutions:
    """The rules of durable executions over `store` (calls are serialized per execution)."""

    def __init__(
        self,
        store: DurableStore,
        region: str,
        account_id: str,
        clock: Callable[[], float] = _now,
    ) -> None:
        self.store = store
        self._region = region
        self._account = account_id
        self._clock = clock
        self._locks: dict[str, asyncio.Lock] = {}
        #: executions with an invocation running: kept in memory between its checkpoints
        self._active: dict[str, ExecutionRecord] = {}
        #: each running execution's last checkpoint with a ClientToken: (client token, the
        #: checkpoint token it spent, the answer), to answer a retried batch the same way
        self._last_checkpoint: dict[str, tuple[str, Any, dict[str, Any]]] = {}
        #: called with an execution's ARN when it ended, or when it should be invoked again
        self.on_ended: list[Callable[[ExecutionRecord], None]] = []
        self.on_ready: Callable[[str], None] = lambda arn: None
        #: called with (execution ARN, operation id, options) for a chained invoke started
        self.on_chained: Callable[[str, str, dict[str, Any]], None] = lambda a, o, d: None

    # ---- retried on a concurrent write (another node of the cluster) -------------------

    async def _retrying(self, arn: str, attempt: Callable[[], Awaitable[_T]]) -> _T:
        """`attempt()` until it writes over the revision it read: after another writer, the
        execution is read again and the call decided again from what it holds now."""
        for _ in range(_WRITE_ATTEMPTS):
            try:
                return await attempt()
            except _Conflict:
                self._active.pop(arn, None)
        raise ServiceError(f"Durable execution {arn} is too busy: try again.")

    async def begin_invocation(self, arn: str, lease_s: float = 960.0) -> Invocation | None:
        """The next invocation of the execution (due timers applied first), or None if it
        has ended or one is running already. `lease_s`: how long the claim holds if this
        node never says how the invocation ended (the function's timeout and a margin)."""
        return await self._retrying(arn, lambda: self._begin_invocation(arn, lease_s))

    async def end_invocation(
        self,
        inv: Invocation,
        output: dict[str, Any] | None,
        failure: dict[str, Any] | None,
        request_id: str,
        started: float,
    ) -> Outcome:
        """Record how an invocation ended (see `_end_invocation`)."""
        return await self._retrying(
            inv.arn, lambda: self._end_invocation(inv, output, failure, request_id, started)
        )

    async def wake(self, arn: str) -> Outcome:
        """A timer of the execution is due (see `_wake`)."""
        return await self._retrying(arn, lambda: self._wake(arn))

    async def checkpoint(
        self, arn: str, token: Any, updates: Any, client_token: Any
    ) -> dict[str, Any]:
        """CheckpointDurableExecution (see `_checkpoint`)."""
        return await self._retrying(
            arn, lambda: self._checkpoint(arn, token, updates, client_token)
        )

    async def _complete(
        self,
        arn: str,
        op_id: str,
        kind: str,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
    ) -> None:
        await self._retrying(
            arn, lambda: self._complete_attempt(arn, op_id, kind, status, result, error)
        )

    async def callback_heartbeat(self, callback_id: str) -> None:
        """SendDurableExecutionCallbackHeartbeat (see `_callback_heartbeat`)."""
        arn, _ = self._callback_target(callback_id)
        await self._retrying(arn, lambda: self._callback_heartbeat(callback_id))

    async def stop(self, arn: str, error: Any) -> float:
        """StopDurableExecution: when it stopped (see `_stop`)."""
        return await self._retrying(arn, lambda: self._stop(arn, error))

    async def delete(self, arn: str) -> float:
        """DeleteDurableExecution (see `_delete`)."""
        return await self._retrying(arn, lambda: self._delete(arn))

    async def pause(self, arn: str, client_token: Any, reason: Any, timeout_paused: Any) -> None:
        """PauseDurableExecution (see `control.durable_pause`)."""
        await self._retrying(
            arn, lambda: pauses.pause(self, arn, client_token, reason, timeout_paused)
        )

    async def resume(self, arn: str, client_token: Any, reason: Any) -> None:
        """ResumeDurableExecution (see `control.durable_pause`)."""
        await self._retrying(arn, lambda: pauses.resume(self, arn, client_token, reason))

    async def recover(self, arn: str, *, stale_only: bool = False) -> ExecutionRecord | None:
        """Take over a cut-off invocation (see `_recover`)."""
        return await self._retrying(arn, lambda: self._recover(arn, stale_only))

    async def _save(
        self, record: ExecutionRecord, changed: list[str], events: list[dict[str, Any]]
    ) -> None:
        if not await self._run(self.store.save, record, changed, events):
            raise _Conflict

    # ---- helpers -------------------------------------------------------------------

    def _lock(self, arn: str) -> asyncio.Lock:
        lock = self._locks.get(arn)
        if lock is None:
            lock = self._locks[arn] = asyncio.Lock()
        return lock

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def _load(self, arn: str) -> ExecutionRecord:
        record = self._active.get(arn)
        if record is not None:
            return record
        if not isinstance(arn, str) or not _ARN.fullmatch(arn):
            raise InvalidParameterValueError(f"Invalid durable execution ARN: {arn}")
        loaded: ExecutionRecord | None = await self._run(self.store.load, arn)
        if loaded is None:
            raise ResourceNotFoundError(f"Durable execution not found: {arn}")
        return loaded

    async def _time_out(self, record: ExecutionRecord, events: list[dict[str, Any]]) -> None:
        """End the execution TIMED_OUT (its deadline has passed), with `events` before."""
        error = {"ErrorType": "TimedOut", "ErrorMessage": "The durable execution timed out."}
        end_execution(self._clock(), record, "TIMED_OUT", events, error=error)
        await self._save(record, list(record.operations), events)
        self._ended(record)

    def _ended(self, record: ExecutionRecord) -> None:
        self._active.pop(record.arn, None)
        self._last_checkpoint.pop(record.arn, None)
        # Called under the lock: whoever waits on it next makes a new one and finds the end.
        self._locks.pop(record.arn, None)
        for listener in self.on_ended:
            listener(record)

    # ---- starting --------------------------------------------------------------------

    def execution_arn(self, config: FunctionConfig, name: str, ident: str) -> str:
        return (
            f"arn:aws:lambda:{self._region}:{self._account}:function:{config.name}:"
            f"{config.version}/durable-execution/{name}/{ident}"
        )

    async def start(
        self, config: FunctionConfig, name: str | None, payload: bytes
    ) -> tuple[ExecutionRecord, bool]:
        """Start an execution of `config` (a durable function's version) with `payload`;
        (the execution, whether it is new). An execution of the same name and input is
        returned as it is (idempotent start); of the same name with another input:
        DurableExecutionAlreadyStartedException."""
        assert config.durable is not None
        if name is not None and not _NAME.fullmatch(name):
            raise InvalidParameterValueError(
                "1 validation error detected: Value at 'durableExecutionName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "[a-zA-Z0-9-_]+"
            )
        text = payload.decode()
        if name is not None:
            existing = await self._run(self.store.by_name, config.name, name)
            if existing is not None:
                return self._same_start(existing, config, text), False
        name = name or str(uuid.uuid4())
        ident = str(uuid.uuid4())
        now = self._clock()
        record = ExecutionRecord(
            arn=self.execution_arn(config, name, ident),
            function_name=config.name,
            version=config.version,
            name=name,
            status="RUNNING",
            input=text,
            started_at=to_datetime(now),
            deadline=to_datetime(now + config.durable.execution_timeout),
            retention_days=config.durable.retention_days,
        )
        execution_op = {
            "Id": ident,
            "Type": "EXECUTION",
            "Name": name,
            "Status": "STARTED",
            "StartTimestamp": now,
            "ExecutionDetails": {"InputPayload": text},
        }
        record.operations[ident] = (0, execution_op)
        events = [
            add_event(
                record,
                "ExecutionStarted",
                {
                    "Input": ops.event_result(text),
                    "ExecutionTimeout": config.durable.execution_timeout,
                },
                execution_op,
                now,
            )
        ]
        if not await self._run(self.store.create, record, events):
            existing = await self._run(self.store.by_name, config.name, name)
            if existing is None:  # deleted in between: vanishingly rare
                raise ResourceConflictError("The execution name is being reused; try again.")
            return self._same_start(existing, config, text), False
        return record, True

    @staticmethod
    def _same_start(
        existing: ExecutionRecord, config: FunctionConfig, text: str
    ) -> ExecutionRecord:
        if existing.version != config.version or existing.input != text:
            raise DurableExecutionAlreadyStartedError(
                f"Durable execution with name {existing.name} already exists with a "
                "different input or function version."
            )
        return existing

    # ---- invocations ------------------------------------------------------------------

    async def _begin_invocation(self, arn: str, lease_s: float) -> Invocation | None:
        async with self._lock(arn):
            record = await self._load(arn)
            if record.status != "RUNNING" or record.token is not None:
                return None
            now = self._clock()
            changed, events = fire_due(record, now)
            if record.deadline.timestamp() <= now:
                await self._time_out(record, events)
                return None
            record.token = ops.new_token()
            record.invocation = str(uuid.uuid4())
            record.claimed_until = to_datetime(now + lease_s)
            updated = record.updated_ops
            record.updated_ops = []
            await self._save(record, changed, events)
            self._active[arn] = record
            documents = [doc for _, doc in sorted(record.operations.values(), key=lambda x: x[0])]
            event = {
                "DurableExecutionArn": arn,
                "CheckpointToken": record.token,
                "InitialExecutionState": ops.initial_state(
                    documents, STATE_PAGE_MAX, INITIAL_STATE_MAX_BYTES
                ),
                "UpdatedOperationIds": updated,
            }
            return Invocation(
                arn,
                record.function_name,
                record.version,
                record.token,
                json.dumps(event).encode(),
                record.invocation,
            )

    async def _end_invocation(
        self,
        inv: Invocation,
        output: dict[str, Any] | None,
        failure: dict[str, Any] | None,
        request_id: str,
        started: float,
    ) -> Outcome:
        """Record how an invocation ended: its output (`{"Status", "Result", "Error"}`) or
        `failure` (the invocation itself failed: crash, timeout, unreadable output)."""
        async with self._lock(inv.arn):
            record = await self._load(inv.arn)
            if record.invocation != inv.invocation_id:
                # Stopped or timed out meanwhile: nothing of this invocation counts.
                self._active.pop(inv.arn, None)
                return Outcome(ended=record.status not in ACTIVE)
            record.token = None
            record.invocation = None
            record.claimed_until = None
            self._last_checkpoint.pop(inv.arn, None)
            self._active.pop(inv.arn, None)
            now = self._clock()
            pausing = record.status == "PAUSING"
            completed: dict[str, Any] = {
                "StartTimestamp": started,
                "EndTimestamp": now,
                "RequestId": request_id,
            }
            status = (output or {}).get("Status")
            if failure is None and status not in ("SUCCEEDED", "FAILED", "PENDING"):
                failure = {
                    "ErrorType": "InvalidDurableExecutionOutput",
                    "ErrorMessage": "The function did not return a durable execution status.",
                }
            if failure is not None and failure.get("ErrorType") in _NOT_RAN:
                # The function did not run (throttled): nothing to record; try again later,
                # and not as one of the failed invocations.
                record.wake_at = to_datetime(now + THROTTLE_RETRY_S)
                if pausing:
                    paused = pauses.settle(record, now, interrupted=True)
                    await self._save(record, [execution_op_id(record)], paused)
                    return Outcome(ended=False)
                await self._save(record, [], [])
                return Outcome(ended=False, wake_at=now + THROTTLE_RETRY_S)
            if failure is not None:
                completed["Error"] = ops.event_error(failure)
            events = [add_event(record, "InvocationCompleted", completed, None, now)]
            execution_op = record.operations.get(execution_op_id(record))
            if (
                execution_op
                and execution_op[1]["Status"] in ops.TERMINAL
                and record.status in ("RUNNING", "PAUSING")
            ):
                # The SDK checkpointed the EXECUTION's end itself (a large result).
                doc = execution_op[1]
                status_done = doc["Status"]
                end_execution(
                    self._clock(),
                    record,
                    status_done,
                    events,
                    result=record.result,
                    error=record.error,
                )
            elif failure is not None:
                record.failures += 1
                if record.failures > INVOCATION_RETRIES:
                    end_execution(self._clock(), record, "FAILED", events, error=failure)
                elif pausing:  # tried again on resume
                    events += pauses.settle(record, now, interrupted=True)
                    await self._save(record, [execution_op_id(record)], events)
                    return Outcome(ended=False, wake_at=wake_at(record))
                else:
                    await self._save(record, [], events)
                    return Outcome(ended=False, again=True)
            elif status == "SUCCEEDED":
                result = output.get("Result") if output else None
                end_execution(
                    self._clock(),
                    record,
                    "SUCCEEDED",
                    events,
                    result=result
                    if isinstance(result, str)
                    else None
                    if result is None
                    else json.dumps(result),
                )
            elif status == "FAILED":
                error = output.get("Error") if output else None
                end_execution(
                    self._clock(),
                    record,
                    "FAILED",
                    events,
                    error=error if isinstance(error, dict) else None,
                )
            else:
                record.failures = 0
                again = bool(record.updated_ops) or any(
                    (t := ops.next_timer(d)) is not None and t <= now
                    for _, d in record.operations.values()
                )
                record.wake_at = to_datetime(wake_at(record) or now)
                if pausing:
                    events += pauses.settle(record, now, interrupted=again)
                    await self._save(record, [execution_op_id(record)], events)
                    return Outcome(ended=False, wake_at=record.wake_at.timestamp())
                await self._save(record, [], events)
                return Outcome(ended=False, again=again, wake_at=record.wake_at.timestamp())
            await self._save(record, list(record.operations), events)
            self._ended(record)
            return Outcome(ended=True)

    async def _wake(self, arn: str) -> Outcome:
        """A timer of the execution is due (or its deadline): time out, or say to invoke."""
        async with self._lock(arn):
            try:
                record = await self._load(arn)
            except LaminaError:
                return Outcome(ended=True)
            if record.status not in ACTIVE:
                return Outcome(ended=True)
            if record.status == "PAUSED":
                wake = await pauses.wake_paused(self, record)
                return Outcome(ended=wake is None, wake_at=wake)
            if record.token is not None:
                return Outcome(ended=False)  # running: it reads the state when it ends
            now = self._clock()
            if record.deadline.timestamp() <= now:
                await self._time_out(record, [])
                return Outcome(ended=True)
            # `wake_at`: the earliest timer when it suspended, or now for an invocation that
            # was cut off and is to be replayed.
            wake = record.wake_at.timestamp() if record.wake_at else wake_at(record)
            if wake is not None and wake <= now:
                return Outcome(ended=False, again=True)
            return Outcome(ended=False, wake_at=wake)

    # ---- the data plane the SDKs call ------------------------------------------------

    async def _checkpoint(
        self, arn: str, token: Any, updates: Any, client_token: Any
    ) -> dict[str, Any]:
        """CheckpointDurableExecution: apply `updates` in order; the new token and the
        operations changed (those sent, and those completed from outside meanwhile)."""
        if updates is None:
            updates = []
        if not isinstance(updates, list):
            raise InvalidParameterValueError("Updates must be a list.")
        total = sum(len(str(u.get("Payload") or "")) for u in updates if isinstance(u, dict))
        if total > ops.CHECKPOINT_MAX_BYTES:
            raise InvalidParameterValueError(
                "The checkpoint's payloads exceed the maximum size of "
                f"{ops.CHECKPOINT_MAX_BYTES} bytes."
            )
        async with self._lock(arn):
            record = await self._load(arn)
            last = self._last_checkpoint.get(arn)
            if last is not None and client_token and last[:2] == (client_token, token):
                # The same batch sent again (its answer was lost): the same answer.
                return last[2]
            self._check_token(record, token)
            now = self._clock()
            working = {op_id: doc for op_id, (_, doc) in record.operations.items()}
            applied: list[tuple[str, dict[str, Any], list[tuple[str, dict[str, Any]]]]] = []
            ending: dict[str, Any] | None = None
            for update in updates:
                ops.check_update(update, working)
                if update["Type"] == "EXECUTION":
                    ending = update
                    continue
                callback_id = (
                    ops.mint_callback_id(arn, update["Id"]) if update["Type"] == "CALLBACK" else ""
                )
                done = ops.apply_update(update, working.get(update["Id"]), now, callback_id)
                working[update["Id"]] = done.doc
                applied.append((update["Id"], done.doc, done.events))
            # Every update was valid: now change the record.
            events: list[dict[str, Any]] = []
            changed: list[str] = []
            next_seq = max((s for s, _ in record.operations.values()), default=0) + 1
            for op_id, doc, op_events in applied:
                seq = record.operations[op_id][0] if op_id in record.operations else next_seq
                next_seq = max(next_seq, seq + 1)
                record.operations[op_id] = (seq, doc)
                changed.append(op_id)
                for event_type, details in op_events:
                    events.append(add_event(record, event_type, details, doc, now))
            if ending is not None:
                if ending["Action"] == "SUCCEED":
                    record.result = ending.get("Payload")
                    status = "SUCCEEDED"
                else:
                    record.error = ending.get("Error")
                    status = "FAILED"
                op_id = execution_op_id(record)
                seq, doc = record.operations[op_id]
                record.operations[op_id] = (seq, {**doc, "Status": status, "EndTimestamp": now})
                changed.append(op_id)
            outside = [i for i in record.updated_ops if i not in changed]
            record.updated_ops = []
            # Each checkpoint spends its token and hands out the next, as on Lambda; after the
            # execution's own end there is no next.
            record.token = ops.new_token()
            await self._save(record, changed, events)
            shown = [ops.wire(record.operations[i][1]) for i in dict.fromkeys(changed + outside)]
            answer: dict[str, Any] = {"NewExecutionState": {"Operations": shown}}
            if ending is None:
                answer["CheckpointToken"] = record.token
            if isinstance(client_token, str) and client_token:
                self._last_checkpoint[arn] = (client_token, token, answer)
        for op_id, doc, _ in applied:
            if doc["Type"] == "CHAINED_INVOKE" and doc["Status"] == "STARTED":
                self.on_chained(arn, op_id, dict(doc.get("_invoke") or {}))
        return answer

    def _check_token(self, record: ExecutionRecord, token: Any) -> None:
        if not isinstance(token, str) or not token or token != record.token:
            raise InvalidParameterValueError("Invalid checkpoint token")

    async def state(self, arn: str, token: Any, marker: Any, max_items: Any) -> dict[str, Any]:
        """GetDurableExecutionState: a page of the operations, in checkpoint order."""
        record = await self._load(arn)
        self._check_token(record, token)
        start = ops.page_start(marker)
        size = ops.page_size(max_items, STATE_PAGE_MAX)
        documents = [doc for _, doc in sorted(record.operations.values(), key=lambda x: x[0])]
        page = documents[start : start + size]
        out: dict[str, Any] = {"Operations": [ops.wire(d) for d in page]}
        if start + size < len(documents):
            out["NextMarker"] = str(start + size)
        return out

    # ---- completions from outside ------------------------------------------------------

    async def _complete_attempt(
        self,
        arn: str,
        op_id: str,
        kind: str,
        status: str,
        result: str | None,
        error: dict[str, Any] | None,
    ) -> None:
        """Complete a started CALLBACK or CHAINED_INVOKE operation and tell the runner."""
        async with self._lock(arn):
            record = await self._load(arn)
            entry = record.operations.get(op_id)
            if entry is None or record.status not in ACTIVE or entry[1]["Status"] != "STARTED":
                raise ResourceNotFoundError("The operation is not waiting for a result.")
            seq, doc = entry
            doc = dict(doc)
            now = self._clock()
            doc["Status"] = status
            doc["EndTimestamp"] = now
            detail_key = "CallbackDetails" if kind == "Callback" else "ChainedInvokeDetails"
            details = dict(doc.get(detail_key) or {})
            if result is not None:
                details["Result"] = result
            if error is not None:
                details["Error"] = error
            doc[detail_key] = details
            record.operations[op_id] = (seq, doc)
            if status == "SUCCEEDED":
                event = add_event(
                    record, f"{kind}Succeeded", {"Result": ops.event_result(result)}, doc, now
                )
            else:
                event = add_event(
                    record, f"{kind}Failed", {"Error": ops.event_error(error)}, doc, now
                )
            record.updated_ops.append(op_id)
            await self._save(record, [op_id], [event])
        self.on_ready(arn)

    def _callback_target(self, callback_id: Any) -> tuple[str, str]:
        target = ops.parse_callback_id(callback_id) if isinstance(callback_id, str) else None
        if target is None:
            raise ResourceNotFoundError("Callback not found.")
        return target

    async def _callback_op(self, callback_id: str) -> tuple[ExecutionRecord, str, dict[str, Any]]:
        arn, op_id = self._callback_target(callback_id)
        try:
            record = await self._load(arn)
        except LaminaError:
            raise ResourceNotFoundError("Callback not found.") from None
        entry = record.operations.get(op_id)
        if (
            entry is None
            or (entry[1].get("CallbackDetails") or {}).get("CallbackId") != callback_id
        ):
            raise ResourceNotFoundError("Callback not found.")
        doc = entry[1]
        if doc["Status"] == "TIMED_OUT":
            raise CallbackTimeoutError("Callback has timed out.")
        if doc["Status"] != "STARTED" or record.status not in ACTIVE:
            raise InvalidParameterValueError("Callback has already completed.")
        return record, op_id, doc

    async def callback_success(self, callback_id: str, result: bytes) -> None:
        record, op_id, _ = await self._callback_op(callback_id)
        if len(result) > ops.OPERATION_PAYLOAD_MAX_BYTES:
            raise InvalidParameterValueError(
                f"The callback result exceeds {ops.OPERATION_PAYLOAD_MAX_BYTES} bytes."
            )
        try:
            text = result.decode()
        except UnicodeDecodeError:
            raise InvalidParameterValueError("The callback result must be UTF-8 text.") from None
        await self._complete(record.arn, op_id, "Callback", "SUCCEEDED", text, None)

    async def callback_failure(self, callback_id: str, error: Any) -> None:
        record, op_id, _ = await self._callback_op(callback_id)
        await self._complete(
            record.arn, op_id, "Callback", "FAILED", None, error if isinstance(error, dict) else {}
        )

    async def _callback_heartbeat(self, callback_id: str) -> None:
        record, op_id, doc = await self._callback_op(callback_id)
        async with self._lock(record.arn):
            record = await self._load(record.arn)
            seq, doc = record.operations[op_id]
            cb = dict(doc.get("_callback") or {})
            if cb.get("heartbeat_s"):
                cb["heartbeat_at"] = self._clock() + cb["heartbeat_s"]
                doc = {**doc, "_callback": cb}
                record.operations[op_id] = (seq, doc)
                if record.token is None:
                    record.wake_at = to_datetime(wake_at(record) or self._clock())
                await self._save(record, [op_id], [])
        self.on_ready(record.arn)  # the runner re-reads the timers

    async def chained_done(
        self, arn: str, op_id: str, result: str | None, error: dict[str, Any] | None
    ) -> None:
        """A chained invoke's target finished."""
        status = "SUCCEEDED" if error is None else "FAILED"
        # LaminaError: the execution ended meanwhile
        with contextlib.suppress(LaminaError):
            await self._complete(arn, op_id, "ChainedInvoke", status, result, error)

    # ---- the control plane --------------------------------------------------------------

    async def _stop(self, arn: str, error: Any) -> float:
        async with self._lock(arn):
            record = await self._load(arn)
            if record.status not in ACTIVE:
                raise ResourceConflictError(f"Durable execution {arn} has already ended.")
            events: list[dict[str, Any]] = []
            end_execution(
                self._clock(),
                record,
                "STOPPED",
                events,
                error=error if isinstance(error, dict) else None,
            )
            await self._save(record, list(record.operations), events)
            self._ended(record)
        assert record.ended_at is not None
        return record.ended_at.timestamp()

    async def _delete(self, arn: str) -> float:
        """DeleteDurableExecution: an ended execution's state and history go now (a running
        one must be stopped first). When the deletion was requested."""
        async with self._lock(arn):
            record = await self._load(arn)
            if record.status in ACTIVE:
                raise ResourceConflictError(
                    f"Durable execution {arn} is running: stop it before deleting it."
                )
            await self._run(self.store.delete, arn)
            self._locks.pop(arn, None)
        return self._clock()

    async def get(self, arn: str) -> ExecutionRecord:
        return await self._load(arn)

    async def history(self, arn: str) -> list[dict[str, Any]]:
        await self._load(arn)
        return list(await self._run(self.store.events, arn))

    async def of_function(self, function_name: str) -> list[ExecutionRecord]:
        return list(await self._run(self.store.of_function, function_name))

    async def running(self) -> list[ExecutionRecord]:
        return list(await self._run(self.store.running))

    async def _recover(self, arn: str, stale_only: bool) -> ExecutionRecord | None:
        """Forget the token of an invocation that was cut off (it cannot checkpoint any
        more), so that the execution is invoked again and replays: every such invocation
        after this server's restart, or (`stale_only`) one whose claim has lapsed (its node
        is gone). The execution, or None if it is gone or ended."""
        async with self._lock(arn):
            try:
                record = await self._load(arn)
            except LaminaError:
                return None
            if record.status not in ACTIVE:
                return None
            lapsed = (
                record.claimed_until is None or record.claimed_until.timestamp() < self._clock()
            )
            if record.token is not None and (lapsed or not stale_only):
                record.token = None
                record.invocation = None
                record.claimed_until = None
                record.wake_at = to_datetime(self._clock())
                self._active.pop(arn, None)
                paused: list[dict[str, Any]] = []
                if record.status == "PAUSING":  # its invocation is gone: replayed on resume
                    paused = pauses.settle(record, self._clock(), interrupted=True)
                await self._save(record, [execution_op_id(record)] if paused else [], paused)
            return record

    async def due(self) -> list[str]:
        """Executions to invoke now by the store's account (see `DurableStore.due`)."""
        return list(await self._run(self.store.due, datetime.now(UTC)))

    async def prune(self) -> int:
        """Delete ended executions past their retention."""
        return int(await self._run(self.store.delete_ended_before, datetime.now(UTC)))
