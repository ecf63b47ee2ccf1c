"""What happens to one durable execution's record by the service's own hand: its history
events numbered in order, its end, and its timers (waits that end, retries that come due,
callbacks that time out). Plain functions over a `store.durable.ExecutionRecord`; the
caller (`control.durable`) holds the execution's lock and writes the record after."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lamina.control import durable_ops as ops
from lamina.store.durable import ExecutionRecord

_END_EVENTS = {
    "SUCCEEDED": "ExecutionSucceeded",
    "FAILED": "ExecutionFailed",
    "TIMED_OUT": "ExecutionTimedOut",
    "STOPPED": "ExecutionStopped",
}


def to_datetime(t: float) -> datetime:
    """Seconds since the epoch as an aware UTC datetime."""
    return datetime.fromtimestamp(t, UTC)


def execution_op_id(record: ExecutionRecord) -> str:
    """The id of the execution's own EXECUTION operation (the last part of its ARN)."""
    return record.arn.rsplit("/", 1)[-1]


def add_event(
    record: ExecutionRecord,
    event_type: str,
    details: dict[str, Any] | None,
    op: dict[str, Any] | None,
    now: float,
) -> dict[str, Any]:
    """The next history event of the execution (its id taken from the record), about `op`
    when given (its id, name, parent and sub-type)."""
    event: dict[str, Any] = {
        "EventType": event_type,
        "EventId": record.next_event,
        "EventTimestamp": now,
    }
    record.next_event += 1
    if op is not None:
        event["Id"] = op["Id"]
        for key in ("Name", "ParentId", "SubType"):
            if op.get(key) is not None:
                event[key] = op[key]
    if details is not None:
        event[f"{event_type}Details"] = details
    return event


def end_execution(
    now: float,
    record: ExecutionRecord,
    status: str,
    events: list[dict[str, Any]],
    *,
    result: str | None = None,
    error: dict[str, Any] | None = None,
) -> None:
    """End the execution with `status` (SUCCEEDED, FAILED, TIMED_OUT, STOPPED): no
    invocation holds it any more, no timer wakes it; its end event joins `events`."""
    record.status = status
    record.ended_at = to_datetime(now)
    record.token = None
    record.invocation = None
    record.claimed_until = None
    record.wake_at = None
    record.result = result
    record.error = error
    if status == "SUCCEEDED":
        details: dict[str, Any] = {"Result": ops.event_result(result)}
    else:
        details = {"Error": ops.event_error(error)}
    # Lambda records an execution's end without an operation id (its start has one).
    events.append(add_event(record, _END_EVENTS[status], details, None, now))
    execution_op = record.operations.get(execution_op_id(record))
    if execution_op is not None:
        doc = dict(execution_op[1])
        doc["Status"] = status
        doc["EndTimestamp"] = now
        record.operations[doc["Id"]] = (execution_op[0], doc)


def fire_due(record: ExecutionRecord, now: float) -> tuple[list[str], list[dict[str, Any]]]:
    """Complete the operations whose timers are due (waits end, retries become READY,
    callbacks time out); the ids changed and the events recorded."""
    changed: list[str] = []
    events: list[dict[str, Any]] = []
    for op_id, (seq, doc) in list(record.operations.items()):
        due = ops.next_timer(doc)
        if due is None or due > now:
            continue
        doc = dict(doc)
        if doc["Type"] == "WAIT":
            doc["Status"] = "SUCCEEDED"
            doc["EndTimestamp"] = now
            duration = round(doc["WaitDetails"]["ScheduledEndTimestamp"] - doc["StartTimestamp"])
            events.append(add_event(record, "WaitSucceeded", {"Duration": duration}, doc, now))
        elif doc["Type"] == "STEP":
            doc["Status"] = "READY"  # Lambda records no event for it
        else:
            doc["Status"] = "TIMED_OUT"
            doc["EndTimestamp"] = now
            error = {"ErrorType": "CallbackTimeout", "ErrorMessage": "Callback timed out"}
            doc["CallbackDetails"] = {**doc["CallbackDetails"], "Error": error}
            details = {"Error": ops.event_error(error)}
            events.append(add_event(record, "CallbackTimedOut", details, doc, now))
        record.operations[op_id] = (seq, doc)
        changed.append(op_id)
    return changed, events


def wake_at(record: ExecutionRecord) -> float:
    """When the execution must next be looked at: its earliest timer, or its deadline."""
    times = [t for _, d in record.operations.values() if (t := ops.next_timer(d)) is not None]
    times.append(record.deadline.timestamp())
    return min(times)
