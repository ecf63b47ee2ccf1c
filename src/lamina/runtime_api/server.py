"""The Lambda Runtime API (`/2018-06-01/runtime/...`) served to one execution environment.

Each environment gets its own listener; its address is the environment's
`AWS_LAMBDA_RUNTIME_API`. The runtime inside long-polls `GET /invocation/next`; `submit()`
answers that poll with an invocation, and the runtime's `POST .../response` or `.../error`
settles the invocation's future.

This sits on the hot path of every invoke, so it is an asyncio Protocol over httptools' C
parser rather than a framework: a warm invoke costs two small HTTP exchanges here.

The same listener serves the Extensions API (`/2020-01-01/extension/...`, `extensions.py`)
and the Telemetry and Logs APIs (`telemetry.py`), as Lambda's does: extensions reach it at
the same AWS_LAMBDA_RUNTIME_API. With extensions registered, the init phase ends only when
they too wait in `/event/next`, and the first invocation waits for that.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from lamina import limits
from lamina.response_stream import ResponseStream
from lamina.runtime_api.extensions import (
    INVOKE,
    Extension,
    ExtensionError,
    Extensions,
    invoke_event,
    shutdown_event,
)
from lamina.runtime_api.telemetry import Telemetry

_PREFIX = b"/2018-06-01/runtime"
_NEXT = _PREFIX + b"/invocation/next"
_INIT_ERROR = _PREFIX + b"/init/error"
#: SnapStart: a restored runtime's first call (answered at once), and its after-restore
#: hooks' failure
_RESTORE_NEXT = _PREFIX + b"/restore/next"
_RESTORE_ERROR = _PREFIX + b"/restore/error"
_RESULT = re.compile(rb"/2018-06-01/runtime/invocation/([^/]+)/(response|error)")
_ERROR_TYPE_HEADER = b"lambda-runtime-function-error-type"
#: the error's JSON, base64-encoded: a streamed response's trailer when it fails mid-stream
_ERROR_BODY_HEADER = b"lambda-runtime-function-error-body"
_RESPONSE_MODE_HEADER = b"lambda-runtime-function-response-mode"
_CONTENT_TYPE_HEADER = b"content-type"
_EXT_PREFIX = b"/2020-01-01/extension"
_EXT_REGISTER = _EXT_PREFIX + b"/register"
_EXT_NEXT = _EXT_PREFIX + b"/event/next"
_EXT_INIT_ERROR = _EXT_PREFIX + b"/init/error"
_EXT_EXIT_ERROR = _EXT_PREFIX + b"/exit/error"
_TELEMETRY = (b"/2022-07-01/telemetry", b"/2022-07-01/telemetry/")
_LOGS = (b"/2020-08-15/logs", b"/2020-08-15/logs/")
_EXT_HEADER_PREFIX = b"lambda-extension-"
#: a request's extension headers when it has none (shared, never written to)
_NO_HEADERS: dict[bytes, str] = {}


@dataclass(frozen=True)
class RuntimeOutcome:
    """What the runtime reported for one invocation."""

    ok: bool
    body: bytes
    #: the runtime's `Lambda-Runtime-Function-Error-Type`, for errors
    error_type: str | None = None


@dataclass(eq=False)
class Invocation:
    """One invocation handed to an environment. `future` is settled exactly once."""

    request_id: str
    payload: bytes
    invoked_arn: str
    future: asyncio.Future[RuntimeOutcome]
    #: the function's timeout: the deadline is counted from delivery (the runtime's /next)
    timeout_ms: int
    trace_id: str = ""
    client_context: str | None = None  # JSON text, already base64-decoded
    cognito_identity: str | None = None
    #: Invoke's TenantId (X-Amz-Tenant-Id), given to the runtime as Lambda does
    tenant_id: str | None = None
    #: where a response the runtime streams goes as it arrives (None: it is buffered)
    stream: ResponseStream | None = None

    def next_response(self) -> bytes:
        headers = [
            b"HTTP/1.1 200 OK",
            b"Content-Type: application/json",
            b"Lambda-Runtime-Aws-Request-Id: " + self.request_id.encode(),
            b"Lambda-Runtime-Deadline-Ms: "
            + str(int(time.time() * 1000) + self.timeout_ms).encode(),
            b"Lambda-Runtime-Invoked-Function-Arn: " + self.invoked_arn.encode(),
            b"Lambda-Runtime-Trace-Id: " + self.trace_id.encode(),
        ]
        if self.client_context:
            headers.append(b"Lambda-Runtime-Client-Context: " + self.client_context.encode())
        if self.tenant_id:
            headers.append(b"Lambda-Runtime-Aws-Tenant-Id: " + self.tenant_id.encode())
        if self.cognito_identity:
            headers.append(b"Lambda-Runtime-Cognito-Identity: " + self.cognito_identity.encode())
        headers.append(b"Content-Length: " + str(len(self.payload)).encode())
        return b"\r\n".join(headers) + b"\r\n\r\n" + self.payload


def _response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


_ACCEPTED = _response("202 Accepted", b'{"status":"OK"}')
_RESTORED = _response("200 OK", b"")


def _error(status: str, error_type: str, message: str) -> bytes:
    body = json.dumps({"errorType": error_type, "errorMessage": message}).encode()
    return _response(status, body)


def _not_restoring() -> bytes:
    # As Lambda's Runtime API answers a call out of its phase: 403, an error body.
    return _error(
        "403 Forbidden",
        "Runtime.InvalidStateTransition",
        "The restore phase is only for a SnapStart environment restored from a snapshot",
    )


class RuntimeApiServer:
    """The Runtime API of one environment.

    Callbacks run on the event loop: `on_ready` when the init phase is over (the runtime's
    first `/invocation/next`, and every extension waiting in `/event/next`),
    `on_init_error(body, error_type)` at `/init/error` (the runtime's or an extension's),
    `on_settled()` when the extensions that took an invocation are all done with it, and
    `on_parked` when the runtime's `/invocation/next` waits with nothing to hand it (the
    runtime is idle: the moment Lambda freezes an environment).
    """

    def __init__(
        self,
        on_ready: Callable[[], None],
        on_init_error: Callable[[bytes, str | None], None],
        function_info: dict[str, str] | None = None,
        on_settled: Callable[[], None] | None = None,
        on_extension: Callable[[Extension], None] | None = None,
        on_parked: Callable[[], None] | None = None,
    ) -> None:
        self._on_ready = on_ready
        self._on_init_error = on_init_error
        self._on_settled = on_settled
        self._on_parked = on_parked
        self._ready = False
        self._runtime_waiting = False
        self.extensions = Extensions(
            function_info
            or {"functionName": "", "functionVersion": "", "handler": "", "accountId": ""},
            on_change=self._extensions_changed,
            on_registered=on_extension,
            on_error=self._extension_error,
        )
        self.telemetry = Telemetry()
        self._server: asyncio.AbstractServer | None = None
        self._pending: Invocation | None = None  # submitted, not yet picked up
        self._current: Invocation | None = None  # picked up, not yet answered
        self._poller: _Connection | None = None  # a connection parked on /next
        self._connections: set[_Connection] = set()
        self.address = ""
        #: SnapStart: the environment is a restored copy of a template, whose runtime may
        #: use `/restore/next` and `/restore/error` (a runtime elsewhere gets 403)
        self.restoring = False
        #: `on_restore_error(body, error_type)`: an after-restore hook failed
        self.on_restore_error: Callable[[bytes, str | None], None] | None = None

    async def start(self, sock: socket.socket | None = None) -> str:
        """Serve on `sock` (a listening socket, which this server then owns), or on a free
        port of the host's loopback."""
        loop = asyncio.get_running_loop()
        factory = lambda: _Connection(self)  # noqa: E731
        if sock is None:
            self._server = await loop.create_server(factory, "127.0.0.1", 0)
        else:
            self._server = await loop.create_server(factory, sock=sock)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = f"{host}:{port}"
        return self.address

    def submit(self, invocation: Invocation) -> None:
        """Hand an invocation to the runtime (now, if it is polling; else at its next poll)."""
        if self._pending is not None or self._current is not None:
            raise RuntimeError("environment already has an invocation")
        poller = self._poller
        if poller is not None and poller.alive and self._ready:
            self._poller = None
            self._deliver(poller, invocation)
            poller.unpark()
        else:
            self._pending = invocation

    def _deliver(self, conn: _Connection, inv: Invocation) -> None:
        self._current = inv
        response = inv.next_response()
        conn.write(response)
        if self.extensions.invoke_subscribers:
            deadline = int(time.time() * 1000) + inv.timeout_ms
            self.extensions.dispatch(
                INVOKE, invoke_event(inv.request_id, inv.invoked_arn, deadline, inv.trace_id)
            )

    @property
    def extensions_busy(self) -> bool:
        """Some extension is still working on the last invocation."""
        return bool(self.extensions.busy)

    def shutdown(self, reason: str, deadline_ms: int) -> list[Extension]:
        """Send SHUTDOWN to the extensions subscribed to it; returns them."""
        return self.extensions.dispatch("SHUTDOWN", shutdown_event(reason, deadline_ms))

    def take_current(self) -> tuple[Invocation | None, bool]:
        """Forget the invocation in flight (it timed out or its runtime died), and say whether
        the runtime had picked it up."""
        delivered = self._current is not None
        inv = self._current or self._pending
        self._current = self._pending = None
        return inv, delivered

    def close(self) -> None:
        self.telemetry.close()
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._connections):
            conn.close()
        self._poller = None

    # -- called by connections ---------------------------------------------------------

    def _next(self, conn: _Connection) -> None:
        if not self._ready:
            self._runtime_waiting = True
            if not self.extensions.init_complete():
                self._poller = conn  # the init phase waits for the extensions too
                conn.parked = True
                return
            self._init_over()
        inv, self._pending = self._pending, None
        if inv is not None:
            self._deliver(conn, inv)
        else:
            self._poller = conn
            conn.parked = True
            if self._on_parked is not None:
                self._on_parked()

    def _init_over(self) -> None:
        self._ready = True
        self.extensions.registration_open = False
        self._on_ready()

    def _extensions_changed(self) -> None:
        if not self._ready:
            if self._runtime_waiting and self.extensions.init_complete():
                self._init_over()
                poller = self._poller
                inv, self._pending = self._pending, None
                if inv is not None and poller is not None and poller.alive:
                    self._poller = None
                    self._deliver(poller, inv)
                    poller.unpark()
                elif inv is not None:
                    self._pending = inv
            return
        if not self.extensions.busy and self._on_settled is not None:
            self._on_settled()

    def _extension_error(self, kind: str, ext: Extension, error_type: str, body: bytes) -> None:
        if kind == "init" and not self._ready:
            # Lambda fails the init phase with the extension's error.
            self._on_init_error(
                body
                or json.dumps(
                    {"errorMessage": f"Extension {ext.name} failed", "errorType": error_type}
                ).encode(),
                error_type,
            )

    def _extension_call(self, conn: _Connection, request: _Request) -> None:
        path, method, headers = request.path, request.method, request.headers
        ext_api = self.extensions
        try:
            if path == _EXT_NEXT and method == b"GET":
                ext_api.next(conn, headers.get(b"lambda-extension-identifier"))
            elif path == _EXT_REGISTER and method == b"POST":
                conn.write(
                    ext_api.register(
                        headers.get(b"lambda-extension-name"),
                        request.body,
                        headers.get(b"lambda-extension-accept-feature"),
                    )
                )
            elif path in (_EXT_INIT_ERROR, _EXT_EXIT_ERROR) and method == b"POST":
                kind = "init" if path == _EXT_INIT_ERROR else "exit"
                conn.write(
                    ext_api.error(
                        kind,
                        headers.get(b"lambda-extension-identifier"),
                        headers.get(b"lambda-extension-function-error-type"),
                        request.body,
                    )
                )
            elif (path in _TELEMETRY or path in _LOGS) and method == b"PUT":
                ext = ext_api.find(headers.get(b"lambda-extension-identifier"))
                conn.write(self.telemetry.subscribe(ext.name, request.body, path in _LOGS))
            else:
                conn.write(_error("404 Not Found", "NotFound", "Unknown Extensions API path"))
        except ExtensionError as e:
            conn.write(_error(e.status, e.error_type, e.message))

    def _stream_to(self, request_id: bytes) -> ResponseStream | None:
        """Where the runtime's streamed response to `request_id` goes as it arrives: the
        invocation's stream, if it is the one in flight and its caller takes a stream."""
        inv = self._current
        if inv is None or inv.stream is None or inv.request_id.encode() != request_id:
            return None
        return inv.stream

    def _stream_too_large(self, request_id: bytes) -> None:
        """A streamed response went past Lambda's maximum: the invocation fails now (what
        the runtime still sends is dropped, and answered when it ends)."""
        inv = self._current
        if inv is None or inv.request_id.encode() != request_id:
            return
        self._current = None
        if not inv.future.done():
            inv.future.set_result(
                RuntimeOutcome(
                    ok=False,
                    body=(
                        '{"errorMessage":"Response payload size exceeded maximum allowed '
                        f'payload size ({limits.STREAM_RESPONSE_MAX_BYTES} bytes).",'
                        '"errorType":"Function.ResponseSizeTooLarge"}'
                    ).encode(),
                    error_type="Function.ResponseSizeTooLarge",
                )
            )

    def _result(
        self,
        conn: _Connection,
        request_id: bytes,
        kind: bytes,
        request: _Request,
    ) -> None:
        body, size, error_type = request.body, request.size, request.error_type
        if request.overflowed:
            conn.write(
                _error("413 Payload Too Large", "RequestEntityTooLarge", "Payload too large")
            )
            return
        inv = self._current
        if inv is None or inv.request_id.encode() != request_id:
            conn.write(_error("400 Bad Request", "InvalidRequestID", "Invalid request ID"))
            return
        self._current = None
        if request.streaming and kind == b"response" and error_type is not None:
            # Failed mid-stream: the error comes in the trailers, its body base64-encoded.
            conn.write(_ACCEPTED)
            if not inv.future.done():
                inv.future.set_result(
                    RuntimeOutcome(
                        ok=False,
                        body=_trailer_error(error_type, request.error_body),
                        error_type=error_type,
                    )
                )
            return
        if request.streamed:
            conn.write(_ACCEPTED)
            if not inv.future.done():
                inv.future.set_result(RuntimeOutcome(ok=True, body=b""))
            return
        if kind == b"response" and size > limits.SYNC_PAYLOAD_MAX_BYTES:
            outcome = RuntimeOutcome(
                ok=False,
                body=(
                    '{"errorMessage":"Response payload size exceeded maximum allowed payload '
                    f'size ({limits.SYNC_PAYLOAD_MAX_BYTES} bytes).",'
                    '"errorType":"Function.ResponseSizeTooLarge"}'
                ).encode(),
                error_type="Function.ResponseSizeTooLarge",
            )
            conn.write(
                _error("413 Payload Too Large", "RequestEntityTooLarge", "Payload too large")
            )
        else:
            outcome = RuntimeOutcome(ok=kind == b"response", body=body, error_type=error_type)
            conn.write(_ACCEPTED)
        if not inv.future.done():
            inv.future.set_result(outcome)

    def _init_error(self, conn: _Connection, body: bytes, error_type: str | None) -> None:
        conn.write(_ACCEPTED)
        self._on_init_error(body, error_type)

    def _restore_next(self, conn: _Connection) -> None:
        if not self.restoring:
            conn.write(_not_restoring())
            return
        conn.write(_RESTORED)  # the restore is done here: the runtime runs its hooks now

    def _restore_error(self, conn: _Connection, body: bytes, error_type: str | None) -> None:
        if not self.restoring:
            conn.write(_not_restoring())
            return
        conn.write(_ACCEPTED)
        if self.on_restore_error is not None:
            self.on_restore_error(body, error_type)

    def _closed(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if self._poller is conn:
            self._poller = None
        if self.extensions.by_id:
            self.extensions.forget(conn)


def _trailer_error(error_type: str, encoded: str | None) -> bytes:
    """The error a runtime reported in a streamed response's trailers, as Lambda gives it."""
    if encoded:
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            pass
    return json.dumps({"errorType": error_type, "errorMessage": ""}).encode()


@dataclass(frozen=True)
class _Request:
    method: bytes
    path: bytes
    body: bytes
    size: int
    error_type: str | None
    keep_alive: bool
    #: the `Lambda-Extension-*` headers, by lower-case name (empty for the runtime's calls)
    headers: dict[bytes, str]
    #: sent with `Lambda-Runtime-Function-Response-Mode: streaming`
    streaming: bool = False
    #: its body went to the invocation's stream as it arrived (so `body` is empty)
    streamed: bool = False
    #: the streamed body passed Lambda's maximum (the invocation failed already)
    overflowed: bool = False
    #: the `Lambda-Runtime-Function-Error-Body` trailer (base64)
    error_body: str | None = None


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection from the runtime (keep-alive, one request at a time)."""

    def __init__(self, api: RuntimeApiServer) -> None:
        self._api = api
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._url = b""
        self._body: list[bytes] = []
        self._size = 0
        self._error_type: str | None = None
        self._close_after_write = False
        self._queued: deque[_Request] = deque()
        self._headers = _NO_HEADERS
        self._streaming = False
        self._content_type: str | None = None
        self._error_body: str | None = None
        #: the invocation's stream the body goes to as it arrives (a streamed response)
        self._sink: ResponseStream | None = None
        self._streamed = False
        self._overflowed = False
        self.alive = False
        #: waiting in a long poll (the runtime's /next or an extension's /event/next)
        self.parked = False

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self._transport = cast(asyncio.Transport, transport)
        self.alive = True
        self._api._connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(_error("400 Bad Request", "InvalidRequest", "Malformed HTTP request"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        self._api._closed(self)

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []
        self._size = 0
        self._error_type = None
        self._headers = _NO_HEADERS
        self._streaming = self._streamed = self._overflowed = False
        self._content_type = self._error_body = None
        self._sink = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lower = name.lower()
        if lower == _ERROR_TYPE_HEADER:
            self._error_type = value.decode("latin-1")
        elif lower == _RESPONSE_MODE_HEADER:
            self._streaming = value.strip().lower() == b"streaming"
        elif lower == _CONTENT_TYPE_HEADER:
            self._content_type = value.decode("latin-1")
        elif lower == _ERROR_BODY_HEADER:
            self._error_body = value.decode("latin-1")
        elif lower.startswith(_EXT_HEADER_PREFIX):
            if self._headers is _NO_HEADERS:
                self._headers = {}  # this request's own (a queued one keeps its own)
            self._headers[lower] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        if not self._streaming or self.parked or self._queued:
            return  # a pipelined response waits its turn, buffered
        m = _RESULT.fullmatch(self._url.split(b"?", 1)[0])
        if m is None or m[2] != b"response":
            return
        sink = self._api._stream_to(m[1])
        if sink is not None:
            self._sink = sink
            self._streamed = True
            sink.on_pressure = self._pressure
            sink.start(self._content_type)

    def _pressure(self, on: bool) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if on:
            transport.pause_reading()
        else:
            transport.resume_reading()

    def on_body(self, body: bytes) -> None:
        sink = self._sink
        if sink is not None:
            self._size += len(body)
            if self._size > limits.STREAM_RESPONSE_MAX_BYTES:
                self._sink = None
                self._overflowed = True
                sink.on_pressure = None
                self._pressure(False)  # the rest is read, and dropped
                m = _RESULT.fullmatch(self._url.split(b"?", 1)[0])
                if m is not None:
                    self._api._stream_too_large(m[1])
                return
            sink.feed(body)
            return
        if self._overflowed:
            return
        self._size += len(body)
        # Past the limit, count but keep nothing: the caller gets an error, not the body.
        if self._size <= limits.SYNC_PAYLOAD_MAX_BYTES:
            self._body.append(body)

    def on_message_complete(self) -> None:
        request = _Request(
            method=self._parser.get_method(),
            path=self._url.split(b"?", 1)[0],
            body=b"".join(self._body),
            size=self._size,
            error_type=self._error_type,
            keep_alive=self._parser.should_keep_alive(),
            headers=self._headers,
            streaming=self._streaming,
            streamed=self._streamed,
            overflowed=self._overflowed,
            error_body=self._error_body,
        )
        # (the stream keeps its hook: a connection paused for a slow caller is read again
        # once the caller has taken what waits, or the invocation is over)
        self._sink = None
        if self.parked or self._queued:
            # HTTP/1.1 answers in order: a request pipelined behind a parked poll waits.
            self._queued.append(request)
        else:
            self._handle(request)

    def _handle(self, request: _Request) -> None:
        api = self._api
        method, path = request.method, request.path
        if path == _NEXT and method == b"GET":
            api._next(self)
        elif method == b"POST" and (m := _RESULT.fullmatch(path)):
            api._result(self, m[1], m[2], request)
        elif path == _INIT_ERROR and method == b"POST":
            api._init_error(self, request.body, request.error_type)
        elif path == _RESTORE_NEXT and method == b"GET":
            api._restore_next(self)
        elif path == _RESTORE_ERROR and method == b"POST":
            api._restore_error(self, request.body, request.error_type)
        elif not path.startswith(_PREFIX):
            api._extension_call(self, request)
        else:
            self.write(_error("404 Not Found", "NotFound", "Unknown Runtime API path"))
        if not request.keep_alive:
            if self.parked:
                self._close_after_write = True  # answer the parked poll first
            else:
                self.close()

    def unpark(self) -> None:
        """The parked poll got its answer: handle what was pipelined behind it."""
        self.parked = False
        while self._queued and not self.parked:
            self._handle(self._queued.popleft())

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            if self._close_after_write:
                self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
