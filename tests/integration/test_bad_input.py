"""Malformed requests get an AWS-shaped error, never a 500, and a failure of ours leaves the
connection usable (issue 15, items 4 and 5)."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import sqlite3
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from tests.conftest import SIGNED, Functions, Server, make_zip, wait_for

from lamina import event_patterns as patterns
from lamina import limits
from lamina.api.http_protocol import HEAD_MAX_BYTES

pytestmark = pytest.mark.control_plane


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
    with contextlib.closing(sqlite3.connect(server.data_dir / "lamina.db")) as db:
        db.execute("DROP TABLE layer_versions")
        db.commit()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        status, headers, body = send(conn, signed("GET", server.endpoint + "/2018-10-31/layers"))
        assert status == 500
        assert headers["x-amzn-errortype"] == "ServiceException"
        error = json.loads(body)
        assert error["Type"] == "Service"
        assert "OperationalError" not in error["Message"]
        assert "layer_versions" not in error["Message"]
        # The same connection, next request: answered.
        status, _, body = send(conn, signed("GET", server.endpoint + "/2015-03-31/functions"))
        assert status == 200, body
        assert json.loads(body) == {"Functions": []}
    finally:
        conn.close()
    log = server.log()
    assert "layer_versions" in log  # the detail went to the server's log, once
    assert log.count("unhandled error") == 1


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


def other_marker(operation: str) -> str:
    """A marker as Lamina makes them, but issued by `operation`."""
    return base64.urlsafe_b64encode(json.dumps([operation, "a"]).encode()).decode().rstrip("=")


#: markers no listing gave out: not base64, base64 of plain text, bytes that are not UTF-8,
#: and a well-formed marker of another operation
GARBAGE_MARKERS = ["garbage!!", "Zm9v", "AAAA", "//79", other_marker("ListSomethingElse")]


def test_garbage_markers_are_refused(lam: Any, functions: Functions) -> None:
    """Every paginated Lambda list refuses a marker it did not give out (it used to start
    over, or answer an empty page), and continues from one it did."""
    name = functions.create(ECHO)["FunctionName"]
    functions.create(ECHO)  # ListFunctions needs two pages
    for timeout in (5, 6):
        lam.update_function_configuration(FunctionName=name, Timeout=timeout)
        lam.get_waiter("function_updated_v2").wait(
            FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        version = lam.publish_version(FunctionName=name)["Version"]
        lam.create_alias(FunctionName=name, Name=f"a{version}", FunctionVersion=version)
        lam.put_function_event_invoke_config(
            FunctionName=name, Qualifier=version, MaximumRetryAttempts=0
        )
        lam.create_function_url_config(
            FunctionName=name, Qualifier=f"a{version}", AuthType="AWS_IAM"
        )
        lam.put_provisioned_concurrency_config(
            FunctionName=name, Qualifier=version, ProvisionedConcurrentExecutions=1
        )
    layers = [f"l-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    layer = layers[0]
    for each in (layer, *layers):  # two versions of one, and a second layer
        lam.publish_layer_version(LayerName=each, Content={"ZipFile": make_zip({"a.py": ""})})
    lists: list[tuple[str, Callable[..., Any], dict[str, Any], str]] = [
        ("ListFunctions", lam.list_functions, {}, "Functions"),
        (
            "ListVersionsByFunction",
            lam.list_versions_by_function,
            {"FunctionName": name},
            "Versions",
        ),
        ("ListAliases", lam.list_aliases, {"FunctionName": name}, "Aliases"),
        ("ListLayers", lam.list_layers, {}, "Layers"),
        ("ListLayerVersions", lam.list_layer_versions, {"LayerName": layer}, "LayerVersions"),
        (
            "ListFunctionUrlConfigs",
            lam.list_function_url_configs,
            {"FunctionName": name},
            "FunctionUrlConfigs",
        ),
        (
            "ListFunctionEventInvokeConfigs",
            lam.list_function_event_invoke_configs,
            {"FunctionName": name},
            "FunctionEventInvokeConfigs",
        ),
        (
            "ListProvisionedConcurrencyConfigs",
            lam.list_provisioned_concurrency_configs,
            {"FunctionName": name},
            "ProvisionedConcurrencyConfigs",
        ),
    ]
    try:
        for operation, call, args, member in lists:
            whole = call(**args, MaxItems=50)[member]
            first = call(**args, MaxItems=1)
            assert first.get("NextMarker"), operation
            rest = call(**args, Marker=first["NextMarker"], MaxItems=50)[member]
            assert first[member] + rest == whole, operation
            for marker in GARBAGE_MARKERS:
                with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
                    call(**args, Marker=marker)
                assert "Marker" in e.value.response["Error"]["Message"], (operation, marker)
    finally:
        for each, version in ((layer, 1), (layer, 2), (layers[1], 1)):
            lam.delete_layer_version(LayerName=each, VersionNumber=version)


def test_garbage_tokens_are_refused(server: Server) -> None:
    """The Logs and EventBridge lists refuse tokens they did not give out."""
    events = server.client("events")
    names = [f"r-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for rule in names:
        events.put_rule(Name=rule, ScheduleExpression="rate(1 day)", State="DISABLED")
    logs = server.client("logs")
    try:
        first = events.list_rules(Limit=1)
        assert events.list_rules(NextToken=first["NextToken"])["Rules"]
        for token in GARBAGE_MARKERS:
            with pytest.raises(events.exceptions.ClientError) as e:
                events.list_rules(NextToken=token)
            assert e.value.response["Error"]["Code"] == "ValidationException"
        # [] and ["x", 1] decode as JSON lists, but of the wrong shape for either order
        for token in [*GARBAGE_MARKERS, "W10", other_marker("x")]:
            with pytest.raises(logs.exceptions.InvalidParameterException):
                logs.describe_log_groups(nextToken=token)
    finally:
        for rule in names:
            events.delete_rule(Name=rule)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"Runtime": None}, "runtime"),
        ({"Handler": None}, "handler"),
        ({"Timeout": None}, "timeout"),
        ({"MemorySize": None}, "memorySize"),
        ({"KMSKeyArn": None}, "kMSKeyArn"),
        ({"Environment": None}, "environment"),
        ({"Environment": {"Variables": None}}, "environment.variables"),
        ({"Environment": {"Variables": {"A": None}}}, "environment.variables.a"),
        ({"EphemeralStorage": {"Size": None}}, "ephemeralStorage.size"),
        ({"LoggingConfig": {"LogFormat": None}}, "loggingConfig.logFormat"),
        ({"Layers": [None]}, "layers"),
    ],
)
def test_null_member_is_refused(
    server: Server, lam: Any, functions: Functions, body: dict[str, Any], where: str
) -> None:
    """`{"Runtime": null}` used to change nothing and answer 200: a member sent as null, at
    any depth, is a ValidationException naming it, and the function is left as it was."""
    name = functions.create(ECHO)["FunctionName"]
    before = lam.get_function_configuration(FunctionName=name)
    url = f"{server.endpoint}/2015-03-31/functions/{name}/configuration"
    raw_body = json.dumps({**body, "Description": "changed"}).encode()
    status, headers, raw = send_once(server, signed("PUT", url, raw_body))
    assert status == 400
    assert headers["x-amzn-errortype"] == "ValidationException"
    assert f"Value null at '{where}'" in json.loads(raw)["message"]
    after = lam.get_function_configuration(FunctionName=name)
    assert after["RevisionId"] == before["RevisionId"]
    assert after["Description"] == before["Description"]


@pytest.mark.parametrize(
    ("target", "error_type"),
    [
        ("Logs_20140328.DescribeLogGroups", "InvalidParameterException"),
        ("AWSEvents.ListRules", "ValidationException"),
    ],
)
def test_null_member_json_protocol(server: Server, target: str, error_type: str) -> None:
    request = signed(
        "POST",
        server.endpoint + "/",
        b'{"limit": null, "Limit": null}',
        {"x-amz-target": target, "content-type": "application/x-amz-json-1.1"},
    )
    status, _, body = send_once(server, request)
    assert status == 400
    error = json.loads(body)
    assert error["__type"] == error_type
    assert "Value null at 'limit'" in error["message"]


def raw_exchange(server: Server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes; the (status, headers, body) of the one response, read to its close."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):
            sock.sendall(request)
        data = b""
        while chunk := sock.recv(65536):  # the server closes after refusing
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


@pytest.mark.parametrize(
    ("request_bytes", "status", "error_type"),
    [
        (
            b"GET /2015-03-31/functions/" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
            "RequestUriTooLongException",
        ),
        (
            b"GET /health?" + b"q" * 70_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
            414,
            "RequestUriTooLongException",
        ),
        (
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 5_000_000 + b"\r\n\r\n",
            431,
            "RequestHeaderFieldsTooLargeException",
        ),
        (b"NOT AN HTTP REQUEST\r\n\r\n", 400, "BadRequestException"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, "BadRequestException"),
    ],
    ids=["long-path", "long-query", "huge-header", "garbage", "bad-length"],
)
def test_unparseable_request_is_aws_shaped(
    server: Server, request_bytes: bytes, status: int, error_type: str
) -> None:
    """uvicorn answered these with plain text `400 Invalid HTTP request received.`"""
    got, headers, body = raw_exchange(server, request_bytes)
    assert got == status
    assert headers["x-amzn-errortype"] == error_type
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["__type"] == error_type
    assert error["message"]


def test_long_path_under_the_limit_reaches_the_api(server: Server) -> None:
    """A long target below the bound is routed like any other (here: no such function)."""
    url = f"{server.endpoint}/2015-03-31/functions/{'a' * 60_000}"
    status, headers, _ = send_once(server, signed("GET", url))
    assert status in (400, 404)
    assert headers["x-amzn-errortype"] in ("ValidationException", "ResourceNotFoundException")


DEEP_LOGGER = """
def handler(event, context):
    print('{"a":' + '[' * 5000 + ']' * 5000 + '}')
    print('{"a": 1}')
    return 1
"""


def test_filter_patterns_and_deep_log_lines(server: Server, lam: Any, functions: Functions) -> None:
    """A JSON filter pattern nested past its bound is InvalidParameterException (it was a
    RecursionError), and a log line too deep to parse simply does not match."""
    logs = server.client("logs")
    name = functions.create(DEEP_LOGGER)["FunctionName"]
    lam.invoke(FunctionName=name)
    group = f"/aws/lambda/{name}"
    deep_pattern = "{ " + "(" * 300 + "$.a = 1" + ")" * 300 + " }"
    with pytest.raises(logs.exceptions.InvalidParameterException):
        logs.filter_log_events(logGroupName=group, filterPattern=deep_pattern)

    def matched() -> list[str]:
        found = logs.filter_log_events(logGroupName=group, filterPattern="{ $.a = 1 }")
        return [e["message"].strip() for e in found["events"]]

    assert wait_for(matched, message="the matching line") == ['{"a": 1}']


def test_large_body_in_one_write_is_not_taken_for_headers(
    server: Server, functions: Functions
) -> None:
    """The head-size bound counts the request line and headers only: a head just under it
    followed by a large body, which arrive in the same reads, is a request like any other."""
    name = functions.create(ECHO)["FunctionName"]
    payload = json.dumps({"a": "x" * 1_000_000}).encode()
    url = f"{server.endpoint}/2015-03-31/functions/{name}/invocations"
    request = signed("POST", url, payload, {"x-padding": "p" * (HEAD_MAX_BYTES - 8 * 1024)})
    head = f"POST {request.url.raw_path.decode()} HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in request.headers.items()
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        sock.sendall(head.encode() + b"connection: close\r\n\r\n" + payload)
        data = b""
        while chunk := sock.recv(1 << 20):
            data += chunk
    status_line = data.split(b"\r\n", 1)[0]
    assert status_line.split()[1] == b"200", data[:300]
    assert json.loads(data.partition(b"\r\n\r\n")[2]) == {"a": "x" * 1_000_000}
