"""Function URLs with InvokeMode RESPONSE_STREAM: the function's response goes to the caller
as chunked HTTP while the function writes it.

A stream that starts with Lambda's HTTP integration prelude (content type
`application/vnd.awslambda.http-integration-response`: a JSON object with `statusCode`,
`headers` and `cookies`, then 8 NUL bytes, as `awslambda.HttpResponseStream.from` writes)
sets the response's status and headers; any other stream is a 200 of the stream's content
type. A function that does not stream (it returns its result) is answered as a BUFFERED URL
answers it. The response's head goes out with the first bytes after the prelude, so a
function that fails before then is Lambda's 502; one that fails mid-stream ends the body
where it is.

A caller that goes away closes the stream (`ResponseStream.close`): the function runs on to
its end as on Lambda, writing nowhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from starlette.types import Receive, Send

from lamina import limits, untrusted_json
from lamina.api.invoke_stream import orphan
from lamina.events import http_payload as hp
from lamina.models import InvokeResult
from lamina.response_stream import ResponseStream

HTTP_INTEGRATION = "application/vnd.awslambda.http-integration-response"
_DELIMITER = b"\0" * 8
#: the longest prelude read before giving up on finding its end (Lamina's bound: a prelude
#: is a status, headers and cookies)
PRELUDE_MAX_BYTES = 1024 * 1024


class StreamedHttp(hp.HttpResponse):
    """A response whose body is still being written: `chunks` yields it."""

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        first: bytes,
        stream: ResponseStream,
        task: asyncio.Task[InvokeResult],
    ) -> None:
        super().__init__(status, headers, b"")
        self._first = first
        self.stream = stream
        self._task = task

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            if self._first:
                yield self._first
            async for data in self.stream.paced(
                limits.STREAM_UNCAPPED_BYTES, limits.STREAM_CAPPED_BYTES_PER_S
            ):
                yield data
        finally:
            if not self._task.done():
                orphan(self._task, self.stream)


async def invoke_streamed(
    start: Callable[[ResponseStream], Coroutine[Any, Any, InvokeResult]],
) -> InvokeResult | StreamedHttp | None:
    """Run `start(stream)`: a `StreamedHttp` once the function streams (its prelude read),
    its `InvokeResult` if it answered without streaming, None if the stream is unusable
    (a bad prelude; Lambda's 502). Raises what `start` raises before the function runs."""
    stream = ResponseStream()
    task = asyncio.get_running_loop().create_task(start(stream))
    task.add_done_callback(lambda _: stream.end())
    try:
        await stream.started()
        if not stream.streaming:
            return await task
        status, headers, first = 200, [("content-type", stream.content_type)], b""
        if stream.content_type.split(";", 1)[0].strip().lower() == HTTP_INTEGRATION:
            prelude = await _prelude(stream)
            if prelude is None:  # the stream ended (or overflowed) before its prelude did
                orphan(task, stream)
                return None
            meta, first = prelude
            parsed = _response(meta)
            if parsed is None:
                orphan(task, stream)
                return None
            status, headers = parsed
        if not first:
            first = await stream.next() or b""
            if not first and task.done() and _failed(task):
                return None  # failed before its first byte: Lambda's 502
        return StreamedHttp(status, headers, first, stream, task)
    except asyncio.CancelledError:
        orphan(task, stream)
        raise


def _failed(task: asyncio.Task[InvokeResult]) -> bool:
    if task.cancelled() or task.exception() is not None:
        return True
    return task.result().function_error is not None


async def _prelude(stream: ResponseStream) -> tuple[bytes, bytes] | None:
    """(the prelude's JSON, the body's first bytes), or None if the stream ended first."""
    buf = b""
    while (data := await stream.next()) is not None:
        buf += data
        at = buf.find(_DELIMITER)
        if at >= 0:
            return buf[:at], buf[at + len(_DELIMITER) :]
        if len(buf) > PRELUDE_MAX_BYTES:
            return None
    return None


def _response(meta: bytes) -> tuple[int, list[tuple[str, str]]] | None:
    """The status and headers a prelude sets (None if it cannot be mapped)."""
    try:
        prelude = untrusted_json.loads(meta) if meta.strip() else {}
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(prelude, dict):
        return None
    try:
        mapped = hp.response_v2(
            json.dumps(
                {
                    "statusCode": prelude.get("statusCode", 200),
                    "headers": prelude.get("headers"),
                    "cookies": prelude.get("cookies"),
                }
            ).encode()
        )
    except hp.BadResponse:
        return None
    headers = mapped.headers
    if not any(name.lower() == "content-type" for name, _ in headers):
        headers.append(("content-type", "application/octet-stream"))
    return mapped.status, headers


async def send_streamed(response: StreamedHttp, receive: Receive, send: Send) -> None:
    """Send `response` as chunked HTTP while the function writes it; a caller that goes away
    closes its stream."""
    headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in response.headers]
    headers = [(n, v) for n, v in headers if n not in (b"content-length", b"transfer-encoding")]
    watcher = asyncio.get_running_loop().create_task(_on_disconnect(receive, response.stream))
    try:
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        async for data in response.chunks():
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher


async def _on_disconnect(receive: Receive, stream: ResponseStream) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            stream.close()
            return
