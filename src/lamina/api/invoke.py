"""Invoke (POST /2015-03-31/functions/{name}/invocations)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import Response

from lamina import ids, limits, untrusted_json
from lamina.api.context import AppState, app_state
from lamina.api.errors import error_response
from lamina.api.wire import json_response
from lamina.arns import FunctionRef
from lamina.cluster.api import ForwardedInvoke, ForwardedResult, InvokeRouter, NodeUnavailable
from lamina.control import snapstart
from lamina.errors import (
    InvalidParameterValueError,
    InvalidRequestContentError,
    LaminaError,
    RecursiveInvocationError,
    RequestTooLargeError,
    ServiceError,
    StorageFullError,
    ValidationError,
    is_disk_full,
)
from lamina.models import FunctionConfig, InvokeRequest

log = logging.getLogger(__name__)

_TYPES = ("Event", "RequestResponse", "DryRun")
#: Lamina's own Invoke header: run in this debug session's environment (`api.debugging`)
DEBUG_SESSION_HEADER = b"x-lamina-debug-session"
_CLIENT_CONTEXT_MAX = 3583  # bytes of base64, as Lambda limits X-Amz-Client-Context


async def invoke(request: Request) -> Response:
    # The query string and headers are read straight from the scope: Starlette's parsed
    # mappings cost more than the rest of an Event invoke's own work (this is the hot path).
    qualifier = request.query_params.get("Qualifier") if request.scope["query_string"] else None
    return await invoke_function(
        app_state(request),
        request.path_params["name"],
        qualifier,
        invoke_headers(request),
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
    invocation_type = invocation_type_of(headers, _TYPES)
    log_type = log_type_of(headers)
    payload = checked_size(body, invocation_type)
    config = await functions.resolve_current(ref)
    require_active(config)
    payload = json_payload(payload)
    client_context = client_context_of(headers.get("x-amz-client-context"))
    request_id = ids.request_id()
    if invocation_type == "DryRun":
        return Response(status_code=204, headers={"x-amzn-RequestId": request_id})
    if config.durable is not None:
        # A durable function's invoke starts (or finds, by name) a durable execution.
        from lamina.api.durable import invoke_durable

        return await invoke_durable(state, config, headers, payload, invocation_type, request_id)
    caller_trace = headers.get("x-amzn-trace-id")
    if invocation_type == "Event":
        await _accept(state, ref, payload, request_id, caller_trace)
        return Response(status_code=202, headers={"x-amzn-RequestId": request_id})
    tenant_id = tenant_id_of(headers.get("x-amz-tenant-id"))
    debug_session = headers.get(DEBUG_SESSION_HEADER.decode())
    router = state.router
    if router is not None and debug_session is None:
        node = router.choose(ref.name, config.version)
        if node is not None:
            forwarded = await _forward(
                router,
                node,
                ForwardedInvoke(
                    function_name=ref.name,
                    version=config.version,
                    qualifier=ref.qualifier,
                    payload=payload,
                    invocation_type=invocation_type,
                    log_type=log_type,
                    client_context=client_context,
                    trace_header=caller_trace,
                    request_id=request_id,
                    tenant_id=tenant_id,
                ),
                config.timeout,
            )
            if forwarded is not None:
                return forwarded
    return await _run(
        state,
        ref,
        config,
        payload,
        request_id,
        client_context,
        caller_trace,
        tenant_id,
        log_type,
        debug_session,
    )


async def run_forwarded(state: AppState, invoke: ForwardedInvoke) -> ForwardedResult:
    """Run an invocation another node received, resolved and authorized (`NatsRouter.serve`
    calls this): as `invoke_function` runs its own, answered with the same response, and
    never forwarded again."""
    functions = state.functions
    try:
        config = functions.version(invoke.function_name, invoke.version)
        if config is None:
            # Made a moment ago on the receiving node: the news may not be here yet.
            await functions.refresh(invoke.function_name)
            config = functions.version(invoke.function_name, invoke.version)
        if config is None:
            raise functions.not_found(invoke.function_name, invoke.qualifier)
        require_active(config)
        response = await _run(
            state,
            FunctionRef(invoke.function_name, invoke.qualifier),
            config,
            invoke.payload,
            invoke.request_id or ids.request_id(),
            invoke.client_context,
            invoke.trace_header,
            invoke.tenant_id,
            invoke.log_type or "None",
        )
    except LaminaError as e:
        response = error_response(e)
    return ForwardedResult(
        status=response.status_code,
        headers=tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in response.raw_headers
        ),
        body=bytes(response.body),
    )


async def _forward(
    router: InvokeRouter, node: str, invoke: ForwardedInvoke, timeout_s: float
) -> Response | None:
    """`node`'s answer to `invoke` as this node's response; None if the node did not take it
    (the caller runs it here)."""
    try:
        result = await router.forward(node, invoke, timeout_s=timeout_s)
    except NodeUnavailable as e:
        log.warning("running %s here: %s", invoke.function_name, e)
        return None
    response = Response(status_code=result.status)
    response.body = result.body
    response.raw_headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in result.headers
    ]
    return response


async def _run(
    state: AppState,
    ref: FunctionRef,
    config: FunctionConfig,
    payload: bytes,
    request_id: str,
    client_context: str | None,
    caller_trace: str | None,
    tenant_id: str | None,
    log_type: str,
    debug_session: str | None = None,
) -> Response:
    """Run a synchronous invocation of `config` (what `ref` resolved to) on this node."""
    functions = state.functions
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
                tenant_id=tenant_id,
                trace_id=trace,
                log_tail=log_type == "Tail",
                debug_session=debug_session,
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
    require_active(await state.functions.resolve_current(ref))
    payload = json_payload(payload)
    request_id = ids.request_id()
    trace = request.headers.get("x-amzn-trace-id")
    await _accept(state, ref, payload, request_id, trace)
    return json_response({"Status": 202}, status=202, headers={"x-amzn-RequestId": request_id})


_TENANT_ID = re.compile(r"[a-zA-Z0-9._:/=+\-@ ]{1,256}")


def tenant_id_of(value: str | None) -> str | None:
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


def invoke_headers(request: Request) -> dict[str, str]:
    """The X-Amz-* headers (X-Amzn-Trace-Id among them) of an Invoke request, by lower-case
    name (ASGI gives them so)."""
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in request.scope["headers"]
        if name.startswith(b"x-amz") or name == DEBUG_SESSION_HEADER
    }


async def _read(request: Request, invocation_type: str) -> bytes:
    """The request's payload, checked against the invocation type's size limit."""
    return checked_size(await request.body(), invocation_type)


def checked_size(payload: bytes, invocation_type: str) -> bytes:
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


def json_payload(payload: bytes) -> bytes:
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


def invocation_type_of(headers: Mapping[str, str], allowed: tuple[str, ...]) -> str:
    """The request's X-Amz-Invocation-Type (RequestResponse if absent), one of `allowed`."""
    invocation_type = headers.get("x-amz-invocation-type", "RequestResponse")
    if invocation_type not in allowed:
        raise ValidationError(
            f"1 validation error detected: Value '{invocation_type}' at 'invocationType' failed "
            f"to satisfy constraint: Member must satisfy enum value set: [{', '.join(allowed)}]"
        )
    return invocation_type


def log_type_of(headers: Mapping[str, str]) -> str:
    """The request's X-Amz-Log-Type: None (if absent) or Tail."""
    log_type = headers.get("x-amz-log-type", "None")
    if log_type not in ("None", "Tail"):
        raise ValidationError(
            f"1 validation error detected: Value '{log_type}' at 'logType' failed to satisfy "
            "constraint: Member must satisfy enum value set: [Tail, None]"
        )
    return log_type


def require_active(config: FunctionConfig) -> None:
    """An invoke of a function that is not Active is refused (a SnapStart version whose
    template is being made: SnapStartNotReadyException)."""
    snapstart.require_invocable(config)


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


def client_context_of(value: str | None) -> str | None:
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
