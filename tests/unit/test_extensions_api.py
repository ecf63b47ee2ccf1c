"""The Extensions, Telemetry and Logs APIs on one environment's Runtime API server.

Raw HTTP/1.1 as extension clients speak it (the helpers of `test_runtime_api`), and a real
listener for telemetry batches on the host's loopback (the server's `connect`).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tests.unit.test_runtime_api import (
    NEXT,
    Calls,
    Client,
    connect,
    eventually,
    make_invocation,
    run,
)

from lamina.runtime_api import RuntimeApiServer, telemetry
from lamina.sandbox.api import connect_local

REGISTER = "/2020-01-01/extension/register"
EVENT_NEXT = "/2020-01-01/extension/event/next"
INFO = {
    "functionName": "f",
    "functionVersion": "$LATEST",
    "handler": "app.handler",
    "accountId": "123456789012",
}


@asynccontextmanager
async def serve(
    expected: frozenset[str] = frozenset(),
) -> AsyncIterator[tuple[RuntimeApiServer, Calls, list[int]]]:
    calls = Calls()
    settled: list[int] = []

    def on_ready() -> None:
        calls.ready += 1

    def on_init_error(body: bytes, error_type: str | None) -> None:
        calls.init_errors.append((body, error_type))

    server = RuntimeApiServer(
        on_ready=on_ready,
        on_init_error=on_init_error,
        function_info=INFO,
        on_settled=lambda: settled.append(1),
    )
    server.extensions.expected = expected
    server.telemetry.connect = connect_local
    await server.start()
    try:
        yield server, calls, settled
    finally:
        server.close()
        await asyncio.sleep(0)


async def put(ext: Client, path: str, body: dict[str, object], ident: str) -> tuple[int, bytes]:
    data = json.dumps(body).encode()
    headers = {"Lambda-Extension-Identifier": ident, "Content-Length": str(len(data))}
    status, _, answer = await ext.request("PUT", path, data, headers)
    return status, answer


async def register(server: RuntimeApiServer, name: str, events: list[str]) -> str:
    async with connect(server) as ext:
        status, headers, body = await ext.request(
            "POST",
            REGISTER,
            json.dumps({"events": events}).encode(),
            {"Lambda-Extension-Name": name},
        )
    assert status == 200, body
    return headers["lambda-extension-identifier"]


def test_register_answers_the_function_and_refuses_bad_calls() -> None:
    async def test() -> None:
        async with serve(frozenset({"ext"})) as (server, _, _), connect(server) as ext:
            status, headers, body = await ext.request(
                "POST",
                REGISTER,
                b'{"events":["INVOKE","SHUTDOWN"]}',
                {
                    "Lambda-Extension-Name": "ext",
                    "Lambda-Extension-Accept-Feature": "accountId",
                },
            )
            assert status == 200
            assert json.loads(body) == INFO
            ident = headers["lambda-extension-identifier"]
            # Twice the same name; an internal extension asking for SHUTDOWN; no name.
            for name, events, error in (
                ("ext", ["INVOKE"], "Extension.InvalidExtensionState"),
                ("inproc", ["SHUTDOWN"], "Extension.InvalidEventType"),
                ("", ["INVOKE"], "Extension.InvalidExtensionName"),
            ):
                hdrs = {"Lambda-Extension-Name": name} if name else {}
                status, _, body = await ext.request(
                    "POST", REGISTER, json.dumps({"events": events}).encode(), hdrs
                )
                assert (status, json.loads(body)["errorType"]) == (403, error)
            for hdrs, error in (
                ({}, "Extension.MissingExtensionIdentifier"),
                ({"Lambda-Extension-Identifier": "x"}, "Extension.InvalidExtensionIdentifier"),
                (
                    {"Lambda-Extension-Identifier": "00000000-0000-4000-8000-000000000000"},
                    "Extension.UnknownExtensionIdentifier",
                ),
            ):
                status, _, body = await ext.request("GET", EVENT_NEXT, b"", hdrs)
                assert (status, json.loads(body)["errorType"]) == (403, error)
            status, _, body = await ext.request(
                "POST",
                "/2020-01-01/extension/init/error",
                b"{}",
                {"Lambda-Extension-Identifier": ident},
            )
            assert (status, json.loads(body)["errorType"]) == (403, "Extension.MissingHeader")

    run(test)


def test_init_waits_for_every_extension_and_invocations_for_their_next() -> None:
    async def test() -> None:
        async with serve(frozenset({"ext"})) as (server, calls, settled):
            server.submit(make_invocation("req-1"))
            async with connect(server) as runtime, connect(server) as ext:
                # The runtime is ready first: its /next waits for the extension.
                await runtime.send("GET", NEXT)
                await asyncio.sleep(0.05)
                assert calls.ready == 0
                ident = await register(server, "ext", ["INVOKE", "SHUTDOWN"])
                await asyncio.sleep(0.05)
                assert calls.ready == 0  # registered, not yet waiting for events
                await ext.send("GET", EVENT_NEXT, headers={"Lambda-Extension-Identifier": ident})
                status, headers, _ = await runtime.receive()
                assert calls.ready == 1
                assert headers["lambda-runtime-aws-request-id"] == "req-1"
                status, _, body = await ext.receive()
                event = json.loads(body)
                assert event["eventType"] == "INVOKE" and event["requestId"] == "req-1"
                assert event["tracing"]["type"] == "X-Amzn-Trace-Id"
                assert server.extensions_busy
                # Registration closed with the init phase.
                async with connect(server) as late:
                    status, _, body = await late.request(
                        "POST", REGISTER, b'{"events":[]}', {"Lambda-Extension-Name": "late"}
                    )
                    assert json.loads(body)["errorType"] == "Extension.RegistrationClosed"
                # The runtime answers; the invocation is settled once the extension is back.
                status, _, _ = await runtime.request(
                    "POST", "/2018-06-01/runtime/invocation/req-1/response", b"{}"
                )
                assert status == 202 and not settled
                await ext.send("GET", EVENT_NEXT, headers={"Lambda-Extension-Identifier": ident})
                await eventually(lambda: bool(settled))
                assert not server.extensions_busy
                # SHUTDOWN reaches the extension parked in /event/next.
                targets = server.shutdown("spindown", 1234)
                assert [t.name for t in targets] == ["ext"]
                status, _, body = await ext.receive()
                assert json.loads(body) == {
                    "eventType": "SHUTDOWN",
                    "shutdownReason": "spindown",
                    "deadlineMs": 1234,
                }

    run(test)


def test_extension_init_error_fails_the_init() -> None:
    async def test() -> None:
        async with serve(frozenset({"ext"})) as (server, calls, _):
            ident = await register(server, "ext", ["INVOKE"])
            async with connect(server) as ext:
                status, _, _ = await ext.request(
                    "POST",
                    "/2020-01-01/extension/init/error",
                    b'{"errorType":"Extension.Broken","errorMessage":"no"}',
                    {
                        "Lambda-Extension-Identifier": ident,
                        "Lambda-Extension-Function-Error-Type": "Extension.Broken",
                    },
                )
            assert status == 202
            assert calls.init_errors == [
                (b'{"errorType":"Extension.Broken","errorMessage":"no"}', "Extension.Broken")
            ]

    run(test)


async def _listener() -> tuple[asyncio.AbstractServer, int, asyncio.Queue[list[dict[str, object]]]]:
    batches: asyncio.Queue[list[dict[str, object]]] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await batches.put(json.loads(await reader.readexactly(length)))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    return listener, port, batches


def test_telemetry_and_logs_api_deliver_batches_in_their_schemas() -> None:
    async def test() -> None:
        async with serve() as (server, _, _):
            listener, port, batches = await _listener()
            try:
                # Before the subscriptions: kept and delivered to each later subscriber.
                server.telemetry.platform(("platform.initStart", {"phase": "init"}), None)
                server.telemetry.line("function", 1_700_000_000_000, "init line")
                ident = await register(server, "inproc", ["INVOKE"])
                uri = f"http://sandbox.localdomain:{port}/t"
                async with connect(server) as ext:
                    for path, body in (
                        ("/2022-07-01/telemetry", {"schemaVersion": "2022-12-13"}),
                        ("/2020-08-15/logs", {}),
                    ):
                        request = {
                            **body,
                            "destination": {"protocol": "HTTP", "URI": uri},
                            "types": ["platform", "function"],
                            "buffering": {"timeoutMs": 25, "maxItems": 1000},
                        }
                        assert await put(ext, path, request, ident) == (200, b'"OK"')
                    # Bad subscriptions: Lambda's ValidationError.
                    for bad in (
                        {"schemaVersion": "1999-01-01", "types": ["platform"]},
                        {"schemaVersion": "2022-12-13", "types": ["nope"]},
                        {
                            "schemaVersion": "2022-12-13",
                            "types": ["platform"],
                            "buffering": {"timeoutMs": 5},
                        },
                    ):
                        request = {**bad, "destination": {"protocol": "HTTP", "URI": uri}}
                        status, answer = await put(ext, "/2022-07-01/telemetry", request, ident)
                        assert (status, json.loads(answer)["errorType"]) == (
                            400,
                            "ValidationError",
                        )
                got: list[dict[str, object]] = []
                while len(got) < 5:
                    got += await asyncio.wait_for(batches.get(), 2)
                types = sorted(str(e["type"]) for e in got)
                assert types == sorted(
                    [
                        "platform.telemetrySubscription",
                        "platform.initStart",
                        "function",
                        "platform.logsSubscription",
                        "function",
                    ]
                )
                line = next(e for e in got if e["type"] == "function")
                assert line == {
                    "time": "2023-11-14T22:13:20.000Z",
                    "type": "function",
                    "record": "init line",
                }
            finally:
                listener.close()

    run(test)


def test_a_dead_listener_costs_nothing_but_the_batch() -> None:
    async def test() -> None:
        async with serve() as (server, _, _):
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]  # nobody listens here
            ident = await register(server, "inproc", ["INVOKE"])
            async with connect(server) as ext:
                request = {
                    "schemaVersion": "2022-12-13",
                    "destination": {"protocol": "HTTP", "URI": f"http://sandbox:{port}/"},
                    "types": ["platform"],
                    "buffering": {"timeoutMs": 25},
                }
                assert (await put(ext, "/2022-07-01/telemetry", request, ident))[0] == 200
            await server.telemetry.drain(1.0)  # the batch is dropped, nothing raised

    run(test)


def test_platform_events_in_each_api_schema() -> None:
    async def test() -> None:
        async with serve() as (server, _, _):
            listener, port, batches = await _listener()
            try:
                ident = await register(server, "inproc", ["INVOKE"])
                uri = f"http://sandbox.localdomain:{port}/t"
                async with connect(server) as ext:
                    for path, body in (
                        ("/2022-07-01/telemetry", {"schemaVersion": "2022-12-13"}),
                        ("/2020-08-15/logs", {}),
                    ):
                        request = {
                            **body,
                            "destination": {"protocol": "HTTP", "URI": uri},
                            "types": ["platform"],
                            "buffering": {"timeoutMs": 25},
                        }
                        assert await put(ext, path, request, ident) == (200, b'"OK"')
                telemetry = server.telemetry
                telemetry.init_done("success", 12.3456, None)
                telemetry.invoke_start("r1", "$LATEST", "Root=1-abc")
                telemetry.runtime_done("r1", "error", 5.5, 17, "Handled")
                metrics = {"durationMs": 7.0, "billedDurationMs": 7, "memorySizeMB": 128}
                telemetry.report("r1", {"requestId": "r1", "status": "error", "metrics": metrics})
                got: list[dict[str, object]] = []
                while len(got) < 11:
                    got += await asyncio.wait_for(batches.get(), 2)
                by_type: dict[str, list[object]] = {}
                for event in got:
                    by_type.setdefault(str(event["type"]), []).append(event["record"])
                assert by_type["platform.initReport"] == [
                    {
                        "initializationType": "on-demand",
                        "phase": "init",
                        "status": "success",
                        "metrics": {"durationMs": 12.346},
                    }
                ]
                # Each API's own shape of the same moments.
                assert sorted(by_type["platform.start"], key=len) == [
                    {"requestId": "r1", "version": "$LATEST"},
                    {
                        "requestId": "r1",
                        "version": "$LATEST",
                        "tracing": {"type": "X-Amzn-Trace-Id", "value": "Root=1-abc"},
                    },
                ]
                assert sorted(by_type["platform.runtimeDone"], key=len) == [
                    {"requestId": "r1", "status": "error"},
                    {
                        "requestId": "r1",
                        "status": "error",
                        "metrics": {"durationMs": 5.5, "producedBytes": 17},
                        "errorType": "Handled",
                    },
                ]
                assert by_type["platform.end"] == [{"requestId": "r1"}]
                assert sorted(by_type["platform.report"], key=len) == [
                    {"requestId": "r1", "metrics": metrics},
                    {"requestId": "r1", "status": "error", "metrics": metrics},
                ]
            finally:
                listener.close()

    run(test)


def test_a_listener_that_never_answers_holds_a_bounded_backlog() -> None:
    async def test() -> None:
        async with serve() as (server, _, _):
            stuck: list[asyncio.StreamWriter] = []

            async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                stuck.append(writer)  # reads nothing, answers nothing

            listener = await asyncio.start_server(hold, "127.0.0.1", 0)
            port = listener.sockets[0].getsockname()[1]
            try:
                ident = await register(server, "inproc", ["INVOKE"])
                request = {
                    "schemaVersion": "2022-12-13",
                    "destination": {"protocol": "HTTP", "URI": f"http://sandbox:{port}/"},
                    "types": ["function"],
                    "buffering": {"maxItems": 25},
                }
                async with connect(server) as ext:
                    await put(ext, "/2022-07-01/telemetry", request, ident)
                for i in range(25 * 100):
                    server.telemetry.line("function", 0, f"line {i}")
                sub = server.telemetry._subs[0]
                assert len(sub.batches) <= telemetry.MAX_QUEUED_BATCHES
            finally:
                listener.close()
                for writer in stuck:
                    writer.close()

    run(test)
