"""uvicorn's HTTP/1.1 protocol (httptools), answering requests it cannot take in AWS's error
shape rather than uvicorn's plain-text `400 Invalid HTTP request received.`

These requests never reach the application: they fail while the request line and headers are
read, before there is a request to route. What is refused here, and how:

- a request target (path and query) over `URL_MAX_BYTES`: 414 `RequestUriTooLongException`.
  65,535 bytes is httptools' own bound (its URL parser keeps 16-bit offsets); refusing at that
  bound, as soon as it is passed, also spares holding the rest.
- a request head (request line and headers) over `HEAD_MAX_BYTES`: 431
  `RequestHeaderFieldsTooLargeException` (httptools sets no bound; without one, a client could
  make the server buffer an endless header).
- anything else httptools cannot parse: 400 `BadRequestException`.

Every response's head (status line and headers), which uvicorn writes apart from its body, is
held until the body is written, and both go out in one write (`_OneWriteTransport`): one
system call and one TCP segment per response, not two (the client is woken once).

The body carries the error type both as the REST protocol's `x-amzn-ErrorType` header and as
the JSON 1.1 protocol's `__type` (which API the request meant is not known yet), and the
connection is closed: a parser that failed cannot find where the next request starts. It is
closed gently: the server stops sending, then reads and drops what the client is still sending
for up to `DRAIN_S` (closing a socket with unread data makes the kernel reset the connection,
and the client would lose the answer before reading it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger(__name__)

#: the longest request target taken (httptools' own bound)
URL_MAX_BYTES = 65_535
#: the most bytes a request's line and headers may take together (counted a read at a time,
#: so a head may pass it by up to one read, at most 256 KiB, before it is refused)
HEAD_MAX_BYTES = 128 * 1024
#: how long a refused connection's remaining input is read and dropped before it is closed
DRAIN_S = 5.0

_REASONS = {400: b"Bad Request", 414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


#: how every response head uvicorn writes begins and ends
_HEAD_START = b"HTTP/1.1 "
_HEAD_END = b"\r\n\r\n"


class _OneWriteTransport:
    """A connection's transport that holds a response head back until the next write (its
    body) and sends both in one `write`. A head whose body does not follow before the loop
    turns (a streamed response waiting for its first chunk) goes out on its own then; a
    close, an end of file or a protocol switch sends what is held first. Everything else is
    the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data.endswith(_HEAD_END) and data.startswith(_HEAD_START):
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held, self._held = self._held, None
        if held is not None and not self._transport.is_closing():
            self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()
        self._transport.set_protocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _Refused(Exception):
    """Raised from a parser callback: httptools stops and uvicorn calls `send_400_response`."""


class AwsErrorsHttpProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with the limits and error answers described in the module's
    docstring; everything else is uvicorn's."""

    def __init__(self, *args: Any, prefill: bytes = b"", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: what a front worker had read from the connection before handing it over: parsed
        #: as soon as the connection is made, before anything read here
        self._prefill = prefill
        #: bytes of the current request's line and headers read so far (see `data_received`)
        self._head_bytes = 0
        self._in_head = False
        #: whether a request began during the read being parsed
        self._began = False
        self._refusal: tuple[int, str, str] | None = None
        self._draining = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        wrapped: Any = _OneWriteTransport(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(wrapped)
        if self._prefill:
            prefill, self._prefill = self._prefill, b""
            self.data_received(prefill)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._began = True
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > URL_MAX_BYTES:
            self._refusal = (
                414,
                "RequestUriTooLongException",
                f"The request URI must be at most {URL_MAX_BYTES} bytes.",
            )
            raise _Refused

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def data_received(self, data: bytes) -> None:
        if self._draining:
            return  # a refused request's rest: dropped (see `send_400_response`)
        self._began = False
        super().data_received(data)
        if self._draining or not self._in_head:
            return
        # Still inside a request's head after this read: all of it was head, unless the
        # request began within it (the read may end a body too: not counted, so the bound is
        # loose by at most one read, never tight on a body).
        if not self._began:
            self._head_bytes += len(data)
        if self._head_bytes > HEAD_MAX_BYTES:
            self._refusal = (
                431,
                "RequestHeaderFieldsTooLargeException",
                f"The request line and headers must be at most {HEAD_MAX_BYTES} bytes.",
            )
            self.send_400_response("")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools could not parse, in AWS's shape."""
        status, error_type, message = self._refusal or (
            400,
            "BadRequestException",
            "The request is not valid HTTP/1.1.",
        )
        log.info("refused a request before routing: %s %s", status, message)
        body = json.dumps(
            {"Type": "User", "__type": error_type, "message": message}, separators=(",", ":")
        ).encode()
        head = [
            b"HTTP/1.1 %d %s" % (status, _REASONS[status]),
            b"content-type: application/json",
            b"content-length: %d" % len(body),
            b"x-amzn-ErrorType: " + error_type.encode(),
            b"x-amzn-RequestId: " + str(uuid.uuid4()).encode(),
            b"connection: close",
        ]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        # Half-close, drop what still arrives, and close when the client does (or later).
        self.transport.write_eof()
        self._draining = True
        self.loop.call_later(DRAIN_S, self.transport.close)
