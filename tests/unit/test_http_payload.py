"""HTTP requests to events and results to responses (`lamina.events.http_payload`), and route
matching (`lamina.events.http_routes`)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from lamina.errors import InvalidParameterValueError
from lamina.events import http_payload as hp
from lamina.events.http_routes import RouteTable, parse_route
from lamina.settings import Settings

SETTINGS = Settings()


def request(
    method: str = "GET",
    path: str = "/",
    query: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
) -> hp.HttpRequest:
    return hp.HttpRequest(
        method=method,
        raw_path=path,
        query=query,
        headers=headers,
        body=body,
        source_ip="10.0.0.1",
        protocol="HTTP/1.1",
        received=1_700_000_000.25,
    )


TARGET = hp.Target(
    request_id="req-1",
    account_id="anonymous",
    api_id="abc",
    domain_name="abc.lambda-url.us-east-1.on.aws",
    domain_prefix="abc",
)


# -- requests --------------------------------------------------------------------------------


def test_event_v2_shape() -> None:
    req = request(
        "POST",
        "/a%20b/c",
        "k=1&k=2&e=",
        (
            ("host", "abc.lambda-url.us-east-1.on.aws"),
            ("cookie", "a=1; b=2"),
            ("cookie", "c=3"),
            ("x-dup", "1"),
            ("x-dup", "2"),
            ("content-type", "application/json; charset=utf-8"),
            ("user-agent", "ua/1"),
        ),
        b'{"x": 1}',
    )
    event = hp.event_v2(req, TARGET)
    assert event == {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/a%20b/c",
        "rawQueryString": "k=1&k=2&e=",
        "cookies": ["a=1", "b=2", "c=3"],
        "headers": {
            "host": "abc.lambda-url.us-east-1.on.aws",
            "x-dup": "1,2",
            "content-type": "application/json; charset=utf-8",
            "user-agent": "ua/1",
        },
        "queryStringParameters": {"k": "1,2", "e": ""},
        "requestContext": {
            "accountId": "anonymous",
            "apiId": "abc",
            "domainName": "abc.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abc",
            "http": {
                "method": "POST",
                "path": "/a b/c",
                "protocol": "HTTP/1.1",
                "sourceIp": "10.0.0.1",
                "userAgent": "ua/1",
            },
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "14/Nov/2023:22:13:20 +0000",
            "timeEpoch": 1_700_000_000_250,
        },
        "body": '{"x": 1}',
        "isBase64Encoded": False,
    }


def test_event_v2_leaves_out_what_is_absent() -> None:
    event = hp.event_v2(request(), TARGET)
    for absent in ("cookies", "queryStringParameters", "body", "pathParameters", "stageVariables"):
        assert absent not in event
    routed = hp.event_v2(
        request(), hp.Target(**{**TARGET.__dict__, "path_parameters": {"id": "1"}})
    )
    assert routed["pathParameters"] == {"id": "1"}


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        ("text/plain", True),
        ("text/html; charset=utf-8", True),
        ("application/json", True),
        ("application/vnd.api+json", True),
        ("application/xml", True),
        ("image/svg+xml", True),
        ("application/javascript", True),
        ("application/octet-stream", False),
        ("application/x-www-form-urlencoded", False),
        ("multipart/form-data; boundary=x", False),
        ("image/png", False),
        (None, False),
    ],
)
def test_which_bodies_are_base64(content_type: str | None, text: bool) -> None:
    headers = (("content-type", content_type),) if content_type else ()
    event = hp.event_v2(request("POST", headers=headers, body=b"abc"), TARGET)
    assert event["isBase64Encoded"] is not text
    assert event["body"] == ("abc" if text else base64.b64encode(b"abc").decode())


def test_text_that_is_not_utf8_goes_as_base64() -> None:
    event = hp.event_v2(
        request("POST", headers=(("content-type", "text/plain"),), body=b"\xff\xfe"), TARGET
    )
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\xff\xfe"


def test_event_v1_shape() -> None:
    req = request(
        "GET",
        "/items/42",
        "a=1&a=2&b=",
        (("x-dup", "1"), ("x-dup", "2"), ("user-agent", "ua/1")),
    )
    target = hp.Target(
        **{**TARGET.__dict__, "route_key": "GET /items/{id}", "path_parameters": {"id": "42"}}
    )
    event = hp.event_v1(req, target, "/items/{id}")
    assert event["version"] == "1.0"
    assert event["resource"] == "/items/{id}"
    assert event["path"] == "/items/42"
    assert event["httpMethod"] == "GET"
    assert event["headers"] == {"x-dup": "2", "user-agent": "ua/1"}
    assert event["multiValueHeaders"] == {"x-dup": ["1", "2"], "user-agent": ["ua/1"]}
    assert event["queryStringParameters"] == {"a": "2", "b": ""}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": [""]}
    assert event["pathParameters"] == {"id": "42"}
    assert event["stageVariables"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    assert event["requestContext"]["resourcePath"] == "/items/{id}"
    assert event["requestContext"]["identity"]["sourceIp"] == "10.0.0.1"
    assert event["requestContext"]["requestTimeEpoch"] == 1_700_000_000_250
    bare = hp.event_v1(request(), TARGET, "$default")
    assert bare["queryStringParameters"] is None
    assert bare["multiValueQueryStringParameters"] is None
    assert bare["pathParameters"] is None


# -- responses -------------------------------------------------------------------------------


def payload(value: Any) -> bytes:
    return json.dumps(value).encode()


@pytest.mark.parametrize("value", ["hello", 42, {"a": 1}, [1, 2], None, True])
def test_bare_results_are_200_json(value: Any) -> None:
    response = hp.response_v2(payload(value))
    assert response.status == 200
    assert response.headers == [("content-type", "application/json")]
    assert response.body == payload(value)


def test_structured_result() -> None:
    response = hp.response_v2(
        payload(
            {
                "statusCode": 418,
                "headers": {"x-a": "1", "x-num": 5, "x-both": "single"},
                "multiValueHeaders": {"x-both": ["m1", "m2"]},
                "cookies": ["c=1; Secure", "d=2"],
                "body": base64.b64encode(b"\x00bin").decode(),
                "isBase64Encoded": True,
            }
        )
    )
    assert response.status == 418
    assert response.body == b"\x00bin"
    assert sorted(response.headers) == sorted(
        [
            ("x-both", "m1"),
            ("x-both", "m2"),
            ("x-a", "1"),
            ("x-num", "5"),
            ("set-cookie", "c=1; Secure"),
            ("set-cookie", "d=2"),
        ]
    )
    assert hp.response_v2(payload({"statusCode": 204})).body == b""
    assert hp.response_v2(payload({"statusCode": "201", "body": "x"})).status == 201
    assert hp.response_v2(payload({"statusCode": 200, "body": {"j": 1}})).body == b'{"j": 1}'


@pytest.mark.parametrize(
    "bad",
    [
        {"statusCode": 99},
        {"statusCode": "abc"},
        {"statusCode": True},
        {"statusCode": 200, "headers": []},
        {"statusCode": 200, "cookies": "a=1"},
        {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
        {"statusCode": 200, "multiValueHeaders": {"x": "notalist"}},
        {"statusCode": 200, "headers": {"x-split": "a\r\nx-evil: 1"}},
        {"statusCode": 200, "headers": {"bad name": "v"}},
        {"statusCode": 200, "headers": {"x-emoji": "\U0001f600"}},
        {"statusCode": 200, "cookies": ["a=1\nb=2"]},
    ],
)
def test_bad_structured_results(bad: dict[str, Any]) -> None:
    with pytest.raises(hp.BadResponse):
        hp.response_v2(payload(bad))


def test_format_1_needs_a_status_code() -> None:
    assert hp.response_v1(payload({"statusCode": 200, "body": "ok"})).body == b"ok"
    for bare in ("hello", {"a": 1}, 3):
        with pytest.raises(hp.BadResponse):
            hp.response_v1(payload(bare))


# -- routes ----------------------------------------------------------------------------------


def table(*keys: str) -> RouteTable:
    return RouteTable([parse_route({"routeKey": k, "function": "fn"}, SETTINGS) for k in keys])


def test_most_specific_route_wins() -> None:
    routes = table(
        "$default",
        "ANY /{proxy+}",
        "GET /items/{id}",
        "GET /items/special",
        "ANY /items/special",
        "GET /items/{id}/parts/{part}",
        "GET /items/{id}/{rest+}",
        "GET /",
    )

    def key(method: str, path: str) -> tuple[str, dict[str, str]]:
        found = routes.match(method, path)
        assert found is not None
        return found[0].route_key, found[1]

    assert key("GET", "/items/special") == ("GET /items/special", {})
    assert key("POST", "/items/special") == ("ANY /items/special", {})
    assert key("GET", "/items/7") == ("GET /items/{id}", {"id": "7"})
    assert key("GET", "/items/7/parts/9") == (
        "GET /items/{id}/parts/{part}",
        {"id": "7", "part": "9"},
    )
    assert key("GET", "/items/7/x/y") == ("GET /items/{id}/{rest+}", {"id": "7", "rest": "x/y"})
    assert key("POST", "/items/7") == ("ANY /{proxy+}", {"proxy": "items/7"})
    assert key("GET", "/") == ("GET /", {})
    assert key("POST", "/") == ("$default", {})
    assert key("GET", "/a%2Fb") == ("ANY /{proxy+}", {"proxy": "a/b"})
    assert table("GET /a").match("GET", "/b") is None
    # A greedy parameter takes one segment at least; a parameter is never empty.
    assert table("GET /p/{x+}").match("GET", "/p") is None
    assert table("GET /p/{x}").match("GET", "/p/") is None


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"routeKey": "GET", "function": "f"}, "neither $default nor"),
        ({"routeKey": "get /x", "function": "f"}, "neither $default nor"),
        ({"routeKey": "GET x", "function": "f"}, "must start with '/'"),
        ({"routeKey": "GET /{a+}/b", "function": "f"}, "must be the last segment"),
        ({"routeKey": "GET /{a}/{a}", "function": "f"}, "appears twice"),
        ({"routeKey": "GET /a/", "function": "f"}, "empty path segment"),
        ({"routeKey": "GET /a b", "function": "f"}, "has characters"),
        ({"routeKey": "GET /x"}, "needs a function"),
        ({"routeKey": "GET /x", "function": "f", "payloadFormatVersion": "3"}, "neither 1.0"),
        ({"routeKey": "GET /x", "function": "f", "extra": 1}, "no member extra"),
        (
            {"routeKey": "GET /x", "function": "arn:aws:lambda:eu-west-1:000000000000:function:f"},
            "not reachable in this region",
        ),
    ],
)
def test_bad_route_specs(spec: dict[str, Any], problem: str) -> None:
    with pytest.raises(InvalidParameterValueError) as e:
        parse_route(spec, SETTINGS)
    assert problem in e.value.message


def test_route_function_qualifiers() -> None:
    route = parse_route({"routeKey": "$default", "function": "fn:live"}, SETTINGS)
    assert (route.function_name, route.qualifier) == ("fn", "live")
    route = parse_route({"routeKey": "$default", "function": "fn:$LATEST"}, SETTINGS)
    assert (route.function_name, route.qualifier) == ("fn", None)
