"""The front door for AWS services Lamina does not serve.

A function's SDK (or any client) sent here for another service — DynamoDB, SQS, STS... —
would otherwise meet a signature error (the key's scope names that service) or a parser error
after the SDK's retries. This wrapper, outermost, reads which service a request is for (its
SigV4 credential scope, or its X-Amz-Target) and answers at once, before authentication, with
400 UnsupportedServiceException naming the variable that sends that service elsewhere. 400
is a status AWS's SDKs do not retry. The body is in the protocol the service's SDK parses
(JSON, query XML or S3's XML), so the message reaches the caller's exception.
"""

from __future__ import annotations

from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from lamina.api.wire import aws_json_error
from lamina.aws_services import SERVED_SIGNING_NAMES, endpoint_id, requested_service
from lamina.errors import ServiceNotServedError


class RefuseUnservedServices:
    """ASGI wrapper: requests for services not in `aws_services.SERVED` are refused."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            service = _service(scope)
            if service is not None and service not in SERVED_SIGNING_NAMES:
                await _refusal(scope, service)(scope, receive, send)
                return
        await self.app(scope, receive, send)


#: function URLs and HTTP routes: any client may call them, signed for whatever it likes
_PASS_PATHS = ("/lambda-url/", "/_http/")


def _service(scope: Scope) -> str | None:
    if scope["path"].startswith(_PASS_PATHS):
        return None
    authorization = target = ""
    for name, value in scope["headers"]:
        if name == b"host" and b".lambda-url." in value:
            return None
        if name == b"authorization":
            authorization = value.decode("latin-1")
        elif name == b"x-amz-target":
            target = value.decode("latin-1")
    credential = ""
    query = scope.get("query_string", b"")
    if b"X-Amz-Credential" in query:
        credential = parse_qs(query.decode("latin-1")).get("X-Amz-Credential", [""])[0]
    if not (authorization or credential or target):
        return None  # the common case, unsigned and untargeted: nothing to read
    return requested_service(authorization, credential, target)


def _refusal(scope: Scope, service: str) -> Response:
    error = ServiceNotServedError(
        f"Lamina does not serve {service}; set AWS_ENDPOINT_URL_{endpoint_id(service)} (in "
        f"the function's Environment, or `lamina serve --aws-endpoint {service}=URL`) to "
        f"where {service} is."
    )
    content_type = b""
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
    if service == "s3":
        body = (
            f"<Error><Code>{error.error_type}</Code><Message>{escape(error.message)}</Message>"
            "</Error>"
        )
        return Response(body, status_code=error.status, media_type="application/xml")
    if content_type.startswith(b"application/x-www-form-urlencoded"):
        # The query protocol (STS, SNS, IAM...): its SDKs parse an XML ErrorResponse.
        body = (
            "<ErrorResponse><Error><Type>Sender</Type>"
            f"<Code>{error.error_type}</Code><Message>{escape(error.message)}</Message>"
            "</Error><RequestId>00000000-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        )
        return Response(body, status_code=error.status, media_type="text/xml")
    return aws_json_error(error.error_type, error.message, error.status)
