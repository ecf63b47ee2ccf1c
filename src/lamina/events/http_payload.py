"""HTTP requests to Lambda events and Lambda results to HTTP responses: the payload formats of
function URLs and API Gateway HTTP APIs.

- Format 2.0 (function URLs, and HTTP API routes that choose it): `version`, `routeKey`,
  `rawPath`, `rawQueryString`, `cookies`, `headers` (lower-case; repeated ones joined with
  commas), `queryStringParameters` (repeated keys joined with commas), `requestContext`,
  `body` and `isBase64Encoded`. The result is inferred as Lambda does: an object with a
  `statusCode` is a structured response; anything else is a 200 `application/json` response
  whose body is the result as the function returned it.
- Format 1.0 (HTTP API routes that choose it): API Gateway's REST proxy shape, with
  `multiValueHeaders` and `multiValueQueryStringParameters`. The result must be a structured
  response.

A body is passed as text when its content type is text-like (`text/*`, JSON, XML, JavaScript,
and their `+json`/`+xml` kinds) and base64-encoded otherwise — form posts and requests without
a content type included, as Lambda does: only a type known to be text is safe to decode.

Pure functions of their inputs: no I/O, no framework types, so the URL and route front ends
share them and unit tests drive them directly.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote

from lamina import untrusted_json

#: media types (besides text/*) whose bodies are text, so not base64-encoded
_TEXT_TYPES = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/graphql",
    }
)
#: a header name (RFC 9110's token) and a header value Lamina can send (latin-1, no controls)
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]*")


@dataclass(frozen=True)
class HttpRequest:
    """One HTTP request as the front end received it."""

    method: str
    #: the path as sent (percent-encoded), without any prefix Lamina serves it under
    raw_path: str
    #: the query string as sent (no `?`)
    query: str
    #: (lower-case name, value) in the order received
    headers: tuple[tuple[str, str], ...]
    body: bytes
    source_ip: str
    #: e.g. "HTTP/1.1"
    protocol: str
    #: when it arrived (seconds since the epoch)
    received: float = field(default_factory=time.time)

    @property
    def path(self) -> str:
        """The path, percent-decoded."""
        return unquote(self.raw_path)

    def header(self, name: str) -> str | None:
        """All values of one header joined with commas (None: absent)."""
        values = [v for n, v in self.headers if n == name]
        return ",".join(values) if values else None


@dataclass(frozen=True)
class Target:
    """Where a request goes and what the event says about it."""

    request_id: str
    account_id: str
    api_id: str
    domain_name: str
    domain_prefix: str
    stage: str = "$default"
    #: "$default" for function URLs; "GET /items/{id}" and the like for routes
    route_key: str = "$default"
    path_parameters: dict[str, str] | None = None
    stage_variables: dict[str, str] | None = None


@dataclass
class HttpResponse:
    status: int
    #: (name, value); a name may repeat (Set-Cookie)
    headers: list[tuple[str, str]]
    body: bytes


class BadResponse(ValueError):
    """The function's result is not a response this payload format can map."""


def is_text(content_type: str | None) -> bool:
    """Whether a body of this content type is passed as text rather than base64."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return (
        media.startswith("text/")
        or media in _TEXT_TYPES
        or media.endswith("+json")
        or media.endswith("+xml")
    )


def _body(req: HttpRequest) -> tuple[str | None, bool]:
    """The event's `body` and `isBase64Encoded`."""
    if not req.body:
        return None, False
    if is_text(req.header("content-type")):
        try:
            return req.body.decode("utf-8"), False
        except UnicodeDecodeError:
            pass  # text by its type, but not UTF-8: pass it as bytes
    return base64.b64encode(req.body).decode("ascii"), True


def _joined_headers(req: HttpRequest, *, without: str | None = None) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in req.headers:
        if name == without:
            continue
        out[name] = f"{out[name]},{value}" if name in out else value
    return out


def _query_pairs(req: HttpRequest) -> list[tuple[str, str]]:
    return parse_qsl(req.query, keep_blank_values=True)


def _clf_time(at: float) -> str:
    """API Gateway's request time: 12/Mar/2020:19:03:58 +0000."""
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(at))


def _cookies(req: HttpRequest) -> list[str]:
    found: list[str] = []
    for name, value in req.headers:
        if name == "cookie":
            found += [c.strip() for c in value.split(";") if c.strip()]
    return found


def event_v2(req: HttpRequest, target: Target) -> dict[str, Any]:
    """The payload format 2.0 event of a request."""
    body, encoded = _body(req)
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": target.route_key,
        "rawPath": req.raw_path,
        "rawQueryString": req.query,
    }
    cookies = _cookies(req)
    if cookies:
        event["cookies"] = cookies
    event["headers"] = _joined_headers(req, without="cookie")
    query: dict[str, str] = {}
    for key, value in _query_pairs(req):
        query[key] = f"{query[key]},{value}" if key in query else value
    if query:
        event["queryStringParameters"] = query
    if target.path_parameters:
        event["pathParameters"] = dict(target.path_parameters)
    if target.stage_variables:
        event["stageVariables"] = dict(target.stage_variables)
    event["requestContext"] = {
        "accountId": target.account_id,
        "apiId": target.api_id,
        "domainName": target.domain_name,
        "domainPrefix": target.domain_prefix,
        "http": {
            "method": req.method,
            "path": req.path,
            "protocol": req.protocol,
            "sourceIp": req.source_ip,
            "userAgent": req.header("user-agent") or "",
        },
        "requestId": target.request_id,
        "routeKey": target.route_key,
        "stage": target.stage,
        "time": _clf_time(req.received),
        "timeEpoch": int(req.received * 1000),
    }
    if body is not None:
        event["body"] = body
    event["isBase64Encoded"] = encoded
    return event


def event_v1(req: HttpRequest, target: Target, resource: str) -> dict[str, Any]:
    """The payload format 1.0 event of a request (API Gateway's REST proxy shape);
    `resource` is the route's path (`/items/{id}`; `$default` for the default route)."""
    body, encoded = _body(req)
    headers: dict[str, str] = {}
    multi_headers: dict[str, list[str]] = {}
    for name, value in req.headers:
        headers[name] = value  # the last value wins here, as in API Gateway's
        multi_headers.setdefault(name, []).append(value)
    query: dict[str, str] = {}
    multi_query: dict[str, list[str]] = {}
    for key, value in _query_pairs(req):
        query[key] = value
        multi_query.setdefault(key, []).append(value)
    return {
        "version": "1.0",
        "resource": resource,
        "path": req.path,
        "httpMethod": req.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query or None,
        "multiValueQueryStringParameters": multi_query or None,
        "requestContext": {
            "accountId": target.account_id,
            "apiId": target.api_id,
            "domainName": target.domain_name,
            "domainPrefix": target.domain_prefix,
            "extendedRequestId": target.request_id,
            "httpMethod": req.method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": req.source_ip,
                "user": None,
                "userAgent": req.header("user-agent") or "",
                "userArn": None,
            },
            "path": req.path,
            "protocol": req.protocol,
            "requestId": target.request_id,
            "requestTime": _clf_time(req.received),
            "requestTimeEpoch": int(req.received * 1000),
            "resourceId": target.route_key,
            "resourcePath": resource,
            "stage": target.stage,
        },
        "pathParameters": dict(target.path_parameters) if target.path_parameters else None,
        "stageVariables": dict(target.stage_variables) if target.stage_variables else None,
        "body": body,
        "isBase64Encoded": encoded,
    }


def response_v2(payload: bytes) -> HttpResponse:
    """Map a function's result in format 2.0 (BadResponse if it cannot be)."""
    try:
        result = untrusted_json.loads(payload) if payload else None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadResponse(f"the result is not JSON: {e}") from None
    if isinstance(result, dict) and "statusCode" in result:
        return _structured(result)
    # Anything else is the body of a 200, as the function returned it.
    return HttpResponse(200, [("content-type", "application/json")], payload)


def response_v1(payload: bytes) -> HttpResponse:
    """Map a function's result in format 1.0, which must be structured (BadResponse if not)."""
    try:
        result = untrusted_json.loads(payload) if payload else None
    except (ValueError, UnicodeDecodeError) as e:
        raise BadResponse(f"the result is not JSON: {e}") from None
    if not isinstance(result, dict) or "statusCode" not in result:
        raise BadResponse("a format 1.0 result must be an object with a statusCode")
    return _structured(result)


def _structured(result: dict[str, Any]) -> HttpResponse:
    status = result["statusCode"]
    if isinstance(status, str) and status.isdigit():
        status = int(status)
    if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
        raise BadResponse(f"statusCode {status!r} is not an HTTP status")
    headers: list[tuple[str, str]] = []
    given = result.get("headers")
    given = {} if given is None else given
    multi = result.get("multiValueHeaders")
    multi = {} if multi is None else multi
    if not isinstance(given, dict) or not isinstance(multi, dict):
        raise BadResponse("headers and multiValueHeaders must be objects")
    for name, values in multi.items():
        if not isinstance(values, list):
            raise BadResponse(f"multiValueHeaders {name!r} must be a list")
        headers += [(str(name), _text(v)) for v in values]
    seen = {name.lower() for name, _ in headers}
    # A header in both keeps multiValueHeaders' values, as API Gateway does.
    headers += [(str(n), _text(v)) for n, v in given.items() if str(n).lower() not in seen]
    cookies = result.get("cookies")
    cookies = [] if cookies is None else cookies
    if not isinstance(cookies, list):
        raise BadResponse("cookies must be a list")
    headers += [("set-cookie", _text(c)) for c in cookies]
    for name, value in headers:
        # A header that HTTP/1.1 cannot carry would break the response (or split it in two).
        if not _TOKEN.fullmatch(name) or not _FIELD_VALUE.fullmatch(value):
            raise BadResponse(f"header {name!r} cannot be sent in HTTP/1.1")
    body = result.get("body")
    if body is None:
        data = b""
    elif result.get("isBase64Encoded") is True:
        if not isinstance(body, str):
            raise BadResponse("a base64-encoded body must be a string")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadResponse("the body is not valid base64") from None
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = json.dumps(body).encode("utf-8")
    return HttpResponse(status, headers, data)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value) if isinstance(value, dict | list) else str(value)
