"""The action table: every route of the app names an IAM action and resource."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace
from typing import Any

import botocore.session
import pytest
from starlette.routing import Route

from lamina.api import cloudwatch_api, events_api, logs_api
from lamina.api.access import UNKNOWN, AccessMap
from lamina.api.app import build_app

ACCOUNT = "000000000000"
FN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:"
SAMPLE_PARAMS = {
    "name": "fn",
    "alias": "live",
    "sid": "s1",
    "version": "3",
    "sha256": "ab12",
    "key_id": "AKIAEXAMPLE",
    "uuid": "0b1e8f3c-5d2a-4c7e-9f10-2a3b4c5d6e7f",
    "arn": f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:fn",
    "api_id": "abcde12345",
    "route_id": "r1",
    "request_id": "8f2c9a4e-1b3d-4e5f-a6b7-c8d9e0f1a2b3",
    "integration_id": "i1",
    "stage": "prod",
    "connection_id": "AAAAAAAAAAAAAAA=",
    "session": "0123abcd",
    "operation": "GetMetricData",
}
OPEN = {
    "/health",
    "/metrics",
    "/lamina/code/{sha256}.zip",
    "/v1/traces",
    # the web console's page and assets (no data), and its sessions (any key may sign in)
    "/console",
    "/console/",
    "/console/static/{file:path}",
    "/console/session",
}
#: let through by `Authorize`, authorized by their handlers (on a resource only they know;
#: the console's function list shows only those the caller may GetFunctionConfiguration on)
HANDLER_CHECKED = {"/lamina/invocations/{request_id}", "/console/api/functions"}
_LAMBDA_OPS = set(botocore.session.get_session().get_service_model("lambda").operation_names)

access = AccessMap("us-east-1", ACCOUNT)
ESM_ID = "0b1e8f3c-5d2a-4c7e-9f10-2a3b4c5d6e7f"
ESM = f"arn:aws:lambda:us-east-1:{ACCOUNT}:event-source-mapping:{ESM_ID}"


def routes() -> list[Route]:
    state: Any = SimpleNamespace(
        http_routes=None,
        websockets=None,
        websocket_connections=None,
        settings=SimpleNamespace(region="us-east-1", account_id=ACCOUNT),
    )
    app: Any = build_app(state)
    # LastResort -> RefuseUnservedServices -> HttpFront -> Authorize -> _InvokeFirst -> Starlette
    starlette = app.app.app.app.app.app
    return [r for r in starlette.routes if isinstance(r, Route)]


def sample(path: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLE_PARAMS[m[1]], path)


def test_every_route_has_a_mapping() -> None:
    seen = 0
    for route in routes():
        for method in sorted((route.methods or set()) - {"HEAD"}):
            path = sample(route.path)
            if route.path == "/":
                continue  # the JSON APIs: by X-Amz-Target, below
            got = access.request(method, path, {}, {}, b'{"FunctionName": "fn"}')
            if route.path in OPEN or route.path in HANDLER_CHECKED:
                assert got is None, route.path
                continue
            assert got is not None, (method, route.path)
            assert got.action != UNKNOWN, (method, route.path)
            service, _, op = got.action.partition(":")
            if service == "lambda" and op != "InvokeFunction":
                assert op in _LAMBDA_OPS, got.action
            seen += 1
    assert seen > 50


def test_every_json_api_operation_has_a_mapping() -> None:
    for prefix, ops, service in (
        (logs_api.TARGET_PREFIX, logs_api.OPERATIONS, "logs"),
        (events_api.TARGET_PREFIX, events_api._OPERATIONS, "events"),
    ):
        for op in ops:
            got = access.request("POST", "/", {}, {"x-amz-target": prefix + op}, b"{}")
            assert got is not None and got.action == f"{service}:{op}"


def test_every_cloudwatch_operation_has_a_mapping_in_each_protocol() -> None:
    for op in cloudwatch_api._READS | cloudwatch_api._ALARM_OPS | {"SetAlarmState": None}:
        cbor = access.request("POST", cloudwatch_api.CBOR_PATH + op, {}, {}, None)
        target = {"x-amz-target": cloudwatch_api.TARGET_PREFIX + op}
        json_10 = access.request("POST", "/", {}, target, b"{}")
        form = {"content-type": "application/x-www-form-urlencoded; charset=utf-8"}
        query = access.request("POST", "/", {}, form, f"Action={op}&Version=2010-08-01".encode())
        for got in (cbor, json_10, query):
            assert got is not None and (got.action, got.resource) == (f"cloudwatch:{op}", "*")


@pytest.mark.parametrize(
    ("method", "path", "query", "action", "resource"),
    [
        ("POST", "/2015-03-31/functions/f/invocations", {}, "lambda:InvokeFunction", FN + "f"),
        (
            "POST",
            "/2015-03-31/functions/f:prod/invocations",
            {},
            "lambda:InvokeFunction",
            FN + "f:prod",
        ),
        (
            "POST",
            f"/2015-03-31/functions/{FN}f:7/invocations",
            {},
            "lambda:InvokeFunction",
            FN + "f:7",
        ),
        (
            "POST",
            "/2015-03-31/functions/f/invocations",
            {"Qualifier": "live"},
            "lambda:InvokeFunction",
            FN + "f:live",
        ),
        ("POST", "/2014-11-13/functions/f/invoke-async/", {}, "lambda:InvokeFunction", FN + "f"),
        # InvokeWithResponseStream is authorized as lambda:InvokeFunction, as on AWS
        (
            "POST",
            "/2021-11-15/functions/f/response-streaming-invocations",
            {"Qualifier": "live"},
            "lambda:InvokeFunction",
            FN + "f:live",
        ),
        ("GET", "/2015-03-31/functions/f", {"Qualifier": "2"}, "lambda:GetFunction", FN + "f:2"),
        ("GET", "/2015-03-31/functions/", {}, "lambda:ListFunctions", "*"),
        ("POST", "/2020-04-22/code-signing-configs", {}, "lambda:CreateCodeSigningConfig", "*"),
        ("GET", "/2020-04-22/code-signing-configs/", {}, "lambda:ListCodeSigningConfigs", "*"),
        (
            "DELETE",
            "/2020-04-22/code-signing-configs/"
            + f"arn:aws:lambda:us-east-1:{ACCOUNT}:code-signing-config:csc-0123456789abcdef0",
            {},
            "lambda:DeleteCodeSigningConfig",
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:code-signing-config:csc-0123456789abcdef0",
        ),
        (
            "GET",
            "/2020-04-22/code-signing-configs/"
            + f"arn:aws:lambda:us-east-1:{ACCOUNT}:code-signing-config:csc-0123456789abcdef0"
            + "/functions",
            {},
            "lambda:ListFunctionsByCodeSigningConfig",
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:code-signing-config:csc-0123456789abcdef0",
        ),
        (
            "PUT",
            "/2020-06-30/functions/f:1/code-signing-config",
            {},
            "lambda:PutFunctionCodeSigningConfig",
            FN + "f",
        ),
        ("PUT", "/2015-03-31/functions/f:1/code", {}, "lambda:UpdateFunctionCode", FN + "f"),
        ("POST", "/2015-03-31/functions/f/versions", {}, "lambda:PublishVersion", FN + "f"),
        ("GET", "/2015-03-31/functions/f/aliases/live", {}, "lambda:GetAlias", FN + "f"),
        (
            "DELETE",
            "/2015-03-31/functions/f/policy/s",
            {"Qualifier": "a"},
            "lambda:RemovePermission",
            FN + "f:a",
        ),
        (
            "PUT",
            "/2017-10-31/functions/f/concurrency",
            {},
            "lambda:PutFunctionConcurrency",
            FN + "f",
        ),
        (
            "GET",
            "/2019-09-30/functions/f/provisioned-concurrency",
            {"List": "ALL"},
            "lambda:ListProvisionedConcurrencyConfigs",
            FN + "f",
        ),
        (
            "GET",
            "/2019-09-30/functions/f/provisioned-concurrency",
            {"Qualifier": "1"},
            "lambda:GetProvisionedConcurrencyConfig",
            FN + "f:1",
        ),
        (
            "GET",
            "/2018-10-31/layers/lib/versions/3",
            {},
            "lambda:GetLayerVersion",
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:lib:3",
        ),
        (
            "POST",
            "/2018-10-31/layers/lib/versions",
            {},
            "lambda:PublishLayerVersion",
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:lib",
        ),
        (
            "GET",
            "/2018-10-31/layers",
            {"find": "LayerVersion", "Arn": "arn:x:layer:l:1"},
            "lambda:GetLayerVersion",
            "arn:x:layer:l:1",
        ),
        ("GET", "/2016-08-19/account-settings/", {}, "lambda:GetAccountSettings", "*"),
        (
            "POST",
            "/2018-10-31/layers/lib/versions/3/policy",
            {},
            "lambda:AddLayerVersionPermission",
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:lib:3",
        ),
        (
            "GET",
            "/2018-10-31/layers/lib/versions/3/policy",
            {},
            "lambda:GetLayerVersionPolicy",
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:lib:3",
        ),
        (
            "DELETE",
            "/2018-10-31/layers/lib/versions/3/policy/s1",
            {},
            "lambda:RemoveLayerVersionPermission",
            f"arn:aws:lambda:us-east-1:{ACCOUNT}:layer:lib:3",
        ),
        ("DELETE", "/2018-10-31/layers/lib/versions/3/policy", {}, UNKNOWN, "*"),
        ("POST", f"/2017-03-31/tags/{FN}f", {}, "lambda:TagResource", FN + "f"),
        ("DELETE", f"/2017-03-31/tags/{FN}f", {}, "lambda:UntagResource", FN + "f"),
        ("GET", f"/2017-03-31/tags/{FN}f", {}, "lambda:ListTags", FN + "f"),
        ("PUT", f"/2026-07-09/resource-policy/{FN}f:1", {}, "lambda:PutResourcePolicy", FN + "f:1"),
        ("GET", f"/2026-07-09/resource-policy/{FN}f", {}, "lambda:GetResourcePolicy", FN + "f"),
        (
            "DELETE",
            f"/2026-07-09/resource-policy/{FN}f",
            {},
            "lambda:DeleteResourcePolicy",
            FN + "f",
        ),
        ("GET", "/lamina/usage", {}, "lamina:GetUsage", "*"),
        ("GET", "/2015-03-31/event-source-mappings", {}, "lambda:ListEventSourceMappings", "*"),
        ("POST", "/2015-03-31/event-source-mappings/", {}, "lambda:CreateEventSourceMapping", "*"),
        (
            "GET",
            f"/2015-03-31/event-source-mappings/{ESM_ID}",
            {},
            "lambda:GetEventSourceMapping",
            ESM,
        ),
        (
            "PUT",
            f"/2015-03-31/event-source-mappings/{ESM_ID}",
            {},
            "lambda:UpdateEventSourceMapping",
            ESM,
        ),
        (
            "DELETE",
            f"/2015-03-31/event-source-mappings/{ESM_ID}",
            {},
            "lambda:DeleteEventSourceMapping",
            ESM,
        ),
        ("PATCH", "/2015-03-31/event-source-mappings", {}, UNKNOWN, "*"),
        ("GET", "/lamina/brokers", {}, "lamina:ListBrokers", "*"),
        ("PUT", "/lamina/brokers/rmq", {}, "lamina:AddBroker", "*"),
        ("DELETE", "/lamina/brokers/rmq", {}, "lamina:RemoveBroker", "*"),
        ("GET", "/lamina/secrets", {}, "lamina:ListSecrets", "*"),
        ("PUT", "/lamina/secrets/team/rmq", {}, "lamina:PutSecret", "*"),
        ("DELETE", "/lamina/secrets/rmq", {}, "lamina:DeleteSecret", "*"),
        ("GET", "/lamina/sources", {}, "lamina:ListSources", "*"),
        ("POST", "/lamina/functions/f/debug", {}, "lamina:DebugFunction", FN + "f"),
        (
            "POST",
            "/lamina/functions/f/debug",
            {"Qualifier": "2"},
            "lamina:DebugFunction",
            FN + "f:2",
        ),
        ("DELETE", "/lamina/functions/f/debug/abc", {}, "lamina:DebugFunction", FN + "f"),
        ("GET", "/lamina/functions/f/debug", {}, UNKNOWN, "*"),
        ("GET", "/lamina/stacks", {}, "lamina:ListStacks", "*"),
        ("PUT", "/lamina/stacks/app", {}, "lamina:PutStack", "*"),
        ("GET", "/lamina/stacks/app", {}, "lamina:GetStack", "*"),
        ("DELETE", "/lamina/stacks/app", {}, "lamina:DeleteStack", "*"),
        ("HEAD", "/2015-03-31/functions/f", {}, "lambda:GetFunction", FN + "f"),
        ("GET", "/nowhere", {}, UNKNOWN, "*"),
    ],
)
def test_actions_and_resources(
    method: str, path: str, query: dict[str, str], action: str, resource: str
) -> None:
    got = access.request(method, path, query, {})
    assert got is not None
    assert (got.action, got.resource) == (action, resource)


def test_create_event_source_mapping_names_its_function_as_a_condition_key() -> None:
    assert access.needs_body("POST", "/2015-03-31/event-source-mappings")
    got = access.request(
        "POST", "/2015-03-31/event-source-mappings", {}, {}, b'{"FunctionName":"g:live"}'
    )
    assert got is not None and got.resource == "*"
    assert got.context == {"lambda:FunctionArn": FN + "g:live"}


def test_body_named_resources_and_context_keys() -> None:
    assert access.needs_body("POST", "/2015-03-31/functions")
    assert access.needs_body("POST", "/")
    assert access.needs_body("POST", "/2021-10-31/functions/f/url")
    assert not access.needs_body("POST", "/2015-03-31/functions/f/invocations")
    got = access.request("POST", "/2015-03-31/functions", {}, {}, b'{"FunctionName":"g"}')
    assert got is not None and got.resource == FN + "g"
    got = access.request("POST", "/2021-10-31/functions/f/url", {}, {}, b'{"AuthType":"NONE"}')
    assert got is not None and got.context["lambda:FunctionUrlAuthType"] == "NONE"
    got = access.request(
        "POST", "/2015-03-31/functions/f/policy", {}, {}, b'{"Principal":"events.amazonaws.com"}'
    )
    assert got is not None and got.context["lambda:Principal"] == "events.amazonaws.com"


@pytest.mark.parametrize(
    ("target", "body", "action", "resource"),
    [
        (
            "Logs_20140328.DescribeLogGroups",
            {},
            "logs:DescribeLogGroups",
            f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:*",
        ),
        (
            "Logs_20140328.FilterLogEvents",
            {"logGroupName": "/aws/lambda/f"},
            "logs:FilterLogEvents",
            f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/lambda/f:*",
        ),
        (
            "Logs_20140328.GetLogEvents",
            {"logGroupName": "g", "logStreamName": "s"},
            "logs:GetLogEvents",
            f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:g:log-stream:s",
        ),
        (
            "AWSEvents.PutRule",
            {"Name": "r"},
            "events:PutRule",
            f"arn:aws:events:us-east-1:{ACCOUNT}:rule/r",
        ),
        (
            "AWSEvents.PutTargets",
            {"Rule": "r"},
            "events:PutTargets",
            f"arn:aws:events:us-east-1:{ACCOUNT}:rule/r",
        ),
        (
            "AWSEvents.PutEvents",
            {},
            "events:PutEvents",
            f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/default",
        ),
        ("AWSEvents.ListRules", {}, "events:ListRules", "*"),
        ("Nothing.Here", {}, UNKNOWN, "*"),
    ],
)
def test_json_api_resources(target: str, body: dict[str, str], action: str, resource: str) -> None:
    got = access.request("POST", "/", {}, {"x-amz-target": target}, json.dumps(body).encode())
    assert got is not None
    assert (got.action, got.resource) == (action, resource)


@pytest.mark.parametrize(
    ("method", "path", "action", "resource"),
    [
        ("POST", "/v2/apis", "apigateway:POST", "arn:aws:apigateway:us-east-1::/apis"),
        (
            "DELETE",
            "/v2/apis/abc/routes/r1",
            "apigateway:DELETE",
            "arn:aws:apigateway:us-east-1::/apis/abc/routes/r1",
        ),
        (
            "POST",
            "/ws/abc/prod/@connections/X1=",
            "execute-api:ManageConnections",
            f"arn:aws:execute-api:us-east-1:{ACCOUNT}:abc/prod/POST/@connections/X1=",
        ),
        (
            "GET",
            "/@connections/X1=",
            "execute-api:ManageConnections",
            f"arn:aws:execute-api:us-east-1:{ACCOUNT}:*/*/GET/@connections/X1=",
        ),
    ],
)
def test_websocket_apis(method: str, path: str, action: str, resource: str) -> None:
    got = access.request(method, path, {}, {})
    assert got is not None
    assert (got.action, got.resource) == (action, resource)
