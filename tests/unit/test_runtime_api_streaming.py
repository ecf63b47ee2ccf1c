"""The Runtime API's streaming response mode: chunks pass on as they arrive, errors come in
trailers, the streamed maximum cuts the invocation, backpressure pauses the runtime."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest
from tests.unit.test_runtime_api import (
    NEXT,
    Client,
    connect,
    eventually,
    make_invocation,
    response_path,
    run,
    serve,
)

from lamina import limits, response_stream
from lamina.response_stream import ResponseStream
from lamina.runtime_api import Invocation

STREAMING = {
    "Lambda-Runtime-Function-Response-Mode": "streaming",
    "Transfer-Encoding": "chunked",
    "Content-Type": "text/event-stream",
    "Trailer": "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
}


def streamed(request_id: str) -> tuple[Invocation, ResponseStream]:
    inv = make_invocation(request_id)
    inv.stream = ResponseStream()
    return inv, inv.stream


async def begin(client: Client, request_id: str) -> None:
    lines = [f"POST {response_path(request_id)} HTTP/1.1", "Host: runtime"]
    lines += [f"{k}: {v}" for k, v in STREAMING.items()]
    client.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await client.writer.drain()


async def chunk(client: Client, data: bytes) -> None:
    client.writer.write(b"%x\r\n%s\r\n" % (len(data), data))
    await client.writer.drain()


async def finish(client: Client, trailers: dict[str, str] | None = None) -> None:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (trailers or {}).items())
    client.writer.write(b"0\r\n" + extra.encode() + b"\r\n")
    await client.writer.drain()


def test_chunks_pass_on_before_the_response_ends() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv, stream = streamed("s-1")
            server.submit(inv)
            await client.request("GET", NEXT)
            await begin(client, "s-1")
            await chunk(client, b"hello ")
            assert await asyncio.wait_for(stream.next(), 2) == b"hello "
            assert stream.streaming and stream.content_type == "text/event-stream"
            assert not inv.future.done()
            await chunk(client, b"world")
            assert await asyncio.wait_for(stream.next(), 2) == b"world"
            await finish(client)
            status, _, _ = await client.receive()
            assert status == 202
            outcome = await inv.future
            assert outcome.ok and outcome.body == b""

    run(test)


def test_error_in_trailers() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv, stream = streamed("s-2")
            server.submit(inv)
            await client.request("GET", NEXT)
            await begin(client, "s-2")
            await chunk(client, b"part")
            error = {"errorType": "TypeError", "errorMessage": "bad"}
            await finish(
                client,
                {
                    "Lambda-Runtime-Function-Error-Type": "TypeError",
                    "Lambda-Runtime-Function-Error-Body": base64.b64encode(
                        json.dumps(error).encode()
                    ).decode(),
                },
            )
            assert (await client.receive())[0] == 202
            outcome = await inv.future
            assert not outcome.ok
            assert outcome.error_type == "TypeError"
            assert json.loads(outcome.body) == error
            assert await stream.next() == b"part"

    run(test)


def test_streaming_without_a_stream_is_buffered() -> None:
    """Invoke (not InvokeWithResponseStream) of a streaming function: one whole response."""

    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation("s-3")
            server.submit(inv)
            await client.request("GET", NEXT)
            await begin(client, "s-3")
            await chunk(client, b"a")
            await chunk(client, b"b")
            await finish(client)
            assert (await client.receive())[0] == 202
            outcome = await inv.future
            assert outcome.ok and outcome.body == b"ab"

    run(test)


def test_over_the_streamed_maximum(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "STREAM_RESPONSE_MAX_BYTES", 10)

    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv, stream = streamed("s-4")
            server.submit(inv)
            await client.request("GET", NEXT)
            await begin(client, "s-4")
            await chunk(client, b"12345678")
            await chunk(client, b"9abc")  # past 10 bytes: cut
            outcome = await asyncio.wait_for(inv.future, 2)
            assert outcome.error_type == "Function.ResponseSizeTooLarge"
            assert "(10 bytes)" in json.loads(outcome.body)["errorMessage"]
            await chunk(client, b"more")  # dropped
            await finish(client)
            assert (await client.receive())[0] == 413
            stream.end()
            assert await stream.next() == b"12345678"
            assert await stream.next() is None

    run(test)


def test_backpressure_pauses_the_runtime(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(response_stream, "HIGH_WATER_BYTES", 1000)

    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv, stream = streamed("s-5")
            presses: list[bool] = []
            server.submit(inv)
            await client.request("GET", NEXT)
            await begin(client, "s-5")
            await chunk(client, b"x" * 600)
            await eventually(lambda: stream.written == 600)
            hook = stream.on_pressure
            assert hook is not None

            def spy(on: bool) -> None:
                presses.append(on)
                hook(on)

            stream.on_pressure = spy
            await chunk(client, b"y" * 600)
            await eventually(lambda: presses == [True])
            assert len(await stream.next()) == 1200  # type: ignore[arg-type]
            assert presses == [True, False]
            await finish(client)
            assert (await client.receive())[0] == 202

    run(test)


def test_closed_stream_drops_what_comes() -> None:
    async def test() -> None:
        stream = ResponseStream()
        stream.start(None)
        stream.feed(b"a")
        stream.close()
        stream.feed(b"b")
        assert await stream.next() is None
        assert stream.written == 2

    run(test)


def test_bandwidth_cap_after_the_uncapped_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the uncapped bytes, the caller gets at most the capped rate (the waits `paced`
    asks for add up to the capped bytes over the rate)."""
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float) -> None:
        waits.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(response_stream.asyncio, "sleep", sleep)

    async def test() -> None:
        stream = ResponseStream()
        stream.start(None)
        got = []

        async def consume() -> None:
            async for data in stream.paced(100, 1000.0):
                got.append(data)

        consumer = asyncio.get_running_loop().create_task(consume())
        for _ in range(4):
            stream.feed(b"x" * 100)
            await real_sleep(0)
            await real_sleep(0)
        stream.end()
        await consumer
        assert sum(len(g) for g in got) == 400
        assert waits, "past 100 bytes, the stream was paced"
        # (the fake sleep lets no time pass: each wait runs to its chunk's due time)
        assert waits == sorted(waits)
        # the last of 300 capped bytes at 1000 B/s is due 0.3 s after the cap began
        assert 0.25 < waits[-1] <= 0.3 + 1e-6

    run(test)


def test_paused_at_the_end_reads_the_next_request_once_drained(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A response that ends while the runtime's connection is paused for a slow caller: the
    connection is read again once the caller has taken it (the runtime's next /next)."""
    monkeypatch.setattr(response_stream, "HIGH_WATER_BYTES", 100)

    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv, stream = streamed("s-6")
            server.submit(inv)
            await client.request("GET", NEXT)
            await begin(client, "s-6")
            await chunk(client, b"z" * 500)  # over the high water: paused
            await finish(client)
            await eventually(lambda: stream.written == 500)
            assert len(await stream.next() or b"") == 500  # taken: reading resumes
            assert (await client.receive())[0] == 202
            second, _ = streamed("s-7")
            server.submit(second)
            status, headers, _ = await client.request("GET", NEXT)
            assert status == 200 and headers["lambda-runtime-aws-request-id"] == "s-7"

    run(test)
