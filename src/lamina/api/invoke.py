"""Invoke (POST /2015-03-31/functions/{name}/invocations)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from lamina import ids, limits, untrusted_json
from lamina.api.context import AppState, app_state
from lamina.api.wire import json_response
from lamina.arns import FunctionRef
from lamina.errors import (
    InvalidParameterValueError,
    InvalidRequestContentError,
    RecursiveInvocationError,
    RequestTooLargeError,
    ResourceConflictError,
    ServiceError,
    StorageFullError,
    ValidationError,
    is_disk_full,
)
from lamina.models import FunctionConfig, FunctionState, InvokeRequest

_TYPES = ("Event", "RequestResponse", "DryRun")
_CLIENT_CONTEXT_MAX = 3583  # bytes of base64, as Lambda limits X-Amz-Client-Context


async def invoke(request: Request) -> Response:
    # The query string and headers are read straight from the scope: Starlette's parsed
    # mappings cost more than the rest of an Event invoke's own work (this is the hot path).
    qualifier = request.query_params.get("Qualifier") if request.scope["query_string"] else None
    return await invoke_function(
        app_state(request),
        request.path_params["name"],
        qualifier,
        _invoke_headers(request),
        await request.body(),
    )


async def invoke_function(
    state: AppState,
    name: str,
    qualifier: str | None,
    headers: Mapping[str, str],
    body: bytes,
) -> Response:
    """Invoke the function `name` names (as the request path has it) with `body`; `headers`
    holds the request's X-Amz-* headers by lower-case name. Raises `LaminaError`s."""
    functions = state.functions
    ref = functions.ref(name, qualifier, namespaced=True)
    invocation_type = headers.get("x-amz-invocation-type", "RequestResponse")
    if invocation_type not in _TYPES:
        raise ValidationError(
            f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed "
            "to satisfy constraint: Member must satisfy enum value set: [Event, "
            "RequestResponse, DryRun]"
        )
    log_type = headers.get("x-amz-log-type", "None")
    if log_type not in ("None", "Tail"):
        raise ValidationError(
            f"1 validation error detected: Value '{log_type}' at 'logType' failed to satisfy "
            "constraint: Member must satisfy enum value set: [Tail, None]"
        )
    payload = _checked_size(body, invocation_type)
    config = functions.resolve(ref)
    _require_active(config)
    payload = _json(payload)
    client_context = _client_context(headers.get("x-amz-client-context"))
    request_id = ids.request_id()
    if invocation_type == "DryRun":
        return Response(status_code=204, headers={"x-amzn-RequestId": request_id})
    caller_trace = headers.get("x-amzn-trace-id")
    if invocation_type == "Event":
        await _accept(state, ref, payload, request_id, caller_trace)
        return Response(status_code=202, headers={"x-amzn-RequestId": request_id})
    trace, allowed = functions.recursion.trace(ref.name, caller_trace)
    if not allowed:
        state.metrics.recursive_invocations_dropped.labels(ref.name).inc()
        raise RecursiveInvocationError(
            "Lambda has detected your function being invoked in a recursive loop with other "
            "AWS resources and stopped your function's invocation."
        )
    try:
        result = await state.scheduler.invoke(
            config,
            InvokeRequest(
                request_id=request_id,
                payload=payload,
                invoked_arn=functions.arn(ref.name, ref.qualifier),
                client_context=client_context,
                tenant_id=_tenant_id(headers.get("x-amz-tenant-id")),
                trace_id=trace,
                log_tail=log_type == "Tail",
            ),
        )
    except asyncio.CancelledError:
        # Only the server's shutdown cancels a request: tell the caller why, if it listens.
        raise ServiceError(
            f"Lamina stopped while the invocation was running (RequestId: {request_id})."
        ) from None
    out_headers = {
        "x-amzn-RequestId": request_id,
        "X-Amz-Executed-Version": result.executed_version,
    }
    if result.function_error:
        out_headers["X-Amz-Function-Error"] = result.function_error
    if result.log_tail is not None:
        out_headers["X-Amz-Log-Result"] = base64.b64encode(result.log_tail).decode()
    return Response(
        result.payload, status_code=200, headers=out_headers, media_type="application/json"
    )


async def invoke_async(request: Request) -> Response:
    """InvokeAsync (POST /2014-11-13/functions/{name}/invoke-async/), the deprecated form of
    Invoke with InvocationType=Event."""
    state = app_state(request)
    ref = state.functions.ref(request.path_params["name"], namespaced=True)
    payload = await _read(request, "Event")
    _require_active(state.functions.resolve(ref))
    payload = _json(payload)
    request_id = ids.request_id()
    trace = request.headers.get("x-amzn-trace-id")
    await _accept(state, ref, payload, request_id, trace)
    return json_response({"Status": 202}, status=202, headers={"x-amzn-RequestId": request_id})


_TENANT_ID = re.compile(r"[a-zA-Z0-9._:/=+\-@ ]{1,256}")


def _tenant_id(value: str | None) -> str | None:
    """Invoke's TenantId, by the model's constraints (1-256 of letters, digits, ._:/=+-@ and
    space)."""
    if value is None:
        return None
    if not _TENANT_ID.fullmatch(value):
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at 'tenantId' failed to satisfy "
            "constraint: Member must satisfy regular expression pattern: "
            "[a-zA-Z0-9\\._:\\/=+\\-@ ]+"
        )
    return value


def _invoke_headers(request: Request) -> dict[str, str]:
    """The X-Amz-* headers (X-Amzn-Trace-Id among them) of an Invoke request, by lower-case
    name (ASGI gives them so)."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in request.scope["headers"]
        if name.startswith(b"x-amz")
    }


async def _read(request: Request, invocation_type: str) -> bytes:
    """The request's payload, checked against the invocation type's size limit."""
    return _checked_size(await request.body(), invocation_type)


def _checked_size(payload: bytes, invocation_type: str) -> bytes:
    """`payload`, checked against the invocation type's size limit."""
    if invocation_type == "Event":
        limit = limits.ASYNC_PAYLOAD_MAX_BYTES
    else:
        limit = limits.SYNC_PAYLOAD_MAX_BYTES
    if len(payload) > limit:
        raise RequestTooLargeError(
            f"{len(payload)} byte payload is too large for the {invocation_type} invocation "
            f"type (limit {limit} bytes)"
            if invocation_type == "Event"
            else f"Request must be smaller than {limit} bytes for the InvokeFunction operation"
        )
    return payload


def _json(payload: bytes) -> bytes:
    """The payload checked to be JSON (an empty payload is `{}`)."""
    if not payload:
        return b"{}"
    try:
        untrusted_json.loads(payload)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRequestContentError(
            f"Could not parse request body into json: Could not parse payload into json: {e}"
        ) from None
    return payload


def _require_active(config: FunctionConfig) -> None:
    if config.state is not FunctionState.ACTIVE:
        raise ResourceConflictError(
            "The operation cannot be performed at this time. The function is currently in the "
            f"following state: {config.state.value}"
        )


async def _accept(
    state: AppState, ref: FunctionRef, payload: bytes, request_id: str, trace: str | None
) -> None:
    """Queue an asynchronous invocation; it is durable when this returns. `trace` is the
    caller's trace header (its Lineage is counted when the event runs)."""
    try:
        await state.async_queue.accept(ref.name, ref.qualifier, payload, request_id, trace or "")
    except OSError as e:
        if is_disk_full(e):
            raise StorageFullError("the event") from None
        raise ServiceError(f"The event could not be stored, so it was not accepted: {e}") from None


def _client_context(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) > _CLIENT_CONTEXT_MAX:
        raise InvalidParameterValueError(
            f"Client context must be smaller than {_CLIENT_CONTEXT_MAX} bytes."
        )
    try:
        text = base64.b64decode(value, validate=True).decode()
        untrusted_json.loads(text)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidRequestContentError(
            "Client context must be a valid Base64-encoded JSON object."
        ) from None
    return text
