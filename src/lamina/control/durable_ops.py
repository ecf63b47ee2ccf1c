"""How one checkpoint's `OperationUpdate` changes an execution's operation log, and which
history events Lambda records for it. Pure functions over wire-spelled dicts (timestamps in
seconds since the epoch); `control.durable` owns the execution around them.

The state machine (per operation type, as Lambda's durable API and AWS's testing library
define it):

- STEP: START -> STARTED; RETRY -> PENDING with Attempt+1 and NextAttemptTimestamp (READY when
  it is due); SUCCEED -> SUCCEEDED; FAIL -> FAILED.
- WAIT: START -> STARTED with ScheduledEndTimestamp (SUCCEEDED when it is due); CANCEL.
- CALLBACK: START -> STARTED with a minted CallbackId (completed from outside).
- CHAINED_INVOKE: START -> STARTED (the service invokes the target and completes it).
- CONTEXT: START -> STARTED; SUCCEED / FAIL.
- EXECUTION: SUCCEED / FAIL end the execution.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from lamina.errors import InvalidParameterValueError

TERMINAL = frozenset({"SUCCEEDED", "FAILED", "CANCELLED", "TIMED_OUT", "STOPPED"})
_TYPES = ("EXECUTION", "CONTEXT", "STEP", "WAIT", "CALLBACK", "CHAINED_INVOKE")
_ACTIONS = {
    "EXECUTION": ("SUCCEED", "FAIL"),
    "CONTEXT": ("START", "SUCCEED", "FAIL"),
    "STEP": ("START", "SUCCEED", "FAIL", "RETRY"),
    "WAIT": ("START", "CANCEL"),
    "CALLBACK": ("START",),
    "CHAINED_INVOKE": ("START",),
}
#: the limit on one checkpoint batch's payloads (750 KB, as the SDKs document it)
CHECKPOINT_MAX_BYTES = 750 * 1024
#: Lambda's limit on one operation's payload
OPERATION_PAYLOAD_MAX_BYTES = 256 * 1024


def event_error(error: dict[str, Any] | None) -> dict[str, Any]:
    return {"Payload": error or {}, "Truncated": False}


def event_result(payload: str | None) -> dict[str, Any]:
    return {"Payload": payload or "", "Truncated": False}


class Applied:
    """What one update did: the operation's new document and the events to record."""

    def __init__(self, doc: dict[str, Any], events: list[tuple[str, dict[str, Any]]]) -> None:
        self.doc = doc
        self.events = events


def check_update(update: Any, ops: dict[str, dict[str, Any]]) -> None:
    """Refuse an update Lambda would refuse (InvalidParameterValueException)."""
    if not isinstance(update, dict):
        raise InvalidParameterValueError("An operation update must be a structure.")
    op_type, action, op_id = update.get("Type"), update.get("Action"), update.get("Id")
    if not isinstance(op_id, str) or not op_id:
        raise InvalidParameterValueError("An operation update must have an Id.")
    if op_type not in _TYPES:
        raise InvalidParameterValueError(f"Invalid operation type: {op_type}.")
    if action not in _ACTIONS[op_type]:
        raise InvalidParameterValueError(f"Invalid action {action} for {op_type} operation.")
    _check_members(update)
    payload = update.get("Payload")
    if payload is not None and len(str(payload).encode()) > OPERATION_PAYLOAD_MAX_BYTES:
        raise InvalidParameterValueError(
            f"The payload of operation {op_id} exceeds the maximum size of "
            f"{OPERATION_PAYLOAD_MAX_BYTES} bytes."
        )
    if op_type == "WAIT" and action == "START" and not update.get("WaitOptions"):
        raise InvalidParameterValueError("A WAIT operation's START needs WaitOptions.")
    current = ops.get(op_id)
    parent = update.get("ParentId")
    if parent is not None and parent not in ops:
        raise InvalidParameterValueError(f"Parent operation {parent} does not exist.")
    if current is None:
        if (
            op_type != "EXECUTION"
            and action != "START"
            and not (op_type == "STEP" and action in ("SUCCEED", "FAIL", "RETRY"))
        ):
            raise InvalidParameterValueError(f"Operation {op_id} has not been started.")
        return
    if current["Type"] != op_type:
        raise InvalidParameterValueError(
            f"Operation {op_id} is a {current['Type']} operation, not {op_type}."
        )
    if current["Status"] in TERMINAL:
        raise InvalidParameterValueError(f"Operation {op_id} has already completed.")
    if action == "START" and current["Status"] not in ("READY", "PENDING"):
        raise InvalidParameterValueError(f"Operation {op_id} has already started.")


#: each options structure's integer members, with the model's bounds
_OPTION_INTEGERS = {
    "StepOptions": {"NextAttemptDelaySeconds": (1, 31622400)},
    "WaitOptions": {"WaitSeconds": (1, 31622400)},
    "CallbackOptions": {"TimeoutSeconds": (0, 99999999), "HeartbeatTimeoutSeconds": (0, 99999999)},
}


def _check_members(update: dict[str, Any]) -> None:
    """The update's members have the model's types (a client that skips botocore's own
    validation gets Lambda's refusal, not a server error)."""
    op_id = update["Id"]
    for key in ("ParentId", "Name", "SubType", "Payload"):
        if update.get(key) is not None and not isinstance(update[key], str):
            raise InvalidParameterValueError(f"{key} of operation {op_id} must be a string.")
    if len(op_id) > 64:
        raise InvalidParameterValueError(f"Operation id {op_id[:64]}... is too long.")
    for key in (
        "Error",
        "StepOptions",
        "WaitOptions",
        "CallbackOptions",
        "ContextOptions",
        "ChainedInvokeOptions",
    ):
        if update.get(key) is not None and not isinstance(update[key], dict):
            raise InvalidParameterValueError(f"{key} of operation {op_id} must be a structure.")
    for key, members in _OPTION_INTEGERS.items():
        for member, (low, high) in members.items():
            value = (update.get(key) or {}).get(member)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise InvalidParameterValueError(
                    f"{key}.{member} of operation {op_id} must be an integer from {low} to {high}."
                )
    invoke = update.get("ChainedInvokeOptions")
    starts_invoke = update["Type"] == "CHAINED_INVOKE" and update["Action"] == "START"
    if starts_invoke and (not invoke or not isinstance(invoke.get("FunctionName"), str)):
        raise InvalidParameterValueError(
            f"ChainedInvokeOptions.FunctionName of operation {op_id} is required."
        )


def apply_update(
    update: dict[str, Any],
    current: dict[str, Any] | None,
    now: float,
    callback_id: str,
) -> Applied:
    """The operation `update` makes of `current` (checked by `check_update`) at `now`."""
    op_type, action = update["Type"], update["Action"]
    doc: dict[str, Any] = (
        dict(current)
        if current
        else {
            "Id": update["Id"],
            "Type": op_type,
            "StartTimestamp": now,
            "Status": "STARTED",
        }
    )
    for key in ("ParentId", "Name", "SubType"):
        if update.get(key) is not None:
            doc[key] = update[key]
    payload, error = update.get("Payload"), update.get("Error")
    events: list[tuple[str, dict[str, Any]]] = []
    pretty = op_type.title().replace("_", "")  # Step, Wait, ChainedInvoke...
    if op_type == "STEP":
        details = dict(doc.get("StepDetails") or {"Attempt": 0})
        if action == "START":
            doc["Status"] = "STARTED"
            details.pop("NextAttemptTimestamp", None)
            events.append(("StepStarted", {}))
        elif action == "RETRY":
            delay = int((update.get("StepOptions") or {}).get("NextAttemptDelaySeconds") or 0)
            details["Attempt"] = int(details.get("Attempt", 0)) + 1
            details["NextAttemptTimestamp"] = now + delay
            if payload is not None:
                details["Result"] = payload
            if error is not None:
                details["Error"] = error
            doc["Status"] = "PENDING"
            events.append(
                (
                    "StepFailed",
                    {
                        "Error": event_error(error),
                        "RetryDetails": {
                            "CurrentAttempt": details["Attempt"],
                            "NextAttemptDelaySeconds": delay,
                        },
                    },
                )
            )
        else:
            details["Attempt"] = int(details.get("Attempt", 0)) + 1
            details.pop("NextAttemptTimestamp", None)
            retry = {"CurrentAttempt": details["Attempt"]}
            if action == "SUCCEED":
                doc["Status"] = "SUCCEEDED"
                if payload is not None:
                    details["Result"] = payload
                events.append(
                    ("StepSucceeded", {"Result": event_result(payload), "RetryDetails": retry})
                )
            else:
                doc["Status"] = "FAILED"
                if error is not None:
                    details["Error"] = error
                events.append(("StepFailed", {"Error": event_error(error), "RetryDetails": retry}))
        doc["StepDetails"] = details
    elif op_type == "WAIT":
        if action == "START":
            seconds = int(update["WaitOptions"].get("WaitSeconds") or 1)
            doc["Status"] = "STARTED"
            doc["WaitDetails"] = {"ScheduledEndTimestamp": now + seconds}
            events.append(
                ("WaitStarted", {"Duration": seconds, "ScheduledEndTimestamp": now + seconds})
            )
        else:
            doc["Status"] = "CANCELLED"
            events.append(("WaitCancelled", {"Error": event_error(error)}))
    elif op_type == "CALLBACK":
        options = update.get("CallbackOptions") or {}
        timeout = int(options.get("TimeoutSeconds") or 0)
        heartbeat = int(options.get("HeartbeatTimeoutSeconds") or 0)
        doc["Status"] = "STARTED"
        doc["CallbackDetails"] = {"CallbackId": callback_id}
        # Kept beside the wire document (stripped from answers): when it times out.
        doc["_callback"] = {
            "timeout_at": now + timeout if timeout else None,
            "heartbeat_s": heartbeat or None,
            "heartbeat_at": now + heartbeat if heartbeat else None,
        }
        started: dict[str, Any] = {"CallbackId": callback_id}
        if timeout:
            started["Timeout"] = timeout
        if heartbeat:
            started["HeartbeatTimeout"] = heartbeat
        events.append(("CallbackStarted", started))
    elif op_type == "CHAINED_INVOKE":
        options = update.get("ChainedInvokeOptions") or {}
        doc["Status"] = "STARTED"
        doc["ChainedInvokeDetails"] = {}
        doc["_invoke"] = {
            "function": options.get("FunctionName"),
            "tenant": options.get("TenantId"),
            "input": payload or "",
        }
        started = {
            "FunctionName": options.get("FunctionName") or "",
            "Input": event_result(payload),
        }
        if options.get("TenantId"):
            started["TenantId"] = options["TenantId"]
        events.append(("ChainedInvokeStarted", started))
    elif op_type == "CONTEXT":
        details = dict(doc.get("ContextDetails") or {})
        if (update.get("ContextOptions") or {}).get("ReplayChildren"):
            details["ReplayChildren"] = True
        if action == "START":
            doc["Status"] = "STARTED"
            events.append(("ContextStarted", {}))
        elif action == "SUCCEED":
            doc["Status"] = "SUCCEEDED"
            if payload is not None:
                details["Result"] = payload
            events.append(("ContextSucceeded", {"Result": event_result(payload)}))
        else:
            doc["Status"] = "FAILED"
            if error is not None:
                details["Error"] = error
            events.append(("ContextFailed", {"Error": event_error(error)}))
        doc["ContextDetails"] = details
    del pretty
    if doc["Status"] in TERMINAL:
        doc["EndTimestamp"] = now
    return Applied(doc, events)


def mint_callback_id(arn: str, op_id: str) -> str:
    """A callback id: names its execution and operation, with a secret nonce (the id is the
    only credential SendDurableExecutionCallback* asks for besides the caller's own)."""
    raw = f"{arn}\n{op_id}\n{secrets.token_urlsafe(16)}"
    return base64.b64encode(raw.encode()).decode()


def parse_callback_id(callback_id: str) -> tuple[str, str] | None:
    """(execution ARN, operation id) a callback id names, or None if it is not one."""
    try:
        raw = base64.b64decode(callback_id, validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    parts = raw.split("\n")
    if len(parts) != 3:
        return None
    return parts[0], parts[1]


def wire(doc: dict[str, Any]) -> dict[str, Any]:
    """The operation as the API answers it (without Lamina's private members)."""
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def initial_state(documents: list[dict[str, Any]], page_max: int, max_bytes: int) -> dict[str, Any]:
    """An invocation event's InitialExecutionState: the first page of the operations (in
    checkpoint order) that fits in `max_bytes`, with the marker of the rest."""
    # The event must fit Lambda's invoke payload: the SDK reads the rest of a long log page
    # by page (GetDurableExecutionState from the NextMarker).
    page: list[dict[str, Any]] = []
    size = 0
    for doc in documents[:page_max]:
        shown = for_invocation(doc)
        size += len(json.dumps(shown))
        if page and size > max_bytes:
            break
        page.append(shown)
    state: dict[str, Any] = {"Operations": page}
    if len(page) < len(documents):
        state["NextMarker"] = str(len(page))
    return state


def for_invocation(doc: dict[str, Any]) -> dict[str, Any]:
    """The operation as the invocation's event carries it: timestamps in milliseconds (the
    SDKs read the event as JSON, not through botocore)."""
    out = wire(doc)
    for key in ("StartTimestamp", "EndTimestamp"):
        if key in out:
            out[key] = int(out[key] * 1000)
    if "StepDetails" in out and "NextAttemptTimestamp" in out["StepDetails"]:
        out["StepDetails"] = dict(out["StepDetails"])
        out["StepDetails"]["NextAttemptTimestamp"] = int(
            out["StepDetails"]["NextAttemptTimestamp"] * 1000
        )
    if "WaitDetails" in out and "ScheduledEndTimestamp" in out["WaitDetails"]:
        out["WaitDetails"] = {
            "ScheduledEndTimestamp": int(out["WaitDetails"]["ScheduledEndTimestamp"] * 1000)
        }
    return out


def next_timer(doc: dict[str, Any]) -> float | None:
    """When the service must next act on this operation by itself (None: never)."""
    status = doc["Status"]
    if doc["Type"] == "WAIT" and status == "STARTED":
        return float(doc["WaitDetails"]["ScheduledEndTimestamp"])
    if doc["Type"] == "STEP" and status == "PENDING":
        return float(doc["StepDetails"].get("NextAttemptTimestamp") or 0)
    if doc["Type"] == "CALLBACK" and status == "STARTED":
        cb = doc.get("_callback") or {}
        times = [t for t in (cb.get("timeout_at"), cb.get("heartbeat_at")) if t]
        return float(min(times)) if times else None
    return None


def new_token() -> str:
    """A checkpoint token: random, in the model's base64 alphabet."""
    return secrets.token_urlsafe(32).replace("-", "+").replace("_", "/")


def page_start(marker: Any) -> int:
    """Where a page starts (a Marker is the index of its first item)."""
    if marker in (None, ""):
        return 0
    if not isinstance(marker, str) or not marker.isdigit():
        raise InvalidParameterValueError("Invalid marker.")
    return int(marker)


def page_size(value: Any, default: int) -> int:
    """A MaxItems (0 or none: `default`), 0-1000 as the model allows."""
    if value in (None, "", 0, "0"):
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise InvalidParameterValueError("MaxItems must be an integer.") from None
    if n < 0 or n > 1000:
        raise InvalidParameterValueError("MaxItems must be between 0 and 1000.")
    return n
