"""Pausing and resuming durable executions (PauseDurableExecution, ResumeDurableExecution).

A paused execution is not invoked; its waits, callbacks and chained invokes still complete
(their results are recorded and handed to the function once it resumes). If an invocation
runs when the pause is asked for, the execution is PAUSING until that invocation ends, then
PAUSED. The pause's state lives in the execution's own EXECUTION operation document under
private members (`_pause`, `_tokens`), so it is written with the execution in one
transaction and needs no column of its own.

The functions here run under `DurableExecutions`' per-execution lock, which
`control.durable` takes; they change the record it loaded and save it through it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any

from lamina.control import durable_ops as ops
from lamina.control.durable_log import (
    add_event,
    execution_op_id,
    fire_due,
    to_datetime,
    wake_at,
)
from lamina.errors import InvalidParameterValueError, ResourceConflictError
from lamina.store.durable import ExecutionRecord

if TYPE_CHECKING:
    from lamina.control.durable import DurableExecutions

#: the statuses of an execution that has not ended
ACTIVE = frozenset({"RUNNING", "PAUSING", "PAUSED"})
#: how long a pause or resume request's ClientToken makes a repeat of it succeed
CLIENT_TOKEN_WINDOW_S = 15 * 60.0
#: a paused execution timeout never carries the execution past this long after its start
MAX_LIFETIME = timedelta(days=366)
REASON_MAX = 1024


def _execution_doc(record: ExecutionRecord) -> tuple[str, int, dict[str, Any]]:
    op_id = execution_op_id(record)
    seq, doc = record.operations[op_id]
    return op_id, seq, dict(doc)


def pause_state(record: ExecutionRecord) -> dict[str, Any] | None:
    """The execution's pause (PAUSING or PAUSED), or None."""
    if record.status not in ("PAUSING", "PAUSED"):
        return None
    entry = record.operations.get(execution_op_id(record))
    state = entry[1].get("_pause") if entry else None
    return state if isinstance(state, dict) else None


def _check(client_token: Any, reason: Any) -> None:
    if client_token is not None and (not isinstance(client_token, str) or not client_token):
        raise InvalidParameterValueError("ClientToken must be a non-empty string.")
    if reason is not None and (not isinstance(reason, str) or len(reason) > REASON_MAX):
        raise InvalidParameterValueError(
            f"Reason must be a string of at most {REASON_MAX} characters."
        )


def _repeated(doc: dict[str, Any], client_token: str | None, action: str, now: float) -> bool:
    """Whether this request repeats one already done (same ClientToken, same action, within
    the window); else remember its token in `doc`."""
    if client_token is None:
        return False
    tokens = {
        k: v
        for k, v in (doc.get("_tokens") or {}).items()
        if now - float(v[1]) < CLIENT_TOKEN_WINDOW_S
    }
    seen = tokens.get(client_token)
    if seen is not None and seen[0] == action:
        return True
    tokens[client_token] = [action, now]
    doc["_tokens"] = tokens
    return False


def settle(record: ExecutionRecord, now: float, interrupted: bool) -> list[dict[str, Any]]:
    """A PAUSING execution whose invocation has ended (or was cut off) becomes PAUSED;
    `interrupted`: the function has work left that only an invocation does (it is invoked
    on resume). The events recorded (its ExecutionPaused)."""
    op_id, seq, doc = _execution_doc(record)
    state = dict(doc.get("_pause") or {})
    state["paused_at"] = now
    state["interrupted"] = bool(state.get("interrupted")) or interrupted
    doc["_pause"] = state
    record.operations[op_id] = (seq, doc)
    record.status = "PAUSED"
    record.wake_at = to_datetime(wake_at(record))
    return [_paused_event(record, state, now)]


def _paused_event(record: ExecutionRecord, state: dict[str, Any], now: float) -> dict[str, Any]:
    details: dict[str, Any] = {
        "PauseRequestTimestamp": state["requested_at"],
        "ExecutionTimeoutPaused": state["timeout_paused"],
    }
    if state.get("reason") is not None:
        details["Reason"] = {"Payload": state["reason"]}
    return add_event(record, "ExecutionPaused", details, None, now)


async def pause(
    ex: DurableExecutions,
    arn: str,
    client_token: Any,
    reason: Any,
    timeout_paused: Any,
) -> None:
    """PauseDurableExecution: PAUSED now, or PAUSING while an invocation runs."""
    _check(client_token, reason)
    if timeout_paused is None:
        timeout_paused = True
    if not isinstance(timeout_paused, bool):
        raise InvalidParameterValueError("ExecutionTimeoutPaused must be a boolean.")
    async with ex._lock(arn):
        record = await ex._load(arn)
        now = ex._clock()
        op_id, seq, doc = _execution_doc(record)
        if _repeated(doc, client_token, "pause", now):
            return
        if record.status in ("PAUSING", "PAUSED"):
            raise ResourceConflictError(f"Durable execution {arn} is already paused.")
        if record.status != "RUNNING":
            raise ResourceConflictError(f"Durable execution {arn} has already ended.")
        doc["_pause"] = {
            "requested_at": now,
            "reason": reason,
            "timeout_paused": timeout_paused,
            "interrupted": False,
        }
        record.operations[op_id] = (seq, doc)
        events: list[dict[str, Any]] = []
        if record.token is not None:
            record.status = "PAUSING"  # PAUSED when the running invocation ends
        else:
            events = settle(record, now, interrupted=False)
        await ex._save(record, [op_id], events)


async def resume(ex: DurableExecutions, arn: str, client_token: Any, reason: Any) -> None:
    """ResumeDurableExecution: a PAUSING execution carries on as if never paused; a PAUSED
    one runs again, invoked now if it has something to do."""
    _check(client_token, reason)
    again = False
    async with ex._lock(arn):
        record = await ex._load(arn)
        now = ex._clock()
        op_id, seq, doc = _execution_doc(record)
        if _repeated(doc, client_token, "resume", now):
            return
        if record.status not in ("PAUSING", "PAUSED"):
            raise ResourceConflictError(f"Durable execution {arn} is not paused.")
        state = dict(doc.pop("_pause", None) or {})
        events: list[dict[str, Any]] = []
        if record.status == "PAUSED":
            if state.get("timeout_paused"):
                paused_for = timedelta(seconds=max(0.0, now - float(state["paused_at"])))
                record.deadline = min(
                    record.deadline + paused_for, record.started_at + MAX_LIFETIME
                )
            details: dict[str, Any] = {"ResumeRequestTimestamp": now}
            if reason is not None:
                details["Reason"] = {"Payload": reason}
            events.append(add_event(record, "ExecutionResumed", details, None, now))
            again = (
                bool(state.get("interrupted"))
                or bool(record.updated_ops)
                or any(
                    (t := ops.next_timer(d)) is not None and t <= now
                    for _, d in record.operations.values()
                )
            )
            record.wake_at = to_datetime(now if again else wake_at(record))
        record.status = "RUNNING"
        record.operations[op_id] = (seq, doc)
        await ex._save(record, [op_id], events)
    if again:
        ex.on_ready(arn)


async def wake_paused(ex: DurableExecutions, record: ExecutionRecord) -> float | None:
    """A timer of a PAUSED execution is due (the caller holds its lock): record the waits
    that ended and the callbacks that timed out, without invoking; time the execution out
    if its timeout was left running. When to look again (None: it ended)."""
    now = ex._clock()
    state = pause_state(record) or {}
    changed, events = fire_due(record, now)
    if not state.get("timeout_paused") and record.deadline.timestamp() <= now:
        await ex._time_out(record, events)
        return None
    # completions are handed to the function once it resumes
    record.updated_ops.extend(i for i in changed if i not in record.updated_ops)
    record.wake_at = to_datetime(wake_at(record))
    if changed or events:
        await ex._save(record, changed, events)
    return record.wake_at.timestamp()
