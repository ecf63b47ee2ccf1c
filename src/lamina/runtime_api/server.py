"""The Lambda Runtime API (`/2018-06-01/runtime/...`) served to one execution environment.

Each environment gets its own listener; its address is the environment's
`AWS_LAMBDA_RUNTIME_API`. The runtime inside long-polls `GET /invocation/next`; `submit()`
answers that poll with an invocation, and the runtime's `POST .../response` or `.../error`
settles the invocation's future.

This sits on the hot path of every invoke, so it is an asyncio Protocol over httptools' C
parser rather than a framework: a warm invoke costs two small HTTP exchanges here.
"""

from __future__ import annotations

import asyncio
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

_PREFIX = b"/2018-06-01/runtime"
_NEXT = _PREFIX + b"/invocation/next"
_INIT_ERROR = _PREFIX + b"/init/error"
_RESULT = re.compile(rb"/2018-06-01/runtime/invocation/([^/]+)/(response|error)")
_ERROR_TYPE_HEADER = b"lambda-runtime-function-error-type"


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


def _error(status: str, error_type: str, message: str) -> bytes:
    body = json.dumps({"errorType": error_type, "errorMessage": message}).encode()
    return _response(status, body)


class RuntimeApiServer:
    """The Runtime API of one environment.

    Callbacks run on the event loop: `on_ready` at the first `/invocation/next` (the runtime
    finished its init phase), `on_init_error(body, error_type)` at `/init/error`, and
    `on_parked` when the runtime's `/invocation/next` waits with nothing to hand it (the
    runtime is idle: the moment Lambda freezes an environment).
    """

    def __init__(
        self,
        on_ready: Callable[[], None],
        on_init_error: Callable[[bytes, str | None], None],
        on_parked: Callable[[], None] | None = None,
    ) -> None:
        self._on_ready = on_ready
        self._on_init_error = on_init_error
        self._on_parked = on_parked
        self._ready = False
        self._server: asyncio.AbstractServer | None = None
        self._pending: Invocation | None = None  # submitted, not yet picked up
        self._current: Invocation | None = None  # picked up, not yet answered
        self._poller: _Connection | None = None  # a connection parked on /next
        self._connections: set[_Connection] = set()
        self.address = ""

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
        poller, self._poller = self._poller, None
        if poller is not None and poller.alive:
            self._current = invocation
            poller.write(invocation.next_response())
            poller.poll_answered()
        else:
            self._pending = invocation

    def take_current(self) -> tuple[Invocation | None, bool]:
        """Forget the invocation in flight (it timed out or its runtime died), and say whether
        the runtime had picked it up."""
        delivered = self._current is not None
        inv = self._current or self._pending
        self._current = self._pending = None
        return inv, delivered

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for conn in list(self._connections):
            conn.close()
        self._poller = None

    # -- called by connections ---------------------------------------------------------

    def _next(self, conn: _Connection) -> None:
        if not self._ready:
            self._ready = True
            self._on_ready()
        inv, self._pending = self._pending, None
        if inv is not None:
            self._current = inv
            conn.write(inv.next_response())
        else:
            self._poller = conn
            if self._on_parked is not None:
                self._on_parked()

    def _result(
        self,
        conn: _Connection,
        request_id: bytes,
        kind: bytes,
        body: bytes,
        size: int,
        error_type: str | None,
    ) -> None:
        inv = self._current
        if inv is None or inv.request_id.encode() != request_id:
            conn.write(_error("400 Bad Request", "InvalidRequestID", "Invalid request ID"))
            return
        self._current = None
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

    def _closed(self, conn: _Connection) -> None:
        self._connections.discard(conn)
        if self._poller is conn:
            self._poller = None


@dataclass(frozen=True)
class _Request:
    method: bytes
    path: bytes
    body: bytes
    size: int
    error_type: str | None
    keep_alive: bool


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
        self.alive = False

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

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == _ERROR_TYPE_HEADER:
            self._error_type = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
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
        )
        if self._api._poller is self or self._queued:
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
            api._result(self, m[1], m[2], request.body, request.size, request.error_type)
        elif path == _INIT_ERROR and method == b"POST":
            api._init_error(self, request.body, request.error_type)
        else:
            self.write(_error("404 Not Found", "NotFound", "Unknown Runtime API path"))
        if not request.keep_alive:
            if api._poller is self:
                self._close_after_write = True  # answer the parked poll first
            else:
                self.close()

    def poll_answered(self) -> None:
        """The parked poll got its invocation: handle what was pipelined behind it."""
        while self._queued and self._api._poller is not self:
            self._handle(self._queued.popleft())

    def write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)
            if self._close_after_write:
                self.close()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
