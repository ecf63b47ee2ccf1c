"""The Runtime API served to one environment (`lamina.runtime_api.RuntimeApiServer`).

Plain sync tests around `asyncio.run`, speaking raw HTTP/1.1 as a runtime client would.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import pytest

from lamina import limits
from lamina.runtime_api import Invocation, RuntimeApiServer, RuntimeOutcome

NEXT = "/2018-06-01/runtime/invocation/next"
INIT_ERROR = "/2018-06-01/runtime/init/error"
ARN = "arn:aws:lambda:us-east-1:000000000000:function:f"
TRACE = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
TIMEOUT_MS = 3000
TIMEOUT = 2.0


def response_path(request_id: str, kind: str = "response") -> str:
    return f"/2018-06-01/runtime/invocation/{request_id}/{kind}"


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


def make_invocation(request_id: str = "req-1", payload: bytes = b'{"x":1}') -> Invocation:
    return Invocation(
        request_id=request_id,
        payload=payload,
        timeout_ms=TIMEOUT_MS,
        invoked_arn=ARN,
        future=asyncio.get_running_loop().create_future(),
        trace_id=TRACE,
    )


@dataclass
class Calls:
    ready: int = 0
    init_errors: list[tuple[bytes, str | None]] = field(default_factory=list)
    parked: int = 0


@asynccontextmanager
async def serve() -> AsyncIterator[tuple[RuntimeApiServer, Calls]]:
    calls = Calls()

    def on_ready() -> None:
        calls.ready += 1

    def on_init_error(body: bytes, error_type: str | None) -> None:
        calls.init_errors.append((body, error_type))

    def on_parked() -> None:
        calls.parked += 1

    server = RuntimeApiServer(on_ready=on_ready, on_init_error=on_init_error, on_parked=on_parked)
    await server.start()
    try:
        yield server, calls
    finally:
        server.close()
        await asyncio.sleep(0)  # let closed transports finish closing on this loop


class Client:
    """One runtime-side HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        close: bool = False,
    ) -> None:
        lines = [f"{method} {path} HTTP/1.1", "Host: runtime"]
        all_headers = {"Content-Length": str(len(body))} if method == "POST" else {}
        all_headers.update(headers or {})
        if close:
            all_headers["Connection"] = "close"
        lines += [f"{k}: {v}" for k, v in all_headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await self.writer.drain()

    async def receive(self) -> tuple[int, dict[str, str], bytes]:
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status_line, *header_lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(
            self.reader.readexactly(int(headers.get("content-length", "0"))), TIMEOUT
        )
        return int(status_line.split()[1]), headers, body

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        await self.send(method, path, body, headers)
        return await self.receive()

    async def at_eof(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), TIMEOUT) == b""


@asynccontextmanager
async def connect(server: RuntimeApiServer) -> AsyncIterator[Client]:
    host, port = server.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        yield Client(reader, writer)
    finally:
        writer.close()
        with suppress(ConnectionError):
            await writer.wait_closed()


async def eventually(condition: Callable[[], bool]) -> None:
    for _ in range(int(TIMEOUT / 0.002)):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition not met in time")


def assert_is_invocation(
    status: int, headers: dict[str, str], body: bytes, inv: Invocation
) -> None:
    assert status == 200
    assert headers["lambda-runtime-aws-request-id"] == inv.request_id
    # The deadline counts from delivery: now plus the function's timeout.
    deadline = int(headers["lambda-runtime-deadline-ms"])
    now_ms = time.time() * 1000
    assert now_ms + inv.timeout_ms - 2000 < deadline <= now_ms + inv.timeout_ms
    assert headers["lambda-runtime-invoked-function-arn"] == inv.invoked_arn
    assert headers["lambda-runtime-trace-id"] == inv.trace_id
    assert body == inv.payload


# -- start / next ------------------------------------------------------------------------------


def test_start_listens_on_loopback_and_reports_address() -> None:
    async def test() -> None:
        async with serve() as (server, calls):
            assert re.fullmatch(r"127\.0\.0\.1:\d+", server.address)
            assert int(server.address.split(":")[1]) > 0
            assert calls.ready == 0

    run(test)


def test_parked_next_gets_invocation_after_submit() -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            await client.send("GET", NEXT)
            await eventually(lambda: calls.ready == 1)
            pending = asyncio.create_task(client.receive())
            await asyncio.sleep(0.02)
            assert not pending.done(), "/next must park until there is an invocation"
            inv = make_invocation()
            server.submit(inv)
            assert_is_invocation(*await pending, inv)
            assert not inv.future.done()

    run(test)


def test_submit_before_poll_is_delivered_at_the_poll() -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            inv = make_invocation("early", b'{"early":true}')
            server.submit(inv)
            assert calls.ready == 0
            assert_is_invocation(*await client.request("GET", NEXT), inv)
            assert calls.ready == 1

    run(test)


def test_parked_is_reported_only_when_next_waits() -> None:
    """`on_parked` (where the environment is frozen) fires when /next has nothing to take,
    never when an invocation is waiting for it (a cold start's first, or one submitted
    between the response and the next poll)."""

    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            server.submit(make_invocation("first"))
            await client.request("GET", NEXT)
            assert calls.parked == 0
            status, _, _ = await client.request("POST", response_path("first"), b"{}")
            assert status == 202
            server.submit(make_invocation("second"))
            await client.request("GET", NEXT)
            assert calls.parked == 0
            await client.request("POST", response_path("second"), b"{}")
            await client.send("GET", NEXT)
            await eventually(lambda: calls.parked == 1)

    run(test)


def test_optional_context_headers_are_sent_when_set() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            inv.client_context = '{"custom":{"k":"v"}}'
            inv.cognito_identity = '{"cognitoIdentityId":"id"}'
            server.submit(inv)
            _, headers, _ = await client.request("GET", NEXT)
            assert headers["lambda-runtime-client-context"] == inv.client_context
            assert headers["lambda-runtime-cognito-identity"] == inv.cognito_identity

    run(test)


def test_context_headers_absent_when_unset() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            server.submit(make_invocation())
            _, headers, _ = await client.request("GET", NEXT)
            assert "lambda-runtime-client-context" not in headers
            assert "lambda-runtime-cognito-identity" not in headers

    run(test)


def test_next_with_query_string_is_still_next() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            assert_is_invocation(*await client.request("GET", NEXT + "?x=1"), inv)

    run(test)


# -- response / error --------------------------------------------------------------------------


def test_response_is_accepted_and_settles_future() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation("abc-123")
            server.submit(inv)
            await client.request("GET", NEXT)
            status, _, body = await client.request(
                "POST", response_path("abc-123"), b'{"result":42}'
            )
            assert status == 202
            assert json.loads(body) == {"status": "OK"}
            outcome = await asyncio.wait_for(inv.future, TIMEOUT)
            assert outcome == RuntimeOutcome(ok=True, body=b'{"result":42}', error_type=None)

    run(test)


def test_empty_response_body_is_fine() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            status, _, _ = await client.request("POST", response_path("req-1"))
            assert status == 202
            assert inv.future.result() == RuntimeOutcome(ok=True, body=b"")

    run(test)


def test_error_with_error_type_header() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            err = b'{"errorMessage":"boom","errorType":"X"}'
            status, _, _ = await client.request(
                "POST",
                response_path("req-1", "error"),
                err,
                {"Lambda-Runtime-Function-Error-Type": "X"},
            )
            assert status == 202
            outcome = await asyncio.wait_for(inv.future, TIMEOUT)
            assert outcome == RuntimeOutcome(ok=False, body=err, error_type="X")

    run(test)


def test_error_type_header_is_case_insensitive_and_optional() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            first = make_invocation("one")
            server.submit(first)
            await client.request("GET", NEXT)
            await client.request(
                "POST",
                response_path("one", "error"),
                b"{}",
                {"lambda-runtime-function-error-type": "Runtime.Unknown"},
            )
            assert first.future.result().error_type == "Runtime.Unknown"

            second = make_invocation("two")
            server.submit(second)
            await client.request("GET", NEXT)
            await client.request("POST", response_path("two", "error"), b"{}")
            assert second.future.result() == RuntimeOutcome(ok=False, body=b"{}", error_type=None)

    run(test)


def test_error_type_does_not_leak_into_the_next_request() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            await client.request(
                "POST", INIT_ERROR, b"{}", {"Lambda-Runtime-Function-Error-Type": "Init.X"}
            )
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            await client.request("POST", response_path("req-1", "error"), b"{}")
            assert inv.future.result().error_type is None

    run(test)


def test_wrong_request_id_is_400_and_future_stays_pending() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation("right")
            server.submit(inv)
            await client.request("GET", NEXT)
            for kind in ("response", "error"):
                status, _, body = await client.request("POST", response_path("wrong", kind), b"1")
                assert status == 400
                assert json.loads(body)["errorType"] == "InvalidRequestID"
            await asyncio.sleep(0)
            assert not inv.future.done()
            # The right id still settles it afterwards.
            status, _, _ = await client.request("POST", response_path("right"), b"2")
            assert status == 202
            assert inv.future.result() == RuntimeOutcome(ok=True, body=b"2")

    run(test)


def test_response_without_any_invocation_is_400() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            status, _, _ = await client.request("POST", response_path("req-1"), b"{}")
            assert status == 400

    run(test)


def test_response_for_submitted_but_not_delivered_invocation_is_400() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)  # pending: the runtime has not polled yet
            status, _, _ = await client.request("POST", response_path("req-1"), b"{}")
            assert status == 400
            assert not inv.future.done()

    run(test)


def test_second_response_for_the_same_invocation_is_400() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            assert (await client.request("POST", response_path("req-1"), b"1"))[0] == 202
            assert (await client.request("POST", response_path("req-1", "error"), b"2"))[0] == 400
            assert inv.future.result() == RuntimeOutcome(ok=True, body=b"1")

    run(test)


def test_response_for_cancelled_future_does_not_raise() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            inv.future.cancel()
            assert (await client.request("POST", response_path("req-1"), b"1"))[0] == 202
            # The connection still serves requests.
            assert (await client.request("GET", "/nope"))[0] == 404

    run(test)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/2018-06-01/runtime/invocation"),
        ("POST", NEXT),
        ("GET", response_path("req-1")),
        ("POST", "/2018-06-01/runtime/invocation/req-1/other"),
        ("POST", "/2018-06-01/runtime/invocation/a/b/response"),
        ("GET", INIT_ERROR),
        ("POST", "/2020-01-01/runtime/invocation/next"),
    ],
)
def test_unknown_path_or_method_is_404(method: str, path: str) -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            status, _, body = await client.request(method, path)
            assert status == 404
            assert json.loads(body)["errorType"] == "NotFound"
            assert calls.ready == 0
            assert calls.init_errors == []

    run(test)


def test_malformed_http_is_400_and_closes() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            client.writer.write(b"THIS IS NOT HTTP\r\n\r\n")
            status, _, _ = await client.receive()
            assert status == 400
            assert await client.at_eof()

    run(test)


# -- init error --------------------------------------------------------------------------------


def test_init_error_is_accepted_and_reported() -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            body = b'{"errorMessage":"cannot import","errorType":"Runtime.ImportModuleError"}'
            status, _, resp = await client.request(
                "POST",
                INIT_ERROR,
                body,
                {"Lambda-Runtime-Function-Error-Type": "Runtime.ImportModuleError"},
            )
            assert status == 202
            assert json.loads(resp) == {"status": "OK"}
            assert calls.init_errors == [(body, "Runtime.ImportModuleError")]
            assert calls.ready == 0

    run(test)


def test_init_error_without_type() -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            assert (await client.request("POST", INIT_ERROR, b"oops"))[0] == 202
            assert calls.init_errors == [(b"oops", None)]

    run(test)


# -- payload limit -----------------------------------------------------------------------------


def test_response_over_limit_is_413_and_a_function_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "SYNC_PAYLOAD_MAX_BYTES", 16)

    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            status, _, _ = await client.request("POST", response_path("req-1"), b"x" * 17)
            assert status == 413
            outcome = await asyncio.wait_for(inv.future, TIMEOUT)
            assert outcome.ok is False
            assert outcome.error_type == "Function.ResponseSizeTooLarge"
            error = json.loads(outcome.body)
            assert error["errorType"] == "Function.ResponseSizeTooLarge"
            assert "(16 bytes)" in error["errorMessage"]
            # The connection is still usable for the next invocation.
            nxt = make_invocation("req-2")
            server.submit(nxt)
            assert_is_invocation(*await client.request("GET", NEXT), nxt)

    run(test)


def test_response_at_limit_is_fine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "SYNC_PAYLOAD_MAX_BYTES", 16)

    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            status, _, _ = await client.request("POST", response_path("req-1"), b"y" * 16)
            assert status == 202
            assert inv.future.result() == RuntimeOutcome(ok=True, body=b"y" * 16)

    run(test)


def test_body_size_is_per_request_on_a_kept_alive_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(limits, "SYNC_PAYLOAD_MAX_BYTES", 16)

    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            for i in range(3):
                inv = make_invocation(f"r{i}")
                server.submit(inv)
                await client.request("GET", NEXT)
                assert (await client.request("POST", response_path(f"r{i}"), b"z" * 10))[0] == 202
                assert inv.future.result().ok

    run(test)


# -- connections -------------------------------------------------------------------------------


def test_keep_alive_serves_several_invocations_on_one_connection() -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            for i in range(4):
                inv = make_invocation(f"req-{i}", f'{{"i":{i}}}'.encode())
                server.submit(inv)
                assert_is_invocation(*await client.request("GET", NEXT), inv)
                status, _, _ = await client.request("POST", response_path(f"req-{i}"), b"%d" % i)
                assert status == 202
                assert inv.future.result() == RuntimeOutcome(ok=True, body=b"%d" % i)
            assert calls.ready == 1

    run(test)


def test_request_split_across_many_writes() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            path = response_path("req-1", "error")
            raw = (
                f"POST {path} HTTP/1.1\r\nHost: r\r\n"
                "Lambda-Runtime-Function-Error-Type: Split.Error\r\n"
                "Content-Length: 11\r\n\r\nhello world"
            ).encode()
            for i in range(0, len(raw), 7):
                client.writer.write(raw[i : i + 7])
                await client.writer.drain()
                await asyncio.sleep(0)
            status, _, _ = await client.receive()
            assert status == 202
            assert inv.future.result() == RuntimeOutcome(
                ok=False, body=b"hello world", error_type="Split.Error"
            )

    run(test)


def test_chunked_response_body() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            client.writer.write(
                f"POST {response_path('req-1')} HTTP/1.1\r\nHost: r\r\n"
                "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".encode()
            )
            status, _, _ = await client.receive()
            assert status == 202
            assert inv.future.result() == RuntimeOutcome(ok=True, body=b"hello world")

    run(test)


def test_connection_close_on_parked_next_answers_then_closes() -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            await client.send("GET", NEXT, close=True)
            await eventually(lambda: calls.ready == 1)
            inv = make_invocation()
            server.submit(inv)
            assert_is_invocation(*await client.receive(), inv)
            assert await client.at_eof()

    run(test)


def test_connection_close_on_post_answers_then_closes() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            await client.send("POST", response_path("req-1"), b"ok", close=True)
            assert (await client.receive())[0] == 202
            assert await client.at_eof()
            assert inv.future.result().ok

    run(test)


def test_runtime_may_use_separate_connections() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as poller, connect(server) as poster:
            inv = make_invocation()
            server.submit(inv)
            await poller.request("GET", NEXT)
            assert (await poster.request("POST", response_path("req-1"), b"r"))[0] == 202
            assert inv.future.result() == RuntimeOutcome(ok=True, body=b"r")

    run(test)


def test_submit_after_poller_disconnected_waits_for_next_poll() -> None:
    async def test() -> None:
        async with serve() as (server, calls):
            async with connect(server) as gone:
                await gone.send("GET", NEXT)
                await eventually(lambda: calls.ready == 1)
            # White-box wait: the server has seen that connection go away.
            await eventually(lambda: not server._connections)
            inv = make_invocation()
            server.submit(inv)
            async with connect(server) as client:
                assert_is_invocation(*await client.request("GET", NEXT), inv)

    run(test)


# -- submit / take_current / close -------------------------------------------------------------


def test_submit_while_an_invocation_is_pending_or_in_flight_raises() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            first = make_invocation("one")
            server.submit(first)
            with pytest.raises(RuntimeError):
                server.submit(make_invocation("two"))  # first still pending
            await client.request("GET", NEXT)
            with pytest.raises(RuntimeError):
                server.submit(make_invocation("two"))  # first in flight
            await client.request("POST", response_path("one"), b"1")
            server.submit(make_invocation("three"))  # free again

    run(test)


def test_take_current_returns_in_flight_invocation_and_forgets_it() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            assert server.take_current() == (None, False)
            inv = make_invocation()
            server.submit(inv)
            await client.request("GET", NEXT)
            assert server.take_current() == (inv, True)
            assert server.take_current() == (None, False)
            # A late answer is refused and does not settle the future.
            assert (await client.request("POST", response_path("req-1"), b"late"))[0] == 400
            assert not inv.future.done()
            # And the environment can take a new invocation.
            nxt = make_invocation("req-2")
            server.submit(nxt)
            assert_is_invocation(*await client.request("GET", NEXT), nxt)

    run(test)


def test_take_current_returns_pending_invocation_so_it_is_never_delivered() -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            inv = make_invocation()
            server.submit(inv)
            assert server.take_current() == (inv, False), "submitted, never picked up"
            await client.send("GET", NEXT)
            await eventually(lambda: calls.ready == 1)
            parked = asyncio.create_task(client.receive())
            await asyncio.sleep(0.02)
            assert not parked.done(), "a taken invocation must not be delivered"
            nxt = make_invocation("req-2")
            server.submit(nxt)
            assert_is_invocation(*await parked, nxt)

    run(test)


def test_close_drops_connections_and_stops_listening() -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            await client.send("GET", NEXT)
            await eventually(lambda: calls.ready == 1)
            host, port = server.address.rsplit(":", 1)
            server.close()
            assert await client.at_eof()
            with pytest.raises(OSError):
                _, writer = await asyncio.open_connection(host, int(port))
                writer.close()
                await writer.wait_closed()
            # A submit after close does not go to the dead poller.
            inv = make_invocation()
            server.submit(inv)
            assert server.take_current() == (inv, False)
            server.close()  # twice is fine

    run(test)


def test_request_pipelined_behind_a_parked_poll_is_answered_after_it() -> None:
    async def test() -> None:
        async with serve() as (server, calls), connect(server) as client:
            await client.send("GET", NEXT)
            await client.send("GET", "/2018-06-01/runtime/nothing-here")
            await eventually(lambda: calls.ready == 1)
            await asyncio.sleep(0.02)
            inv = make_invocation()
            server.submit(inv)
            assert_is_invocation(*await client.receive(), inv)
            status, _, _ = await client.receive()
            assert status == 404

    run(test)


# -- SnapStart's restore phase -----------------------------------------------------------------

RESTORE_NEXT = "/2018-06-01/runtime/restore/next"
RESTORE_ERROR = "/2018-06-01/runtime/restore/error"


def test_restore_calls_are_refused_outside_a_restored_environment() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            for method, path, sent in (("GET", RESTORE_NEXT, b""), ("POST", RESTORE_ERROR, b"{}")):
                status, _, body = await client.request(method, path, sent)
                assert status == 403
                assert json.loads(body)["errorType"] == "Runtime.InvalidStateTransition"

    run(test)


def test_a_restored_runtime_gets_restore_next_and_reports_a_hook_error() -> None:
    async def test() -> None:
        async with serve() as (server, _), connect(server) as client:
            errors: list[tuple[bytes, str | None]] = []
            server.restoring = True
            server.on_restore_error = lambda body, kind: errors.append((body, kind))
            status, _, body = await client.request("GET", RESTORE_NEXT)
            assert (status, body) == (200, b"")
            err = b'{"errorMessage":"no db","errorType":"Runtime.AfterRestoreError"}'
            status, _, _ = await client.request(
                "POST",
                RESTORE_ERROR,
                err,
                {"Lambda-Runtime-Function-Error-Type": "Runtime.AfterRestoreError"},
            )
            assert status == 202
            assert errors == [(err, "Runtime.AfterRestoreError")]

    run(test)
