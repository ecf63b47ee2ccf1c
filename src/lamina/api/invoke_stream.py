"""InvokeWithResponseStream (POST /2021-11-15/functions/{name}/response-streaming-invocations).

The function's response goes out as it is written, framed as `PayloadChunk` events, and an
`InvokeComplete` event ends it (with `ErrorCode`/`ErrorDetails` when the function failed, and
`LogResult` for LogType=Tail). A function that does not stream answers with its whole
response as one chunk, as on Lambda.

Errors found before the function runs (not found, throttled, bad input) are ordinary error
responses: the response's head waits until the runtime starts streaming or the invocation
ends. A caller that goes away does not stop the function (as on Lambda, which bills the whole
run): what it still writes is dropped, and its environment and concurrency are released when
it ends, by the same path as any invocation.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from lamina import ids, limits, untrusted_json
from lamina.api import eventstream
from lamina.api.context import AppState, app_state
from lamina.api.invoke import (
    checked_size,
    client_context_of,
    invocation_type_of,
    invoke_headers,
    json_payload,
    log_type_of,
    require_active,
    tenant_id_of,
)
from lamina.arns import FunctionRef
from lamina.errors import RecursiveInvocationError, ServiceError
from lamina.models import FunctionConfig, InvokeRequest, InvokeResult
from lamina.response_stream import ResponseStream

log = logging.getLogger(__name__)

_TYPES = ("RequestResponse", "DryRun")
#: invocations whose callers left before they ended (kept referenced until they do)
_ORPHANS: set[asyncio.Task[InvokeResult]] = set()


async def invoke_with_response_stream(request: Request) -> Response:
    state = app_state(request)
    headers = invoke_headers(request)
    qualifier = request.query_params.get("Qualifier")
    body = await request.body()
    functions = state.functions
    ref = functions.ref(request.path_params["name"], qualifier, namespaced=True)
    invocation_type = invocation_type_of(headers, _TYPES)
    log_type = log_type_of(headers)
    payload = checked_size(body, "RequestResponse")
    config = await functions.resolve_current(ref)
    require_active(config)
    payload = json_payload(payload)
    client_context = client_context_of(headers.get("x-amz-client-context"))
    tenant_id = tenant_id_of(headers.get("x-amz-tenant-id"))
    request_id = ids.request_id()
    if invocation_type == "DryRun":
        return Response(status_code=204, headers={"x-amzn-RequestId": request_id})
    return await start_stream(
        state,
        ref,
        config,
        payload,
        request_id,
        client_context,
        headers.get("x-amzn-trace-id"),
        tenant_id,
        log_type == "Tail",
    )


async def run_streamed(
    state: AppState,
    ref: FunctionRef,
    config: FunctionConfig,
    request: InvokeRequest,
    caller_trace: str | None,
) -> tuple[asyncio.Task[InvokeResult], ResponseStream]:
    """Start `request` (whose `stream` is set) and wait until its runtime starts streaming
    or it ends; raises what the invocation raised before it ran (throttled, recursion)."""
    stream = request.stream
    assert stream is not None
    functions = state.functions
    trace, allowed = functions.recursion.trace(ref.name, caller_trace)
    if not allowed:
        state.metrics.recursive_invocations_dropped.labels(ref.name).inc()
        raise RecursiveInvocationError(
            "Lambda has detected your function being invoked in a recursive loop with other "
            "AWS resources and stopped your function's invocation."
        )
    request = InvokeRequest(
        request_id=request.request_id,
        payload=request.payload,
        invoked_arn=request.invoked_arn,
        client_context=request.client_context,
        trace_id=trace,
        tenant_id=request.tenant_id,
        log_tail=request.log_tail,
        stream=stream,
        source="ResponseStream",
    )
    task = asyncio.get_running_loop().create_task(state.scheduler.invoke(config, request))
    task.add_done_callback(lambda _: stream.end())
    try:
        await stream.started()
    except asyncio.CancelledError:
        orphan(task, stream)
        raise
    if task.done() and not task.cancelled() and task.exception() is not None:
        task.result()  # raises: answered as an error response
    return task, stream


def orphan(task: asyncio.Task[InvokeResult], stream: ResponseStream) -> None:
    """The caller is gone: the invocation runs on to its end, writing nowhere."""
    stream.close()
    if not task.done():
        _ORPHANS.add(task)
        task.add_done_callback(_forget)


def _forget(task: asyncio.Task[InvokeResult]) -> None:
    _ORPHANS.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.warning("a streamed invocation whose caller left failed: %s", task.exception())


async def start_stream(
    state: AppState,
    ref: FunctionRef,
    config: FunctionConfig,
    payload: bytes,
    request_id: str,
    client_context: str | None,
    caller_trace: str | None,
    tenant_id: str | None,
    log_tail: bool,
) -> Response:
    stream = ResponseStream()
    task, stream = await run_streamed(
        state,
        ref,
        config,
        InvokeRequest(
            request_id=request_id,
            payload=payload,
            invoked_arn=state.functions.arn(ref.name, ref.qualifier),
            client_context=client_context,
            tenant_id=tenant_id,
            log_tail=log_tail,
            stream=stream,
        ),
        caller_trace,
    )
    return StreamingResponse(
        _events(task, stream),
        status_code=200,
        headers={
            "x-amzn-RequestId": request_id,
            "X-Amz-Executed-Version": config.version,
        },
        media_type=eventstream.CONTENT_TYPE,
    )


def error_of(result: InvokeResult) -> tuple[str, str]:
    """A failed invocation's `ErrorCode` and `ErrorDetails`: its error type and message (the
    error document's `errorType` and `errorMessage`; its whole text if it is not one)."""
    details = result.payload.decode(errors="replace")
    error_type = result.error_type
    try:
        parsed = untrusted_json.loads(result.payload)
    except (ValueError, UnicodeDecodeError):
        parsed = None
    if isinstance(parsed, dict):
        if isinstance(parsed.get("errorType"), str):
            error_type = error_type or parsed["errorType"]
        if isinstance(parsed.get("errorMessage"), str):
            details = parsed["errorMessage"]
    return error_type or "Unhandled", details


async def _events(task: asyncio.Task[InvokeResult], stream: ResponseStream) -> AsyncIterator[bytes]:
    try:
        async for data in stream.paced(
            limits.STREAM_UNCAPPED_BYTES, limits.STREAM_CAPPED_BYTES_PER_S
        ):
            yield eventstream.payload_chunk(data)
        try:
            result = await task
        except Exception as e:  # the platform failed mid-stream: end the stream saying so
            yield eventstream.invoke_complete(ServiceError.error_type, str(e))
            return
        log_result = base64.b64encode(result.log_tail).decode() if result.log_tail else None
        if result.function_error is not None:
            code, details = error_of(result)
            yield eventstream.invoke_complete(code, details, log_result)
            return
        if not stream.streaming and result.payload:
            yield eventstream.payload_chunk(result.payload)  # a buffered response
        yield eventstream.invoke_complete(log_result=log_result)
    finally:
        if not task.done():
            orphan(task, stream)
