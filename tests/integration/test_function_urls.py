"""Function URLs: the FunctionUrlConfig operations through boto3, and the URLs themselves
through curl and urllib (loopback only)."""

from __future__ import annotations

import base64
import datetime
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from tests.conftest import Functions, Server, fetch

_MODEL = botocore.session.get_session().get_service_model("lambda")

ECHO = """
import base64


def handler(event, context):
    path = event.get("rawPath", "")
    if path == "/structured":
        return {
            "statusCode": 201,
            "headers": {"x-custom": "yes", "content-type": "application/octet-stream"},
            "cookies": ["a=1; Path=/", "b=2"],
            "body": base64.b64encode(b"\\x00\\x01binary").decode(),
            "isBase64Encoded": True,
        }
    if path == "/text":
        return {"statusCode": 404, "headers": {"content-type": "text/plain"}, "body": "nope"}
    if path == "/string":
        return "hello"
    if path == "/number":
        return 42
    if path == "/plain-dict":
        return {"hello": "world"}
    if path == "/fail":
        raise RuntimeError("boom")
    if path == "/sleep":
        time.sleep(5)
    return event
"""

URL_FORM = re.compile(r"http://127\.0\.0\.1:(\d+)/lambda-url/([a-z0-9]{32})/")


def message(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(exc.value.response["Error"]["Message"])


def assert_members(data: dict[str, Any], shape_name: str) -> None:
    shape: Any = _MODEL.shape_for(shape_name)
    assert not set(data) - set(shape.members) - {"ResponseMetadata"}, data
    for member in shape.required_members:
        assert member in data, (member, data)


def iso(value: str) -> datetime.datetime:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", value), value
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def url_id(url: str) -> str:
    match = URL_FORM.fullmatch(url)
    assert match is not None, url
    return match[2]


def curl(*args: str) -> tuple[int, str]:
    """(status, body) of a curl request."""
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")


def make_public(lam: Any, name: str, qualifier: str | None = None, *, both: bool = True) -> None:
    """The permissions a public URL needs on Lambda (the two statements its console adds for
    AuthType NONE; only the first unless `both`)."""
    extra = {"Qualifier": qualifier} if qualifier else {}
    lam.add_permission(
        FunctionName=name,
        StatementId="FunctionURLAllowPublicAccess",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="NONE",
        **extra,
    )
    if both:
        lam.add_permission(
            FunctionName=name,
            StatementId="FunctionURLAllowInvokeAction",
            Action="lambda:InvokeFunction",
            Principal="*",
            InvokedViaFunctionUrl=True,
            **extra,
        )


@pytest.fixture
def echo(functions: Functions, lam: Any) -> tuple[str, str]:
    """A function that echoes its event, with a public URL: (name, FunctionUrl)."""
    name = functions.create(ECHO)["FunctionName"]
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)
    return name, url


# -- the configuration API -----------------------------------------------------------------


def test_create_get_update_list_delete(functions: Functions, lam: Any, server: Server) -> None:
    name = functions.create(ECHO, Publish=True)["FunctionName"]
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    created = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    assert_members(created, "CreateFunctionUrlConfigResponse")
    assert created["FunctionArn"] == f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
    assert created["AuthType"] == "NONE"
    assert created["InvokeMode"] == "BUFFERED"
    assert "Cors" not in created
    assert iso(created["CreationTime"]) >= before
    url = created["FunctionUrl"]
    assert url.startswith(f"{server.endpoint}/lambda-url/")
    uid = url_id(url)

    with pytest.raises(lam.exceptions.ResourceConflictException) as twice:
        lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert "FunctionUrlConfig exists for this Lambda function" in message(twice)
    # $LATEST is the unqualified function's URL.
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.create_function_url_config(FunctionName=name, Qualifier="$LATEST", AuthType="NONE")

    got = lam.get_function_url_config(FunctionName=name)
    assert_members(got, "GetFunctionUrlConfigResponse")
    assert got["FunctionUrl"] == url
    assert got["CreationTime"] == created["CreationTime"]
    assert iso(got["LastModifiedTime"]) >= iso(got["CreationTime"])
    assert lam.get_function_url_config(FunctionName=name, Qualifier="$LATEST")["FunctionUrl"] == url

    cors = {
        "AllowOrigins": ["https://example.com"],
        "AllowMethods": ["GET", "POST"],
        "AllowHeaders": ["x-custom"],
        "ExposeHeaders": ["x-out"],
        "MaxAge": 300,
        "AllowCredentials": True,
    }
    updated = lam.update_function_url_config(FunctionName=name, Cors=cors)
    assert_members(updated, "UpdateFunctionUrlConfigResponse")
    assert updated["Cors"] == cors
    assert updated["FunctionUrl"] == url  # the url-id lives as long as the URL
    assert updated["CreationTime"] == created["CreationTime"]
    assert iso(updated["LastModifiedTime"]) >= iso(got["LastModifiedTime"])
    # An update without Cors keeps it; one with Cors replaces all of it.
    assert lam.update_function_url_config(FunctionName=name, AuthType="NONE")["Cors"] == cors
    assert lam.update_function_url_config(FunctionName=name, Cors={"MaxAge": 5})["Cors"] == {
        "MaxAge": 5
    }

    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    lam.create_alias(FunctionName=name, Name="beta", FunctionVersion="1")
    live = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
    assert live["FunctionArn"].endswith(f":function:{name}:live")
    assert url_id(live["FunctionUrl"]) != uid
    lam.create_function_url_config(FunctionName=f"{name}:beta", AuthType="NONE")

    listed = lam.list_function_url_configs(FunctionName=name)
    for item in listed["FunctionUrlConfigs"]:
        assert_members(item, "FunctionUrlConfig")
    assert [c["FunctionArn"].rsplit(":", 1)[1] for c in listed["FunctionUrlConfigs"]] == [
        name,
        "beta",
        "live",
    ]
    first = lam.list_function_url_configs(FunctionName=name, MaxItems=2)
    assert len(first["FunctionUrlConfigs"]) == 2
    rest = lam.list_function_url_configs(FunctionName=name, Marker=first["NextMarker"])
    assert [c["FunctionUrl"] for c in rest["FunctionUrlConfigs"]] == [live["FunctionUrl"]]
    assert "NextMarker" not in rest
    pages = lam.get_paginator("list_function_url_configs").paginate(
        FunctionName=name, PaginationConfig={"PageSize": 1}
    )
    assert sum(len(p["FunctionUrlConfigs"]) for p in pages) == 3

    deleted = lam.delete_function_url_config(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as gone:
        lam.get_function_url_config(FunctionName=name)
    assert message(gone) == "The resource you requested does not exist."
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.delete_function_url_config(FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.update_function_url_config(FunctionName=name, AuthType="NONE")
    # A new URL for the same qualifier is a new url-id.
    again = lam.create_function_url_config(FunctionName=name, AuthType="NONE")
    assert url_id(again["FunctionUrl"]) != uid


def test_refusals(functions: Functions, lam: Any, lam_unchecked: Any) -> None:
    name = functions.create(ECHO, Publish=True)["FunctionName"]
    with pytest.raises(lam.exceptions.ClientError) as version:
        lam.create_function_url_config(FunctionName=name, Qualifier="1", AuthType="NONE")
    assert version.value.response["Error"]["Code"] == "ValidationException"
    assert "Value '1' at 'qualifier' failed to satisfy constraint" in message(version)
    with pytest.raises(lam.exceptions.ClientError) as version_arn:
        lam.get_function_url_config(FunctionName=f"{name}:1")
    assert version_arn.value.response["Error"]["Code"] == "ValidationException"

    with pytest.raises(lam.exceptions.ClientError) as mode:
        lam_unchecked.create_function_url_config(
            FunctionName=name, AuthType="NONE", InvokeMode="STREAMING"
        )
    assert mode.value.response["Error"]["Code"] == "ValidationException"
    assert "[BUFFERED, RESPONSE_STREAM]" in message(mode)

    with pytest.raises(lam.exceptions.ClientError) as auth:
        lam_unchecked.create_function_url_config(FunctionName=name, AuthType="OPEN")
    assert auth.value.response["Error"]["Code"] == "ValidationException"
    assert "Member must satisfy enum value set: [NONE, AWS_IAM]" in message(auth)
    with pytest.raises(lam.exceptions.ClientError) as no_auth:
        lam_unchecked.create_function_url_config(FunctionName=name)
    assert no_auth.value.response["Error"]["Code"] == "ValidationException"

    bad_cors = {
        "MaxAge": 86_401,
        "AllowMethods": ["GET", "DELETES"],
        "AllowOrigins": [""],
    }
    with pytest.raises(lam.exceptions.ClientError) as cors:
        lam_unchecked.create_function_url_config(FunctionName=name, AuthType="NONE", Cors=bad_cors)
    assert cors.value.response["Error"]["Code"] == "ValidationException"
    text = message(cors)
    assert text.startswith("3 validation errors detected")
    assert "cors.maxAge" in text and "cors.allowMethods" in text and "cors.allowOrigins" in text
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as method:
        lam.create_function_url_config(
            FunctionName=name, AuthType="NONE", Cors={"AllowMethods": ["FETCH"]}
        )
    assert "FETCH" in message(method)

    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_function_url_config(FunctionName=name, Qualifier="nosuch", AuthType="NONE")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.create_function_url_config(FunctionName="no-such-function", AuthType="NONE")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_function_url_configs(FunctionName="no-such-function")
    # Nothing was created by any of these.
    assert lam.list_function_url_configs(FunctionName=name)["FunctionUrlConfigs"] == []


def test_deleted_with_alias_and_function(functions: Functions, lam: Any) -> None:
    name = functions.create(ECHO, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    alias_url = lam.create_function_url_config(
        FunctionName=name, Qualifier="live", AuthType="NONE"
    )["FunctionUrl"]
    latest_url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name, "live")
    make_public(lam, name)
    assert fetch(alias_url)[0] == 200

    lam.delete_alias(FunctionName=name, Name="live")
    assert fetch(alias_url)[0] == 403
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=name, Qualifier="live")

    lam.delete_function(FunctionName=name)
    status, _, body = fetch(latest_url)
    assert status == 403
    assert json.loads(body) == {"Message": "Forbidden"}
    functions.create(ECHO, FunctionName=name)
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function_url_config(FunctionName=name)


def test_urls_survive_a_restart(tmp_path: Path) -> None:
    srv = Server(data_dir=tmp_path / "data").start()
    try:
        lam = srv.client()
        Functions(lam).create(ECHO, FunctionName="kept")
        cors = {"AllowOrigins": ["*"], "MaxAge": 10}
        url = lam.create_function_url_config(FunctionName="kept", AuthType="NONE", Cors=cors)
        make_public(lam, "kept")
        assert srv.stop() == 0
        srv.start()
        got = lam.get_function_url_config(FunctionName="kept")
        assert got["FunctionUrl"] == url["FunctionUrl"]
        assert got["CreationTime"] == url["CreationTime"]
        assert got["Cors"] == cors
        status, _, body = fetch(url["FunctionUrl"] + "after")
        assert status == 200
        assert json.loads(body)["rawPath"] == "/after"
    finally:
        srv.stop()


# -- serving ---------------------------------------------------------------------------------


@needs_curl
def test_get_with_query_and_cookies_through_curl(echo: tuple[str, str]) -> None:
    _, url = echo
    uid = url_id(url)
    status, body = curl(
        "-H",
        "Cookie: session=abc; theme=dark",
        "-H",
        "X-Multi: one",
        "-H",
        "X-Multi: two",
        "-A",
        "lamina-test/1.0",
        url + "items/42?color=red&color=blue&empty=&x=%2Fy",
    )
    assert status == 200
    event = json.loads(body)
    assert event["version"] == "2.0"
    assert event["routeKey"] == "$default"
    assert event["rawPath"] == "/items/42"
    assert event["rawQueryString"] == "color=red&color=blue&empty=&x=%2Fy"
    assert event["cookies"] == ["session=abc", "theme=dark"]
    headers = event["headers"]
    assert "cookie" not in headers
    assert headers["x-multi"] == "one,two"
    assert headers["user-agent"] == "lamina-test/1.0"
    assert all(name == name.lower() for name in headers)
    assert event["queryStringParameters"] == {"color": "red,blue", "empty": "", "x": "/y"}
    assert "pathParameters" not in event and "stageVariables" not in event
    assert "body" not in event
    assert event["isBase64Encoded"] is False
    ctx = event["requestContext"]
    assert ctx["apiId"] == uid and ctx["domainPrefix"] == uid
    assert ctx["accountId"] == "anonymous"
    assert ctx["routeKey"] == "$default" and ctx["stage"] == "$default"
    assert ctx["http"] == {
        "method": "GET",
        "path": "/items/42",
        "protocol": "HTTP/1.1",
        "sourceIp": "127.0.0.1",
        "userAgent": "lamina-test/1.0",
    }
    assert re.fullmatch(r"[0-9a-f-]{36}", ctx["requestId"])
    assert re.fullmatch(r"\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d \+0000", ctx["time"])
    assert abs(ctx["timeEpoch"] / 1000 - datetime.datetime.now().timestamp()) < 60
    # No query string: no queryStringParameters; the bare URL is the root path.
    status, body = curl(url.rstrip("/"))
    event = json.loads(body)
    assert event["rawPath"] == "/"
    assert event["rawQueryString"] == ""
    assert "queryStringParameters" not in event and "cookies" not in event


@needs_curl
def test_post_bodies_through_curl_and_urllib(echo: tuple[str, str]) -> None:
    _, url = echo
    status, body = curl(
        "-X", "POST", "-H", "Content-Type: application/json", "--data-binary", '{"a": 1}', url
    )
    assert status == 200
    event = json.loads(body)
    assert event["body"] == '{"a": 1}'
    assert event["isBase64Encoded"] is False
    assert event["requestContext"]["http"]["method"] == "POST"

    binary = bytes(range(256))
    status, _, raw = fetch(
        url + "upload", binary, {"Content-Type": "application/octet-stream"}, "PUT"
    )
    assert status == 200
    event = json.loads(raw)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == binary
    assert event["headers"]["content-type"] == "application/octet-stream"
    # A form post is base64-encoded too, as Lambda does; text/* is not.
    status, _, raw = fetch(url, b"a=1&b=2", {"Content-Type": "application/x-www-form-urlencoded"})
    event = json.loads(raw)
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"a=1&b=2"
    status, _, raw = fetch(url, "héllo".encode(), {"Content-Type": "text/plain; charset=utf-8"})
    event = json.loads(raw)
    assert (event["body"], event["isBase64Encoded"]) == ("héllo", False)


def test_structured_and_bare_responses(echo: tuple[str, str]) -> None:
    _, url = echo
    status, headers, body = fetch(url + "structured")
    assert status == 201
    assert body == b"\x00\x01binary"
    assert headers["x-custom"] == ["yes"]
    assert headers["content-type"] == ["application/octet-stream"]
    assert sorted(headers["set-cookie"]) == ["a=1; Path=/", "b=2"]
    assert "x-amzn-requestid" in headers

    status, headers, body = fetch(url + "text")
    assert (status, body, headers["content-type"]) == (404, b"nope", ["text/plain"])

    for path, expected in (
        ("string", b'"hello"'),
        ("number", b"42"),
        ("plain-dict", {"hello": "world"}),
    ):
        status, headers, body = fetch(url + path)
        assert status == 200
        assert headers["content-type"] == ["application/json"]
        if isinstance(expected, bytes):
            assert body == expected
        else:
            assert json.loads(body) == expected


def test_function_error_is_502(echo: tuple[str, str]) -> None:
    _, url = echo
    status, _, body = fetch(url + "fail")
    assert status == 502
    assert body == b"Internal Server Error"


def test_timeout_is_502_and_throttling_429(functions: Functions, lam: Any) -> None:
    name = functions.create(ECHO, Timeout=1)["FunctionName"]
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    make_public(lam, name)
    status, _, body = fetch(url + "sleep")
    assert (status, body) == (502, b"Internal Server Error")
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    status, _, body = fetch(url)
    assert status == 429
    assert json.loads(body) == {"Message": "Rate Exceeded."}
    lam.delete_function_concurrency(FunctionName=name)
    assert fetch(url)[0] == 200


def test_requests_over_the_payload_limit_are_413(echo: tuple[str, str]) -> None:
    _, url = echo
    binary = {"Content-Type": "application/octet-stream"}
    # Within 6 MB as sent, over it as a base64-encoded event; then over it as sent.
    for size in (5 * 1024 * 1024, 6 * 1024 * 1024 + 1):
        status, _, body = fetch(url, b"\0" * size, binary)
        assert status == 413, size
        assert "Request must be smaller than 6291456 bytes" in json.loads(body)["Message"]
    assert fetch(url, b"\0" * 1024 * 1024, binary)[0] == 200


def test_a_url_needs_its_resource_policy(functions: Functions, lam: Any) -> None:
    """As on Lambda: AuthType NONE serves only if the resource policy allows `*` both
    lambda:InvokeFunctionUrl (for lambda:FunctionUrlAuthType NONE) and lambda:InvokeFunction
    (for lambda:InvokedViaFunctionUrl) — the alias's policy for an alias's URL."""
    name = functions.create(ECHO, Publish=True)["FunctionName"]
    url = lam.create_function_url_config(FunctionName=name, AuthType="NONE")["FunctionUrl"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    live = lam.create_function_url_config(FunctionName=name, Qualifier="live", AuthType="NONE")
    status, _, body = fetch(url)
    assert (status, json.loads(body)) == (403, {"Message": "Forbidden"})
    # Not what a public URL needs: an auth type condition of AWS_IAM.
    lam.add_permission(
        FunctionName=name,
        StatementId="iam",
        Action="lambda:InvokeFunctionUrl",
        Principal="*",
        FunctionUrlAuthType="AWS_IAM",
    )
    assert fetch(url)[0] == 403
    make_public(lam, name, both=False)
    assert fetch(url)[0] == 403  # lambda:InvokeFunction is needed too (since October 2025)
    lam.add_permission(
        FunctionName=name, StatementId="invoke", Action="lambda:InvokeFunction", Principal="*"
    )
    assert fetch(url)[0] == 200
    lam.remove_permission(FunctionName=name, StatementId="invoke")
    assert fetch(url)[0] == 403
    lam.add_permission(
        FunctionName=name,
        StatementId="FunctionURLAllowInvokeAction",
        Action="lambda:InvokeFunction",
        Principal="*",
        InvokedViaFunctionUrl=True,
    )
    assert fetch(url)[0] == 200
    assert fetch(live["FunctionUrl"])[0] == 403  # the function's policy is not the alias's
    make_public(lam, name, "live")
    assert fetch(live["FunctionUrl"])[0] == 200
    lam.remove_permission(FunctionName=name, StatementId="FunctionURLAllowPublicAccess")
    assert fetch(url)[0] == 403


def test_unknown_url_id_is_forbidden(server: Server) -> None:
    status, _, body = fetch(f"{server.endpoint}/lambda-url/{'a' * 32}/")
    assert status == 403
    assert json.loads(body) == {"Message": "Forbidden"}


def test_cors(echo: tuple[str, str], lam: Any) -> None:
    name, url = echo
    # Without CORS settings an OPTIONS request reaches the function.
    status, headers, body = fetch(
        url,
        headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"},
        method="OPTIONS",
    )
    assert status == 200
    assert json.loads(body)["requestContext"]["http"]["method"] == "OPTIONS"
    assert "access-control-allow-origin" not in headers

    lam.update_function_url_config(
        FunctionName=name,
        Cors={
            "AllowOrigins": ["https://a.example"],
            "AllowMethods": ["GET", "POST"],
            "AllowHeaders": ["x-custom", "content-type"],
            "ExposeHeaders": ["x-custom"],
            "MaxAge": 600,
            "AllowCredentials": True,
        },
    )
    status, headers, body = fetch(
        url,
        headers={"Origin": "https://a.example", "Access-Control-Request-Method": "POST"},
        method="OPTIONS",
    )
    assert status == 200
    assert body == b""  # answered by Lamina, not the function
    assert headers["access-control-allow-origin"] == ["https://a.example"]
    assert headers["access-control-allow-methods"] == ["GET,POST"]
    assert headers["access-control-allow-headers"] == ["x-custom,content-type"]
    assert headers["access-control-max-age"] == ["600"]
    assert headers["access-control-allow-credentials"] == ["true"]

    status, headers, _ = fetch(url + "structured", headers={"Origin": "https://a.example"})
    assert status == 201
    assert headers["access-control-allow-origin"] == ["https://a.example"]
    assert headers["access-control-expose-headers"] == ["x-custom"]
    assert headers["access-control-allow-credentials"] == ["true"]
    # Another origin gets no CORS headers.
    status, headers, _ = fetch(url, headers={"Origin": "https://evil.example"})
    assert status == 200
    assert "access-control-allow-origin" not in headers
    status, headers, _ = fetch(
        url,
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        method="OPTIONS",
    )
    assert "access-control-allow-origin" not in headers

    lam.update_function_url_config(FunctionName=name, Cors={"AllowOrigins": ["*"]})
    status, headers, _ = fetch(url, headers={"Origin": "https://any.example"})
    assert headers["access-control-allow-origin"] == ["*"]


@needs_curl
def test_host_header_form(echo: tuple[str, str], server: Server) -> None:
    _, url = echo
    uid = url_id(url)
    host = f"{uid}.lambda-url.us-east-1.on.aws"
    status, body = curl("-H", f"Host: {host}", f"{server.endpoint}/any/path?q=1")
    assert status == 200
    event = json.loads(body)
    assert event["rawPath"] == "/any/path"
    assert event["queryStringParameters"] == {"q": "1"}
    assert event["requestContext"]["domainName"] == host
    assert event["requestContext"]["apiId"] == uid
    # Even a path of the Lambda API goes to the function under that Host.
    status, body = curl(
        "-X", "POST", "-H", f"Host: {host}", f"{server.endpoint}/2015-03-31/functions/x/invocations"
    )
    assert json.loads(body)["rawPath"] == "/2015-03-31/functions/x/invocations"
    # Another region's name is not this server's URL.
    status, _ = curl("-H", f"Host: {uid}.lambda-url.eu-west-1.on.aws", f"{server.endpoint}/health")
    assert status == 200
