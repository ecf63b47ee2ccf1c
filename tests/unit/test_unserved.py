"""The front door for AWS services Lamina does not serve (`api.unserved`)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Receive, Scope, Send

from lamina.api.unserved import RefuseUnservedServices
from lamina.aws_services import endpoint_id, requested_service


def _auth(service: str) -> str:
    return (
        f"AWS4-HMAC-SHA256 Credential=AKID/20260101/us-east-1/{service}/aws4_request, "
        "SignedHeaders=host;x-amz-date, Signature=abc"
    )


def call(
    headers: dict[str, str], path: str = "/", query: bytes = b""
) -> tuple[int | None, dict[str, str], bytes]:
    """One request through the wrapper around an app that answers 204 ("reached the app")."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query,
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(RefuseUnservedServices(app)(scope, receive, send))  # type: ignore[arg-type]
    start = sent[0]
    out_headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], out_headers, b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("service", ["lambda", "logs", "events"])
def test_lambdas_own_services_go_through(service: str) -> None:
    assert call({"Authorization": _auth(service)})[0] == 204


def test_unsigned_untargeted_requests_go_through() -> None:
    assert call({})[0] == 204


def test_a_json_service_gets_a_json_error_naming_its_variable() -> None:
    status, headers, body = call(
        {"Authorization": _auth("dynamodb"), "X-Amz-Target": "DynamoDB_20120810.ListTables"}
    )
    assert status == 400
    assert headers["x-amzn-errortype"] == "UnsupportedServiceException"
    error = json.loads(body)
    assert error["__type"] == "UnsupportedServiceException"
    assert error["message"].startswith(
        "Lamina does not serve dynamodb; set AWS_ENDPOINT_URL_DYNAMODB"
    )


def test_a_query_protocol_service_gets_an_xml_error_response() -> None:
    status, _, body = call(
        {
            "Authorization": _auth("sts"),
            "Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
        }
    )
    assert status == 400
    assert b"<ErrorResponse><Error><Type>Sender</Type><Code>UnsupportedServiceException" in body
    assert b"AWS_ENDPOINT_URL_STS" in body


def test_s3_gets_its_xml_error() -> None:
    status, _, body = call({"Authorization": _auth("s3")}, path="/bucket/key")
    assert status == 400
    assert body.startswith(b"<Error><Code>UnsupportedServiceException</Code>")
    assert b"AWS_ENDPOINT_URL_S3" in body


def test_presigned_and_target_only_requests_are_recognised() -> None:
    query = b"X-Amz-Credential=AKID%2F20260101%2Fus-east-1%2Fsqs%2Faws4_request&X-Amz-Date=1"
    assert call({}, query=query)[0] == 400
    assert call({"X-Amz-Target": "AmazonSSM.GetParameter"})[0] == 400
    assert call({"X-Amz-Target": "Logs_20140328.PutLogEvents"})[0] == 204


def test_function_urls_and_routes_are_never_refused() -> None:
    signed = {"Authorization": _auth("sqs")}
    assert call(signed, path="/lambda-url/abc/x")[0] == 204
    assert call(signed, path="/_http/route")[0] == 204
    assert call({**signed, "Host": "abc.lambda-url.us-east-1.on.aws"}, path="/x")[0] == 204
    assert call(signed, path="/x")[0] == 400


@pytest.mark.parametrize(
    ("signing", "variable"),
    [
        ("dynamodb", "DYNAMODB"),
        ("secretsmanager", "SECRETS_MANAGER"),
        ("logs", "CLOUDWATCH_LOGS"),
        ("events", "EVENTBRIDGE"),
        ("cognito-idp", "COGNITO_IDENTITY_PROVIDER"),
        ("sqs", "SQS"),
    ],
)
def test_endpoint_ids_are_the_sdks(signing: str, variable: str) -> None:
    assert endpoint_id(signing) == variable


def test_requested_service_reads_the_scope_first() -> None:
    assert requested_service(_auth("sns"), "", "DynamoDB_20120810.ListTables") == "sns"
    assert requested_service("Bearer x", "", "") is None
