"""Every route, every member, wrong on purpose: no request gets a 500, and every refusal is
AWS-shaped (issue 15, item 4).

The requests are built from botocore's service models (`lambda`, `logs`, `events`): each
operation's path, query, header and body members get values of the wrong type, nulls, huge
numbers, deep nesting, invalid UTF-8 and bodies that are not JSON objects. Lamina's own
`/lamina/*` endpoints, a function URL and an HTTP route get the same bodies. The server is
the test's own: the fuzzing changes and deletes what it finds.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from typing import Any

import botocore.session
import httpx
import pytest
from starlette.applications import Starlette
from tests.conftest import ROLE, SIGNED, Server, allow_event_sources, make_zip

from lamina.api.app import build_app

pytestmark = pytest.mark.control_plane

DEEP = ("[" * 100_000 + "]" * 100_000).encode()
#: whole bodies that are not a JSON object of the right members
BODIES: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"123",
    b'"text"',
    b"{",
    b'{"a": 1}{"b": 2}',
    b"\xff\xfe\xfd",
    b'{"\xff": 1}',
    DEEP,
    b'{"a":' * 600 + b"1" + b"}" * 600,
    b"1" * 5000,
    b'{"x": 1e999}',
]
#: values for one member of a JSON body
VALUES: list[Any] = [
    None,
    123,
    -1,
    10**40,
    1.5e308,
    "",
    "\x00",
    "x" * 70_000,
    True,
    [],
    {},
    [[[[[[["deep"]]]]]]],
    {"a": {"b": {"c": None}}},
]
#: values for one query-string parameter or path segment
TEXTS = ["", "x", "-1", "0", "99999999999999999999999999", "1e400", "%00", "%ff%fe", "%zz"]
TEXTS += ["a" * 3000]
#: values for one header
HEADER_VALUES = ["", "x", "-1", "{}", "e30=", "W10=", "!!!", "a" * 5000]
HEADER_VALUES += [base64.b64encode(b"[" * 2000 + b"]" * 2000).decode()]

_MODELS = botocore.session.get_session()
_ZIP = base64.b64encode(make_zip({"app.py": "def handler(e, c):\n    return e\n"})).decode()
_FN_ARN = "arn:aws:lambda:us-east-1:000000000000:function:fz"
#: a valid body of each operation that takes a rich one: each member of it, at any depth, is
#: then replaced by each of VALUES in turn (the checks behind the first ones are reached)
LAMBDA_BASES: dict[str, dict[str, Any]] = {
    "CreateFunction": {
        "FunctionName": "fz-made",
        "Runtime": "python3.11",
        "Role": ROLE,
        "Handler": "app.handler",
        "Code": {"ZipFile": _ZIP},
        "Timeout": 3,
        "MemorySize": 128,
        "Environment": {"Variables": {"A": "b"}},
        "EphemeralStorage": {"Size": 512},
        "Architectures": ["x86_64"],
        "Layers": ["arn:aws:lambda:us-east-1:000000000000:layer:fzl:1"],
        "DeadLetterConfig": {"TargetArn": _FN_ARN},
        "LoggingConfig": {"LogFormat": "JSON", "ApplicationLogLevel": "INFO"},
        "Tags": {"k": "v"},
        "Publish": False,
    },
    "UpdateFunctionConfiguration": {
        "Timeout": 3,
        "MemorySize": 128,
        "Environment": {"Variables": {"A": "b"}},
        "LoggingConfig": {"LogFormat": "Text"},
        "Layers": [],
    },
    "UpdateFunctionCode": {"ZipFile": _ZIP, "Publish": False},
    "PublishVersion": {"Description": "d"},
    "CreateAlias": {"Name": "a2", "FunctionVersion": "1", "RoutingConfig": {}},
    "UpdateAlias": {
        "FunctionVersion": "1",
        "RoutingConfig": {"AdditionalVersionWeights": {"1": 0.5}},
    },
    "AddPermission": {
        "StatementId": "s2",
        "Action": "lambda:InvokeFunction",
        "Principal": "events.amazonaws.com",
        "SourceArn": "arn:aws:events:us-east-1:000000000000:rule/r",
    },
    "CreateFunctionUrlConfig": {
        "AuthType": "AWS_IAM",
        "Cors": {"AllowOrigins": ["*"], "MaxAge": 10, "AllowMethods": ["GET"]},
    },
    "UpdateFunctionUrlConfig": {"AuthType": "AWS_IAM", "Cors": {"AllowHeaders": ["x"]}},
    "TagResource": {"Tags": {"k": "v", "k2": ""}},
    # event-source mappings: a queue's, and settings of every kind (most refused for SQS)
    "CreateEventSourceMapping": {
        "FunctionName": "fz",
        "EventSourceArn": "arn:aws:sqs:us-east-1:000000000000:fzq",
        "BatchSize": 20,
        "MaximumBatchingWindowInSeconds": 1,
        "FilterCriteria": {"Filters": [{"Pattern": '{"body": {"a": [1]}}'}]},
        "ScalingConfig": {"MaximumConcurrency": 2},
        "FunctionResponseTypes": ["ReportBatchItemFailures"],
        "StartingPosition": "LATEST",
        "Queues": ["q"],
        "SourceAccessConfigurations": [{"Type": "VIRTUAL_HOST", "URI": "/"}],
        "DestinationConfig": {"OnFailure": {"Destination": _FN_ARN}},
        "Tags": {"k": "v"},
    },
    "UpdateEventSourceMapping": {
        "BatchSize": 5,
        "Enabled": False,
        "FilterCriteria": {"Filters": []},
        "ScalingConfig": {},
        "MaximumRetryAttempts": 1,
    },
    "AddLayerVersionPermission": {
        "StatementId": "s2",
        "Action": "lambda:GetLayerVersion",
        "Principal": "*",
        "OrganizationId": "o-abcdefghij",
    },
    "PutResourcePolicy": {
        "Policy": json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {"Effect": "Allow", "Principal": "*", "Action": "lambda:*", "Resource": "*"}
                ],
            }
        )
    },
    "PutFunctionEventInvokeConfig": {
        "MaximumRetryAttempts": 1,
        "MaximumEventAgeInSeconds": 60,
        "DestinationConfig": {"OnFailure": {"Destination": _FN_ARN}},
    },
    "UpdateFunctionEventInvokeConfig": {"MaximumRetryAttempts": 2},
    "PutFunctionConcurrency": {"ReservedConcurrentExecutions": 5},
    "PutProvisionedConcurrencyConfig": {"ProvisionedConcurrentExecutions": 1},
    "PublishLayerVersion": {
        "Content": {"ZipFile": _ZIP},
        "CompatibleRuntimes": ["python3.11"],
        "CompatibleArchitectures": ["x86_64"],
        "LicenseInfo": "MIT",
    },
}
_EVENT = {
    "Source": "s",
    "DetailType": "d",
    "Detail": json.dumps({"a": [1, {"b": "c"}]}),
    "Resources": ["r"],
}
JSON_BASES: dict[str, dict[str, Any]] = {
    "PutRule": {"Name": "r1", "EventPattern": json.dumps({"source": ["s"]}), "State": "ENABLED"},
    "PutTargets": {"Rule": "r1", "Targets": [{"Id": "t", "Arn": _FN_ARN, "Input": "{}"}]},
    "RemoveTargets": {"Rule": "r1", "Ids": ["t"]},
    "PutEvents": {"Entries": [_EVENT]},
    "TestEventPattern": {
        "EventPattern": json.dumps({"detail": {"a": [1]}}),
        "Event": json.dumps(
            {
                "id": "1",
                "account": "000000000000",
                "source": "s",
                "time": "2024-01-01T00:00:00Z",
                "region": "us-east-1",
                "detail-type": "d",
                "resources": [],
                "detail": {"a": [1]},
            }
        ),
    },
    "ListRules": {"NamePrefix": "r", "Limit": 1},
    "FilterLogEvents": {
        "logGroupName": "/aws/lambda/fz",
        "filterPattern": "{ $.a = 1 }",
        "startTime": 0,
        "endTime": 2**40,
        "limit": 10,
        "logStreamNames": ["x"],
    },
    "GetLogEvents": {"logGroupName": "/aws/lambda/fz", "logStreamName": "x", "limit": 5},
    "DescribeLogStreams": {"logGroupName": "/aws/lambda/fz", "orderBy": "LastEventTime"},
    "PutRetentionPolicy": {"logGroupName": "/aws/lambda/fz", "retentionInDays": 1},
}


def mutations(base: Any) -> Iterator[bytes]:
    """`base` with one member at a time, at any depth, replaced by each of VALUES."""
    if isinstance(base, dict):
        items: list[tuple[Any, Any]] = list(base.items())
    elif isinstance(base, list):
        items = list(enumerate(base))
    else:
        return
    for key, value in items:
        for bad in VALUES:
            yield json.dumps(_replaced(base, key, bad)).encode()
        for inner in mutations(value):
            yield json.dumps(_replaced(base, key, json.loads(inner))).encode()


def _replaced(base: Any, key: Any, value: Any) -> Any:
    copy = dict(base) if isinstance(base, dict) else list(base)
    copy[key] = value
    return copy


def deep_member(name: str) -> bytes:
    return b'{"' + name.encode() + b'":' + b"[" * 50_000 + b"]" * 50_000 + b"}"


class Fuzzer:
    """Sends requests and records any answer that is not an AWS-shaped refusal or success."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.http = httpx.Client(auth=SIGNED, timeout=60)
        self.plain = httpx.Client(timeout=60)
        self.problems: list[str] = []
        self.sent = 0

    def send(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        json_protocol: bool = False,
        signed: bool = True,
    ) -> httpx.Response | None:
        """One request (`signed` as the admin key, else a function URL's or a route's
        caller); a 500, no answer, or an error of the wrong shape is recorded."""
        self.sent += 1
        what = f"{method} {path[:120]} {body[:300]!r} {headers or ''}"
        try:
            response = (self.http if signed else self.plain).request(
                method, self.server.endpoint + path, content=body, headers=headers or {}
            )
        except httpx.HTTPError as e:
            self.problems.append(f"{what}: no answer ({e!r})")
            return None
        if response.status_code >= 500 and response.status_code != 502:
            self.problems.append(f"{what}: {response.status_code} {response.text[:200]}")
        elif response.status_code >= 400:
            problem = shape_problem(response, json_protocol, signed)
            if problem:
                self.problems.append(f"{what}: {problem}")
        return response

    def check(self) -> None:
        """Fails with every problem found (all printed, the first ones in the message)."""
        self.http.close()
        self.plain.close()
        for problem in self.problems:
            print(problem)
        assert not self.problems, "\n".join(self.problems[:30])


def shape_problem(response: httpx.Response, json_protocol: bool, api: bool) -> str | None:
    """What is not AWS-shaped about an error response, if anything. Function URLs and HTTP
    routes (not `api`) answer as Lambda's and API Gateway's do: a JSON message, no type."""
    try:
        body = response.json()
    except ValueError:
        return f"{response.status_code} body is not JSON: {response.text[:100]!r}"
    if not isinstance(body, dict):
        return f"{response.status_code} body is not an object"
    if json_protocol:
        if not isinstance(body.get("__type"), str):
            return f"{response.status_code} without __type: {body}"
    elif api and not response.headers.get("x-amzn-errortype"):
        return f"{response.status_code} without x-amzn-ErrorType: {body}"
    if not isinstance(body.get("message", body.get("Message")), str):
        return f"{response.status_code} without a message: {body}"
    for leak in ("Traceback", "Error:", "RecursionError", "KeyError", "TypeError"):
        if leak in json.dumps(body):
            return f"{response.status_code} leaks {leak}: {body}"
    return None


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of the module's own with a function (version 1, alias `live`, a public URL,
    an HTTP route) and a layer to aim at."""
    base = tmp_path_factory.mktemp("fuzz")
    server = Server(data_dir=base / "data", extra_args=("--sqs-endpoint", "http://127.0.0.1:9"))
    server.start()
    try:
        _set_up(server)
        yield server
    finally:
        server.stop()


def _set_up(server: Server) -> None:
    lam = server.client()
    code = make_zip({"app.py": "def handler(event, context):\n    return event\n"})
    # `fz` is the API calls' target; `fz-del` the one the Delete operations are aimed at;
    # `fz-front` serves the URL and the route (the API calls reconfigure `fz` at random).
    for name in ("fz", "fz-del", "fz-front"):
        lam.create_function(
            FunctionName=name,
            Runtime="python3.11",
            Role=ROLE,
            Handler="app.handler",
            Code={"ZipFile": code},
        )
        lam.get_waiter("function_active_v2").wait(
            FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
        )
        lam.publish_version(FunctionName=name)
        lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.publish_layer_version(LayerName="fzl", Content={"ZipFile": code})
    lam.create_function_url_config(FunctionName="fz-front", AuthType="NONE")
    for sid, action in (("u", "lambda:InvokeFunctionUrl"), ("i", "lambda:InvokeFunction")):
        extra = {"FunctionUrlAuthType": "NONE"} if sid == "u" else {}
        lam.add_permission(
            FunctionName="fz-front", StatementId=sid, Action=action, Principal="*", **extra
        )
    # An event-source mapping to aim at (its UUID in the paths), and a broker.
    allow_event_sources(server)
    made = lam.create_event_source_mapping(
        FunctionName="fz", EventSourceArn="arn:aws:sqs:us-east-1:000000000000:fz-aim"
    )
    _PATH_VALUES["UUID"] = made["UUID"]
    setup = Fuzzer(server)
    setup.send("PUT", "/lamina/brokers/fz", json.dumps({"Url": "amqp://u:p@127.0.0.1/"}).encode())
    route = setup.send(
        "POST",
        "/lamina/routes",
        json.dumps({"routeKey": "ANY /f/{proxy+}", "function": "fz-front"}).encode(),
    )
    setup.check()
    assert route is not None and route.status_code < 300, route and route.text


_PATH_VALUES = {
    "FunctionName": "fz",
    "Name": "live",
    "LayerName": "fzl",
    "VersionNumber": "1",
    "StatementId": "u",
    "ResourceArn": "arn:aws:lambda:us-east-1:000000000000:function:fz",
    "Resource": "arn:aws:lambda:us-east-1:000000000000:function:fz",
}


def rest_operations() -> list[tuple[str, Any]]:
    """The Lambda model's operations, those that delete things last."""
    model = _MODELS.get_service_model("lambda")
    ops = [(name, model.operation_model(name)) for name in model.operation_names]
    return sorted(ops, key=lambda op: op[0].startswith("Delete"))


def rest_path(op: Any, overrides: dict[str, str] | None = None) -> str:
    values = dict(_PATH_VALUES)
    if op.name.startswith("Delete"):
        values["FunctionName"] = "fz-del"
    values.update(overrides or {})

    def value(m: re.Match[str]) -> str:
        return values.get(m[1], "x")

    return re.sub(r"\{(\w+)\+?\}", value, op.http["requestUri"])


def test_lambda_api(fuzzed: Server) -> None:
    fuzzer = Fuzzer(fuzzed)
    for _, op in rest_operations():
        method, path = op.http["method"], rest_path(op)
        first = fuzzer.send(method, path, b"{}")
        if (
            first is not None
            and first.headers.get("x-amzn-errortype") == "UnknownOperationException"
        ):
            continue  # not served by Lamina: refused the same way whatever is sent
        members = op.input_shape.members if op.input_shape else {}
        for body in BODIES:
            fuzzer.send(method, path, body)
        sep = "&" if "?" in path else "?"
        for member, shape in members.items():
            where = shape.serialization.get("location")
            wire = shape.serialization.get("name", member)
            if where == "uri":
                for text in TEXTS:
                    fuzzer.send(method, rest_path(op, {wire: text or "%20"}), b"{}")
            elif where == "querystring":
                for text in TEXTS:
                    fuzzer.send(method, f"{path}{sep}{wire}={text}", b"{}")
            elif where == "header":
                for text in HEADER_VALUES:
                    fuzzer.send(method, path, b"{}", {wire: text})
            else:
                for value in VALUES:
                    fuzzer.send(method, path, json.dumps({member: value}).encode())
                fuzzer.send(method, path, deep_member(member))
        for body in mutations(LAMBDA_BASES.get(op.name, {})):
            fuzzer.send(method, path, body)
        if op.name == "Invoke":  # the asynchronous and dry-run paths read the body too
            for kind in ("Event", "DryRun"):
                for body in BODIES:
                    fuzzer.send(method, path, body, {"X-Amz-Invocation-Type": kind})
    fuzzer.check()
    assert fuzzer.sent > 1000


@pytest.mark.parametrize(
    ("service", "prefix"), [("logs", "Logs_20140328."), ("events", "AWSEvents.")]
)
def test_json_apis(fuzzed: Server, service: str, prefix: str) -> None:
    fuzzer = Fuzzer(fuzzed)  # SIGNED signs for the service X-Amz-Target names
    model = _MODELS.get_service_model(service)
    for name in model.operation_names:
        op = model.operation_model(name)
        headers = {"x-amz-target": prefix + name, "content-type": "application/x-amz-json-1.1"}
        first = fuzzer.send("POST", "/", b"{}", headers, json_protocol=True)
        if first is not None and "UnknownOperation" in first.text:
            continue
        for body in BODIES:
            fuzzer.send("POST", "/", body, headers, json_protocol=True)
        for member in op.input_shape.members if op.input_shape else {}:
            for value in VALUES:
                body = json.dumps({member: value}).encode()
                fuzzer.send("POST", "/", body, headers, json_protocol=True)
            fuzzer.send("POST", "/", deep_member(member), headers, json_protocol=True)
        for body in mutations(JSON_BASES.get(name, {})):
            fuzzer.send("POST", "/", body, headers, json_protocol=True)
    fuzzer.check()


def lamina_routes() -> list[tuple[str, str]]:
    state: Any = type(
        "S",
        (),
        {"http_routes": None, "settings": None, "websockets": None, "websocket_connections": None},
    )()
    state.settings = type("T", (), {"region": "us-east-1", "account_id": "000000000000"})()
    app: Any = build_app(state)
    while not isinstance(app, Starlette):
        app = app.app
    out = []
    for route in app.routes:
        if route.path.startswith("/lamina/") or route.path in ("/health", "/metrics"):
            for method in sorted(set(route.methods or ()) - {"HEAD"}):
                out.append((method, route.path))
    return out


def test_lamina_endpoints(fuzzed: Server) -> None:
    fuzzer = Fuzzer(fuzzed)
    members = ["routeKey", "function", "payloadFormatVersion", "Policies", "Description"]
    members += ["Path", "UserName", "Statement", "Version", "MaxItems"]
    members += ["Url", "Username", "Password"]
    for method, template in lamina_routes():
        path = re.sub(r"\{(\w+)\}", "fz", template).replace("{sha256}", "0" * 64)
        for body in BODIES:
            fuzzer.send(method, path, body)
        for text in TEXTS:
            fuzzer.send(method, f"{path}?MaxItems={text}&routeKey={text}", b"")
        if method in ("POST", "PUT"):
            for member in members:
                for value in VALUES:
                    fuzzer.send(method, path, json.dumps({member: value}).encode())
    fuzzer.check()


def test_function_url_and_route(fuzzed: Server) -> None:
    """The function (an echo) answers whatever arrives: no 500, whatever the body."""
    server, fuzzer = fuzzed, Fuzzer(fuzzed)
    url = server.client().get_function_url_config(FunctionName="fz-front")["FunctionUrl"]
    url_path = "/" + url.split("/", 3)[3]
    for base in (url_path, "/_http/f/"):
        for method in ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
            for body in BODIES:
                fuzzer.send(method, base + "p", body, signed=False)
            for text in TEXTS:
                fuzzer.send(method, f"{base}{text}?{text}={text}", b"", signed=False)
        for headers in (
            {"content-type": "application/json"},
            {"content-type": "text/plain; charset=latin-1"},
            {"content-encoding": "gzip"},
            {"cookie": "a=" + "b" * 4000},
            {"x-amz-content-sha256": "nonsense"},
        ):
            fuzzer.send("POST", base + "h", b"\xff" * 100, headers, signed=False)
    fuzzer.check()


def test_malformed_signatures(fuzzed: Server) -> None:
    """Broken Authorization headers and presigned query strings: 403s of AWS's types."""
    fuzzer = Fuzzer(fuzzed)
    cred = "test/20240101/us-east-1/lambda/aws4_request"
    authorizations = [
        "",
        "AWS4-HMAC-SHA256",
        "AWS4-HMAC-SHA256 Credential=",
        f"AWS4-HMAC-SHA256 Credential={cred}, SignedHeaders=host, Signature=00",
        "AWS4-HMAC-SHA256 Credential=a/b/c, SignedHeaders=, Signature=",
        "AWS4-HMAC-SHA256 Credential=//////, SignedHeaders=;;;, Signature=zz",
        "AWS4-HMAC-SHA256 Credential=%C3%A9/x/y/z/aws4_request, SignedHeaders=host, Signature=a",
        "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/lambda/aws4_request/extra",
        "Basic dXNlcjpwYXNz",
        "AWS4-HMAC-SHA256 " + "Credential=x," * 5000,
    ]
    dates = ["", "20240101T000000Z", "not-a-date", "99999999T999999Z", "2024"]
    for path, target in (("/2015-03-31/functions", None), ("/", "AWSEvents.ListRules")):
        method = "GET" if target is None else "POST"
        for authorization in authorizations:
            for date in dates:
                headers = {"authorization": authorization, "x-amz-date": date}
                if target:
                    headers["x-amz-target"] = target
                response = fuzzer.send(
                    method, path, b"{}", headers, json_protocol=bool(target), signed=False
                )
                assert response is None or response.status_code == 403, response.text
    for query in (
        "X-Amz-Signature=x",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=a&X-Amz-Date=b"
        "&X-Amz-SignedHeaders=host&X-Amz-Signature=c",
        f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={cred}&X-Amz-Date=20240101T000000Z"
        "&X-Amz-SignedHeaders=host&X-Amz-Signature=c&X-Amz-Expires=abc",
        f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={cred}&X-Amz-Date=20240101T000000Z"
        "&X-Amz-SignedHeaders=host&X-Amz-Signature=c&X-Amz-Expires=99999999999999999999",
        "X-Amz-Signature=%ff%fe&X-Amz-Credential=%00",
    ):
        fuzzer.send("GET", f"/2015-03-31/functions?{query}", signed=False)
    fuzzer.check()
