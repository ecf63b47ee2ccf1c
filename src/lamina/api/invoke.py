"""Invoke (POST /2015-03-31/functions/{name}/invocations)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import time

from starlette.requests import Request
from starlette.responses import Response

from lamina import limits
from lamina.api.context import app_state
from lamina.errors import (
    InvalidParameterValueError,
    InvalidRequestContentError,
    RequestTooLargeError,
    ResourceConflictError,
    ServiceError,
    ValidationError,
)
from lamina.models import FunctionState, InvokeRequest

_TYPES = ("Event", "RequestResponse", "DryRun")
_CLIENT_CONTEXT_MAX = 3583  # bytes of base64, as Lambda limits X-Amz-Client-Context


async def invoke(request: Request) -> Response:
    state = app_state(request)
    functions = state.functions
    ref = functions.ref(request.path_params["name"], request.query_params.get("Qualifier"))
    headers = request.headers
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
    payload = await request.body()
    if len(payload) > limits.SYNC_PAYLOAD_MAX_BYTES:
        raise RequestTooLargeError(
            f"Request must be smaller than {limits.SYNC_PAYLOAD_MAX_BYTES} bytes for the "
            "InvokeFunction operation"
        )
    config = functions.resolve(ref)
    if config.state is not FunctionState.ACTIVE:
        raise ResourceConflictError(
            "The operation cannot be performed at this time. The function is currently in the "
            f"following state: {config.state.value}"
        )
    if payload:
        try:
            json.loads(payload)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidRequestContentError(
                f"Could not parse request body into json: Could not parse payload into json: {e}"
            ) from None
    else:
        payload = b"{}"
    client_context = _client_context(headers.get("x-amz-client-context"))
    request_id = _request_id()
    if invocation_type == "DryRun":
        return Response(status_code=204, headers={"x-amzn-RequestId": request_id})
    if invocation_type == "Event":
        # Durable asynchronous invocation (retries, destinations) is its own capability;
        # accepting an event here without it would risk losing it.
        raise InvalidParameterValueError(
            "Lamina does not support InvocationType Event yet; use RequestResponse."
        )
    try:
        result = await state.scheduler.invoke(
            config,
            InvokeRequest(
                request_id=request_id,
                payload=payload,
                invoked_arn=functions.arn(ref.name, ref.qualifier),
                client_context=client_context,
                trace_id=f"Root=1-{int(time.time()):08x}-{os.urandom(12).hex()};Sampled=0",
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


def _request_id() -> str:
    """A random (version 4) UUID as text: what uuid.uuid4() gives, at a quarter of its cost
    (this runs for every invocation)."""
    h = os.urandom(16).hex()
    variant = "89ab"[int(h[16], 16) & 3]
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{variant}{h[17:20]}-{h[20:]}"


def _client_context(value: str | None) -> str | None:
    if not value:
        return None
    if len(value) > _CLIENT_CONTEXT_MAX:
        raise InvalidParameterValueError(
            f"Client context must be smaller than {_CLIENT_CONTEXT_MAX} bytes."
        )
    try:
        text = base64.b64decode(value, validate=True).decode()
        json.loads(text)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidRequestContentError(
            "Client context must be a valid Base64-encoded JSON object."
        ) from None
    return text
