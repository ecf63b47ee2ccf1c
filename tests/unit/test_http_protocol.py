"""The HTTP protocol's bounds on a request's head, fed byte strings as a socket would."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from lamina.api.http_protocol import HEAD_MAX_BYTES, URL_MAX_BYTES, AwsErrorsHttpProtocol


class Transport(asyncio.Transport):
    """What the protocol writes, and whether it closed or half-closed."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        #: each write's data, in order
        self.writes: list[bytes] = []
        self.closed = False
        self.eof = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 1), "peername": ("127.0.0.1", 2)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)
        self.writes.append(bytes(data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": str(size).encode()})


async def _streamed(scope: Any, receive: Any, send: Any) -> None:
    """A head, then its body in two chunks after a pause (a streamed response)."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await asyncio.sleep(0.01)
    await send({"type": "http.response.body", "body": b"a", "more_body": True})
    await send({"type": "http.response.body", "body": b"b"})


def exchange(*reads: bytes, app: Any = _app) -> Transport:
    """Feed `reads` to a fresh connection, one `data_received` each; what it answered."""

    async def main() -> Transport:
        config = uvicorn.Config(app, lifespan="off", log_level="critical")
        protocol = AwsErrorsHttpProtocol(config=config, server_state=ServerState(), app_state={})
        transport = Transport()
        protocol.connection_made(transport)
        for data in reads:
            protocol.data_received(data)
        await asyncio.sleep(0.05)  # the app's task
        return transport

    return asyncio.run(main())


def test_a_body_read_with_its_head_is_not_counted_as_head() -> None:
    """One read holding a small head and a body larger than the head bound: a request like
    any other (counting the whole read as head refused it with 431)."""
    body = b"x" * (2 * HEAD_MAX_BYTES)
    head = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % len(body)
    answer = exchange(head + body).written
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"\r\n%d\r\n" % len(body) in answer  # the app read the whole body


def test_an_endless_header_is_refused_as_it_arrives() -> None:
    chunk = 64 * 1024
    reads = [b"GET / HTTP/1.1\r\nhost: x\r\nx-big: "] + [b"b" * chunk] * 8
    transport = exchange(*reads)
    assert transport.written.startswith(b"HTTP/1.1 431 "), transport.written[:200]
    assert b'"__type":"RequestHeaderFieldsTooLargeException"' in transport.written
    assert transport.eof  # half-closed: the client reads the answer, then both close


def test_an_overlong_target_is_414() -> None:
    transport = exchange(b"GET /" + b"a" * URL_MAX_BYTES + b" HTTP/1.1\r\nhost: x\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 414 "), transport.written[:200]


def test_garbage_is_400_in_aws_shape() -> None:
    transport = exchange(b"\x00\x01 nonsense\r\n\r\n")
    assert transport.written.startswith(b"HTTP/1.1 400 "), transport.written[:200]
    assert b"x-amzn-ErrorType: BadRequestException" in transport.written


def test_a_response_goes_out_in_one_write() -> None:
    """Head and body in one write (one segment, one wake-up of the client), request after
    request on a keep-alive connection."""
    request = b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}"
    transport = exchange(request, request)
    assert len(transport.writes) == 2, transport.writes
    for data in transport.writes:
        assert data.startswith(b"HTTP/1.1 200 "), data
        assert data.endswith(b"\r\n\r\n1\r\n2\r\n0\r\n\r\n"), data  # chunked: no length


def test_a_streamed_response_s_head_is_not_held_for_its_body() -> None:
    """A head whose body takes a while goes out when the loop turns: the client sees the
    status at once, as without the coalescing."""
    transport = exchange(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n", app=_streamed)
    assert transport.writes[0].startswith(b"HTTP/1.1 200 "), transport.writes
    assert transport.writes[0].endswith(b"\r\n\r\n"), transport.writes
    assert transport.written.endswith(b"1\r\na\r\n1\r\nb\r\n0\r\n\r\n"), transport.written
