"""HTTP routes (API Gateway HTTP API style): `lamina routes add|list|rm`, matching, both payload
formats, and the route file."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import SIGNED_HTTP, Functions, Server, fetch, lamina

pytestmark = pytest.mark.control_plane

ECHO = """
import json


def handler(event, context):
    path = event.get("rawPath") or event.get("path") or ""
    if path.endswith("/fail"):
        raise RuntimeError("boom")
    if path.endswith("/bare"):
        return {"bare": True}
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {"x-many": ["1", "2"]},
        "body": json.dumps(event),
    }
"""


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server of its own (routes are server-wide), with its route file given by --routes."""
    base = tmp_path_factory.mktemp("routes")
    srv = Server(data_dir=base / "data", extra_args=("--routes", str(base / "my-routes.json")))
    srv.start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture
def echo(routed: Server) -> Iterator[str]:
    lam = routed.client()
    functions = Functions(lam)
    name = functions.create(ECHO)["FunctionName"]
    yield name
    for route in routes_of(routed):
        lamina("routes", "rm", route["routeKey"], endpoint=routed.endpoint)
    functions.cleanup()


def routes_of(srv: Server) -> list[dict[str, Any]]:
    out = lamina("routes", "list", endpoint=srv.endpoint)
    assert out.returncode == 0, out.stderr
    data: list[dict[str, Any]] = json.loads(
        SIGNED_HTTP.get(f"{srv.endpoint}/lamina/routes", timeout=10).content
    )["routes"]
    return data


def add(srv: Server, key: str, function: str, payload_format: str = "2.0") -> None:
    out = lamina(
        "routes", "add", key, function, "--payload-format", payload_format, endpoint=srv.endpoint
    )
    assert out.returncode == 0, out.stderr
    assert key in out.stdout


def get_json(url: str, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = fetch(url, **kwargs)
    return status, json.loads(body)


def test_routes_match_most_specific_first(routed: Server, echo: str) -> None:
    base = f"{routed.endpoint}/_http"
    status, _, body = fetch(f"{base}/items/42")
    assert (status, body) == (404, b'{"message":"Not Found"}')
    add(routed, "GET /items/{id}", echo)
    add(routed, "GET /items/special", echo)
    add(routed, "ANY /items/{id}/{rest+}", echo)
    add(routed, "POST /items/{id}", echo, "1.0")

    status, event = get_json(f"{base}/items/42?color=red&color=blue")
    assert status == 200
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /items/{id}"
    assert event["requestContext"]["routeKey"] == "GET /items/{id}"
    assert event["pathParameters"] == {"id": "42"}
    assert event["rawPath"] == "/items/42"
    assert event["queryStringParameters"] == {"color": "red,blue"}
    assert event["requestContext"]["stage"] == "$default"
    assert event["requestContext"]["accountId"] == "000000000000"
    assert "stageVariables" not in event

    assert get_json(f"{base}/items/special")[1]["routeKey"] == "GET /items/special"
    status, event = get_json(f"{base}/items/a%20b/x/y/z", method="DELETE")
    assert event["routeKey"] == "ANY /items/{id}/{rest+}"
    assert event["pathParameters"] == {"id": "a b", "rest": "x/y/z"}
    # A method no route takes, and a path no route has.
    assert fetch(f"{base}/items/42", method="PUT")[0] == 404
    assert fetch(f"{base}/nothing/here")[0] == 404

    add(routed, "$default", echo)
    status, event = get_json(f"{base}/nothing/here")
    assert status == 200
    assert event["routeKey"] == "$default"
    assert "pathParameters" not in event


def test_payload_format_1(routed: Server, echo: str) -> None:
    add(routed, "ANY /proxy/{proxy+}", echo, "1.0")
    status, headers, body = fetch(
        f"{routed.endpoint}/_http/proxy/a/b?x=1&x=2&y=3",
        data=b"\x00\xffbinary",
        headers={"Content-Type": "application/octet-stream", "X-Twice": "one"},
        method="POST",
    )
    assert status == 200
    assert headers["x-many"] == ["1", "2"]
    event = json.loads(body)
    assert event["version"] == "1.0"
    assert event["resource"] == "/proxy/{proxy+}"
    assert event["path"] == "/proxy/a/b"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"proxy": "a/b"}
    assert event["stageVariables"] is None
    assert event["queryStringParameters"] == {"x": "2", "y": "3"}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "y": ["3"]}
    assert event["headers"]["x-twice"] == "one"
    assert event["multiValueHeaders"]["x-twice"] == ["one"]
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == b"\x00\xffbinary"
    ctx = event["requestContext"]
    assert ctx["httpMethod"] == "POST"
    assert ctx["resourcePath"] == "/proxy/{proxy+}"
    assert ctx["stage"] == "$default"
    assert ctx["identity"]["sourceIp"] == "127.0.0.1"
    # Format 1.0 needs a structured result: a bare one is API Gateway's 500.
    status, _, body = fetch(f"{routed.endpoint}/_http/proxy/bare")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})


def test_function_errors_and_bare_results(routed: Server, echo: str) -> None:
    add(routed, "GET /v2/{thing}", echo)
    status, _, body = fetch(f"{routed.endpoint}/_http/v2/fail")
    assert (status, json.loads(body)) == (500, {"message": "Internal Server Error"})
    # Format 2.0 infers a bare result, as function URLs do.
    status, headers, body = fetch(f"{routed.endpoint}/_http/v2/bare")
    assert status == 200
    assert headers["content-type"] == ["application/json"]
    assert json.loads(body) == {"bare": True}


def test_cli_list_rm_and_refusals(routed: Server, echo: str) -> None:
    add(routed, "GET /things/{id}", echo, "1.0")
    out = lamina("routes", "list", endpoint=routed.endpoint)
    assert out.returncode == 0
    assert f"{routed.endpoint}/_http" in out.stdout
    assert "GET /things/{id}" in out.stdout and echo in out.stdout and "1.0" in out.stdout
    saved = json.loads((routed.data_dir.parent / "my-routes.json").read_text())
    assert saved["routes"] == [
        {"routeKey": "GET /things/{id}", "function": echo, "payloadFormatVersion": "1.0"}
    ]

    for key, function, problem in (
        ("GET things", echo, "must start with '/'"),
        ("FETCH /x", echo, "METHOD one of"),
        ("GET /a/{p+}/b", echo, "must be the last segment"),
        ("GET /a/{id}/{id}", echo, "appears twice"),
        ("GET /a/x{id}", echo, "not a literal or a whole {parameter}"),
        ("GET /a//b", echo, "empty path segment"),
        ("GET /things/{id}", echo, "already exists"),
        ("GET /things/{other}", echo, "would take the same requests as GET /things/{id}"),
        ("GET /ok", "no-such-function", "does not exist"),
        ("GET /ok", "bad name!", "failed to satisfy constraint"),
    ):
        out = lamina("routes", "add", key, function, endpoint=routed.endpoint)
        assert out.returncode == 1, (key, out.stdout)
        assert problem in out.stderr, (key, out.stderr)
    out = lamina(
        "routes", "add", "GET /x", echo, "--payload-format", "3.0", endpoint=routed.endpoint
    )
    assert out.returncode == 2

    out = lamina("routes", "rm", "GET /things/{id}", endpoint=routed.endpoint)
    assert out.returncode == 0, out.stderr
    assert routes_of(routed) == []
    assert fetch(f"{routed.endpoint}/_http/things/1")[0] == 404
    out = lamina("routes", "rm", "GET /things/{id}", endpoint=routed.endpoint)
    assert out.returncode == 1
    assert "ResourceNotFoundException" in out.stderr


def test_route_file_stage_and_restart(tmp_path: Path) -> None:
    file = tmp_path / "routes.json"
    file.write_text(
        json.dumps(
            {
                "stage": "dev",
                "routes": [{"routeKey": "GET /hello/{who}", "function": "greeter:live"}],
            }
        )
    )
    srv = Server(data_dir=tmp_path / "data", extra_args=("--routes", str(file))).start()
    try:
        lam = srv.client()
        Functions(lam).create(ECHO, FunctionName="greeter", Publish=True)
        lam.create_alias(FunctionName="greeter", Name="live", FunctionVersion="1")
        status, event = get_json(f"{srv.endpoint}/_http/dev/hello/you")
        assert status == 200
        assert event["rawPath"] == "/dev/hello/you"
        assert event["pathParameters"] == {"who": "you"}
        assert event["requestContext"]["stage"] == "dev"
        assert fetch(f"{srv.endpoint}/_http/hello/you")[0] == 404
        assert srv.stop() == 0
        # A bad route file stops the start, naming the file and the problem.
        file.write_text(json.dumps({"routes": [{"routeKey": "GET nope", "function": "x"}]}))
        with pytest.raises(RuntimeError):
            srv.start()
        assert str(file) in srv.log() and "must start with '/'" in srv.log()
    finally:
        srv.stop()
