"""Lambda's durable-execution API (2025-12-01): the data plane the SDKs call from inside a
function (CheckpointDurableExecution, GetDurableExecutionState) and the control plane
(Get/List/Stop, history, callbacks). Parse, call `control.durable`, serialise; and the Invoke
of a durable function (`invoke_durable`), which starts an execution."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from lamina import untrusted_json
from lamina.api.context import AppState, app_state
from lamina.api.wire import json_body, json_response
from lamina.control.durable import DurableExecutions
from lamina.control.durable_pause import pause_state
from lamina.errors import InvalidParameterValueError, ServiceError
from lamina.events.durable import SYNC_WAIT_MAX_S, DurableRunner, outcome_of
from lamina.models import FunctionConfig
from lamina.store.durable import ExecutionRecord

PREFIX = "/2025-12-01"
_EXECUTION = PREFIX + "/durable-executions/{arn:path}"
_CALLBACK = PREFIX + "/durable-execution-callbacks/{callback_id:path}"
_STATUSES = ("RUNNING", "PAUSING", "PAUSED", "SUCCEEDED", "FAILED", "TIMED_OUT", "STOPPED")


def _runner(request: Request) -> DurableRunner:
    return _served(app_state(request))


def _served(state: AppState) -> DurableRunner:
    if state.durable is None:
        raise ServiceError("Durable executions are not served by this server.")
    return state.durable


def _executions(request: Request) -> DurableExecutions:
    return _runner(request).executions


def _bool(value: str | None) -> bool:
    return value is not None and value.lower() == "true"


def _ts(t: datetime) -> float:
    return round(t.timestamp(), 3)


def _function_arn(state: AppState, record: ExecutionRecord) -> str:
    return state.functions.arn(record.function_name, record.version)


def _summary(state: AppState, record: ExecutionRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "DurableExecutionArn": record.arn,
        "DurableExecutionName": record.name,
        "FunctionArn": _function_arn(state, record),
        "Status": record.status,
        "StartTimestamp": _ts(record.started_at),
    }
    if record.ended_at is not None:
        out["EndTimestamp"] = _ts(record.ended_at)
    return out


async def checkpoint(request: Request) -> Response:
    started = time.perf_counter()
    body = await json_body(request)
    arn = request.path_params["arn"]
    out = await _executions(request).checkpoint(
        arn, body.get("CheckpointToken"), body.get("Updates"), body.get("ClientToken")
    )
    function = arn.partition(":function:")[2].partition(":")[0]
    app_state(request).metrics.durable_checkpoint.labels(function).observe(
        time.perf_counter() - started
    )
    return json_response(out)


async def get_state(request: Request) -> Response:
    q = request.query_params
    out = await _executions(request).state(
        request.path_params["arn"], q.get("CheckpointToken"), q.get("Marker"), q.get("MaxItems")
    )
    return json_response(out)


async def get_execution(request: Request) -> Response:
    state = app_state(request)
    record = await _executions(request).get(request.path_params["arn"])
    include = request.query_params.get("IncludeExecutionData")
    out = _summary(state, record)
    if include is None or _bool(include):
        out["InputPayload"] = record.input
        if record.result is not None:
            out["Result"] = record.result
        if record.error is not None:
            out["Error"] = record.error
        out["ExecutionDataIncluded"] = True
    else:
        out["ExecutionDataIncluded"] = False
    out["Version"] = record.version
    out["ExpectedExecutionTimeoutTimestamp"] = _ts(record.deadline)
    paused = pause_state(record)
    if paused is not None:
        details: dict[str, Any] = {
            "PauseRequestTimestamp": round(paused["requested_at"], 3),
            "ExecutionTimeoutPaused": paused["timeout_paused"],
        }
        if out["ExecutionDataIncluded"] and paused.get("reason") is not None:
            details["Reason"] = paused["reason"]
        out["PauseDetails"] = details
    config = state.functions.version(record.function_name, record.version)
    if config is not None and config.durable is not None:
        out["DurableConfig"] = {
            "ExecutionTimeout": config.durable.execution_timeout,
            "RetentionPeriodInDays": config.durable.retention_days,
        }
    return json_response(out)


async def get_history(request: Request) -> Response:
    q = request.query_params
    events = await _executions(request).history(request.path_params["arn"])
    include = q.get("IncludeExecutionData")
    if include is not None and not _bool(include):
        events = [_without_data(e) for e in events]
    if _bool(q.get("ReverseOrder")):
        events.reverse()
    page, marker = _page(events, q.get("Marker"), q.get("MaxItems"))
    out: dict[str, Any] = {"Events": page}
    if marker is not None:
        out["NextMarker"] = marker
    return json_response(out)


def _without_data(event: dict[str, Any]) -> dict[str, Any]:
    """An event without its payloads (IncludeExecutionData=false)."""
    out = dict(event)
    for key, value in event.items():
        if key.endswith("Details") and isinstance(value, dict):
            details = dict(value)
            for member in ("Result", "Input", "Reason"):
                if isinstance(details.get(member), dict):
                    details[member] = {"Truncated": True}
            out[key] = details
    return out


def _page(
    items: list[Any], marker: str | None, max_items: str | None
) -> tuple[list[Any], str | None]:
    start = 0
    if marker:
        if not marker.isdigit():
            raise InvalidParameterValueError("Invalid marker.")
        start = int(marker)
    size = 1000
    if max_items not in (None, ""):
        try:
            size = int(max_items)
        except ValueError:
            raise InvalidParameterValueError("MaxItems must be an integer.") from None
        if size < 0 or size > 1000:
            raise InvalidParameterValueError("MaxItems must be between 0 and 1000.")
        size = size or 1000
    page = items[start : start + size]
    return page, (str(start + size) if start + size < len(items) else None)


async def list_by_function(request: Request) -> Response:
    state = app_state(request)
    q = request.query_params
    ref = state.functions.ref(request.path_params["name"], q.get("Qualifier"), namespaced=True)
    state.functions.require(ref.name)
    records = await _executions(request).of_function(ref.name)
    version = ref.qualifier
    if version is not None:
        config = await state.functions.resolve_current(ref)
        version = config.version
        records = [r for r in records if r.version == version]
    if name := q.get("DurableExecutionName"):
        records = [r for r in records if r.name == name]
    statuses = q.getlist("Statuses")
    for s in statuses:
        if s not in _STATUSES:
            raise InvalidParameterValueError(f"Invalid status: {s}")
    if statuses:
        records = [r for r in records if r.status in statuses]
    bounds: tuple[tuple[str, Callable[[ExecutionRecord, datetime], bool]], ...] = (
        ("StartedAfter", lambda r, t: r.started_at >= t),
        ("StartedBefore", lambda r, t: r.started_at <= t),
    )
    for key, keep in bounds:
        raw = q.get(key)
        if raw:
            t = _parse_time(raw, key)
            records = [r for r in records if keep(r, t)]
    if _bool(q.get("ReverseOrder")):
        records.reverse()
    page, marker = _page(records, q.get("Marker"), q.get("MaxItems"))
    out: dict[str, Any] = {"DurableExecutions": [_summary(state, r) for r in page]}
    if marker is not None:
        out["NextMarker"] = marker
    return json_response(out)


def _parse_time(raw: str, key: str) -> datetime:
    """Epoch seconds or ISO 8601; InvalidParameterValueError for anything else, a time
    out of datetime's range included (it raises OverflowError or OSError, not ValueError)."""
    try:
        seconds: float | None = float(raw)
    except ValueError:
        seconds = None
    try:
        if seconds is not None:
            return datetime.fromtimestamp(seconds, UTC)
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise InvalidParameterValueError(f"Invalid timestamp for {key}: {raw}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def stop_execution(request: Request) -> Response:
    # The request's body is its Error (the model's payload member), if any.
    body = await json_body(request)
    when = await _executions(request).stop(request.path_params["arn"], body or None)
    return json_response({"StopTimestamp": round(when, 3)})


async def pause_execution(request: Request) -> Response:
    body = await json_body(request)
    await _executions(request).pause(
        request.path_params["arn"],
        body.get("ClientToken"),
        body.get("Reason"),
        body.get("ExecutionTimeoutPaused"),
    )
    return json_response({}, status=202)


async def resume_execution(request: Request) -> Response:
    body = await json_body(request)
    await _executions(request).resume(
        request.path_params["arn"], body.get("ClientToken"), body.get("Reason")
    )
    return json_response({}, status=202)


async def delete_execution(request: Request) -> Response:
    when = await _executions(request).delete(request.path_params["arn"])
    return json_response({"DeletionRequestTimestamp": round(when, 3)}, status=202)


async def callback_success(request: Request) -> Response:
    # The Result is the raw request body (a blob payload member).
    await _executions(request).callback_success(
        request.path_params["callback_id"], await request.body()
    )
    return json_response({})


async def callback_failure(request: Request) -> Response:
    body = await request.body()
    error: Any = None
    if body:
        try:
            error = untrusted_json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise InvalidParameterValueError("The error must be a JSON ErrorObject.") from None
    await _executions(request).callback_failure(request.path_params["callback_id"], error)
    return json_response({})


async def callback_heartbeat(request: Request) -> Response:
    await _executions(request).callback_heartbeat(request.path_params["callback_id"])
    return json_response({})


def routes() -> list[Route]:
    """The durable-execution routes (suffixed ones first: an ARN has slashes)."""
    return [
        Route(_EXECUTION + "/checkpoint", checkpoint, methods=["POST"]),
        Route(_EXECUTION + "/state", get_state, methods=["GET"]),
        Route(_EXECUTION + "/history", get_history, methods=["GET"]),
        Route(_EXECUTION + "/stop", stop_execution, methods=["POST"]),
        Route(_EXECUTION + "/pause", pause_execution, methods=["POST"]),
        Route(_EXECUTION + "/resume", resume_execution, methods=["POST"]),
        Route(_EXECUTION, get_execution, methods=["GET"]),
        Route(_EXECUTION, delete_execution, methods=["DELETE"]),
        Route(_CALLBACK + "/succeed", callback_success, methods=["POST"]),
        Route(_CALLBACK + "/fail", callback_failure, methods=["POST"]),
        Route(_CALLBACK + "/heartbeat", callback_heartbeat, methods=["POST"]),
        Route(PREFIX + "/functions/{name}/durable-executions", list_by_function, methods=["GET"]),
    ]


async def invoke_durable(
    state: AppState,
    config: FunctionConfig,
    headers: Mapping[str, str],
    payload: bytes,
    invocation_type: str,
    request_id: str,
) -> Response:
    """Invoke of a durable function: start (or find, by name) its execution; an Event
    invoke answers 202 at once, a RequestResponse one when the execution has ended."""
    runner = _served(state)
    name = headers.get("x-amz-durable-execution-name")
    record, created = await runner.executions.start(config, name, payload)
    if created:
        runner.kick(record.arn)
    out_headers = {
        "x-amzn-RequestId": request_id,
        "X-Amz-Durable-Execution-Arn": record.arn,
        "X-Amz-Executed-Version": record.version,
    }
    if invocation_type == "Event":
        return Response(status_code=202, headers=out_headers)
    assert config.durable is not None
    wait = min(SYNC_WAIT_MAX_S, float(config.durable.execution_timeout) + 5.0)
    ended = await runner.wait_for_end(record.arn, wait)
    if ended is None:
        raise ServiceError(
            "The durable execution did not end within the synchronous invocation's limit; "
            f"it goes on: {record.arn}"
        )
    result = outcome_of(ended)
    if result.function_error is not None:
        out_headers["X-Amz-Function-Error"] = result.function_error
    return Response(
        result.payload, status_code=200, headers=out_headers, media_type="application/json"
    )
