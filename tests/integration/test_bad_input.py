"""Malformed requests get an AWS-shaped error, never a 500, and a failure of ours leaves the
connection usable (issue 15, items 4 and 5)."""

from __future__ import annotations

import http.client
import json
import sqlite3
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.conftest import SIGNED, Functions, Server

from lamina import limits
from lamina.events import patterns


def signed(
    method: str, url: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> httpx.Request:
    """`method url` signed as the admin key, ready to send on any connection."""
    request = httpx.Request(method, url, content=body, headers=headers or {})
    return next(SIGNED.auth_flow(request))


def send(
    conn: http.client.HTTPConnection, request: httpx.Request
) -> tuple[int, dict[str, str], bytes]:
    """One request on `conn` (kept alive), and its (status, headers by lower name, body)."""
    target = request.url.raw_path.decode()
    conn.request(request.method, target, body=request.content, headers=dict(request.headers))
    response = conn.getresponse()
    return (
        response.status,
        {k.lower(): v for k, v in response.getheaders()},
        response.read(),
    )


def test_internal_error_keeps_the_connection(own_server: Callable[..., Server]) -> None:
    """A failure of ours (here a damaged store: a table gone under the running server) gets
    ServiceException without internal names, is logged, and the keep-alive connection
    answers the next request."""
    server = own_server()
    with sqlite3.connect(server.data_dir / "lamina.db") as db:
        db.execute("DROP TABLE layer_versions")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        status, headers, body = send(conn, signed("GET", server.endpoint + "/2018-10-31/layers"))
        assert status == 500
        assert headers["x-amzn-errortype"] == "ServiceException"
        error = json.loads(body)
        assert error["Type"] == "Service"
        assert "OperationalError" not in error["message"]
        assert "layer_versions" not in error["message"]
        # The same connection, next request: answered.
        status, _, body = send(conn, signed("GET", server.endpoint + "/2015-03-31/functions"))
        assert status == 200, body
        assert json.loads(body) == {"Functions": []}
    finally:
        conn.close()
    assert "layer_versions" in server.log()  # the detail went to the server's log


def nested(depth: int, leaf: str = "1") -> str:
    """A JSON document `depth` levels deep: objects whose innermost member is a list."""
    return '{"a":' * (depth - 1) + f"[{leaf}]" + "}" * (depth - 1)


ECHO = "def handler(event, context):\n    return event\n"


def test_deep_json_payload(lam: Any, functions: Functions) -> None:
    """A payload at the nesting limit is invoked and comes back whole; past it (and far past
    it, where Python's decoder itself gives up) it is InvalidRequestContentException."""
    name = functions.create(ECHO)["FunctionName"]
    at_limit = nested(limits.JSON_MAX_DEPTH)
    out = lam.invoke(FunctionName=name, Payload=at_limit.encode())
    assert "FunctionError" not in out
    assert json.loads(out["Payload"].read()) == json.loads(at_limit)
    for depth in (limits.JSON_MAX_DEPTH + 1, 20_000):
        for invocation_type in ("RequestResponse", "Event"):
            with pytest.raises(lam.exceptions.InvalidRequestContentException) as e:
                lam.invoke(
                    FunctionName=name,
                    Payload=nested(depth).encode(),
                    InvocationType=invocation_type,
                )
            assert "nested deeper than" in e.value.response["Error"]["Message"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/2015-03-31/functions"),
        ("PUT", "/2015-03-31/functions/x/configuration"),
        ("POST", "/2015-03-31/functions/x/policy"),
        ("POST", "/lamina/routes"),
    ],
)
def test_deep_json_body(server: Server, method: str, path: str) -> None:
    status, headers, body = send_once(
        server, signed(method, server.endpoint + path, nested(100_000).encode())
    )
    assert status == 400
    assert headers["x-amzn-errortype"] == "InvalidRequestContentException"
    assert "RecursionError" not in body.decode()


@pytest.mark.parametrize("target", ["Logs_20140328.DescribeLogGroups", "AWSEvents.ListRules"])
def test_deep_json_body_json_protocol(server: Server, target: str) -> None:
    request = signed(
        "POST",
        server.endpoint + "/",
        nested(100_000).encode(),
        {"x-amz-target": target, "content-type": "application/x-amz-json-1.1"},
    )
    status, _, body = send_once(server, request)
    assert status == 400
    assert json.loads(body)["__type"] == "SerializationException"


def test_deep_event_pattern(server: Server) -> None:
    """A pattern nested past Lamina's pattern limit is InvalidEventPatternException (it fits
    in EventBridge's 4,096 characters); one at the limit is a pattern like any other; an
    event whose arrays nest as deep as JSON may is matched, not a server error."""
    events = server.client("events")
    for too_deep in (nested(patterns.MAX_DEPTH + 1, '"x"'), nested(600, '"x"')):
        assert len(too_deep) <= 4096
        with pytest.raises(events.exceptions.InvalidEventPatternException):
            events.put_rule(Name="too-deep", EventPattern=too_deep)
        with pytest.raises(events.exceptions.InvalidEventPatternException):
            events.test_event_pattern(EventPattern=too_deep, Event=json.dumps(EVENT))
    deep = nested(patterns.MAX_DEPTH, '"x"')
    events.put_rule(Name="deep-enough", EventPattern=deep)
    try:
        assert not events.test_event_pattern(EventPattern=deep, Event=json.dumps(EVENT))["Result"]
    finally:
        events.delete_rule(Name="deep-enough")
    arrays = "[" * (limits.JSON_MAX_DEPTH - 4) + '{"b": ["x"]}' + "]" * (limits.JSON_MAX_DEPTH - 4)
    event = json.dumps(EVENT)[:-3] + '{"a": ' + arrays + "}}"
    pattern = json.dumps({"detail": {"a": {"b": ["x"]}}})
    assert events.test_event_pattern(EventPattern=pattern, Event=event)["Result"]


EVENT = {
    "id": "1",
    "account": "000000000000",
    "source": "test",
    "time": "2024-01-01T00:00:00Z",
    "region": "us-east-1",
    "detail-type": "t",
    "resources": [],
    "detail": {},
}


def send_once(server: Server, request: httpx.Request) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        return send(conn, request)
    finally:
        conn.close()
