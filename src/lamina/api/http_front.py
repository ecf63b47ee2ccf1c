"""Function URLs and HTTP routes, served ahead of the Lambda API on the same port.

An ASGI wrapper in front of the rest (as `_InvokeFirst` is for Invoke): a request for a function
URL or an HTTP route never enters Starlette's router, so any path and method reach the function.

- A function URL is served at `<endpoint>/lambda-url/<url-id>/<path>` (the `FunctionUrl` that
  CreateFunctionUrlConfig returns: it works with curl as it is), and on any path of a request
  whose Host is `<url-id>.lambda-url.<region>.<anything>` (Lambda's own form, for a DNS name or
  a proxy that points such names here).
- HTTP routes are served under `/_http/` (see `lamina.events.http_routes`).

A URL serves only callers its function's resource policy lets in, as on Lambda (see
`lamina.auth.triggers`): AuthType NONE needs statements allowing `*` both
`lambda:InvokeFunctionUrl` (for `lambda:FunctionUrlAuthType` NONE) and `lambda:InvokeFunction`
(for `lambda:InvokedViaFunctionUrl`); AWS_IAM needs a signed caller whom the policies allow
both. Anything else gets Lambda's 403 `{"Message":"Forbidden"}`. HTTP routes need no
permission: like an API Gateway integration, the route's own configuration, made by an
operator through `/lamina/routes`, is the grant.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from lamina import ids, limits
from lamina.api.context import AppState
from lamina.api.function_urls import URL_PATH_PREFIX
from lamina.api.url_stream import StreamedHttp, invoke_streamed, send_streamed
from lamina.arns import FunctionRef
from lamina.auth.console_session import COOKIE, without_token
from lamina.auth.principal import SCOPE_KEY, Decision
from lamina.auth.sigv4 import AuthError, SignedRequest, Verifier
from lamina.auth.triggers import authorize_url, public_url_allowed
from lamina.errors import LaminaError, TooManyRequestsError
from lamina.events import http_payload as hp
from lamina.models import LATEST, FunctionUrl, InvokeRequest, InvokeResult, UrlCors
from lamina.response_stream import ResponseStream

#: a Host of Lambda's function URL form; the region must be this server's
_URL_HOST = re.compile(r"([a-z0-9]{32})\.lambda-url\.([a-z0-9-]+)(\..*)?")
#: the front of Lamina's path form, `/lambda-url/<url-id>`, and the rest of the path
_URL_PATH = re.compile(re.escape(URL_PATH_PREFIX) + r"([a-z0-9]{32})(/.*)?", re.DOTALL)
#: where a request's `HttpFront.target` is kept once worked out
_TARGET_KEY = "lamina.front_target"
_UNKNOWN = object()
#: response headers Lambda sets itself when a URL has CORS settings
_CORS_RESPONSE_HEADERS = frozenset(
    {
        "access-control-allow-origin",
        "access-control-allow-credentials",
        "access-control-expose-headers",
        "access-control-allow-methods",
        "access-control-allow-headers",
        "access-control-max-age",
    }
)


class TooLarge(Exception):
    """A request body over Lambda's synchronous payload limit."""


async def send_response(response: hp.HttpResponse, send: Send) -> None:
    """Send `response` as one ASGI response (headers may repeat: Set-Cookie)."""
    headers = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in response.headers]
    headers = [(n, v) for n, v in headers if n != b"content-length"]
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def json_error(status: int, body: dict[str, str], request_id: str) -> hp.HttpResponse:
    return hp.HttpResponse(
        status,
        [("content-type", "application/json"), ("x-amzn-requestid", request_id)],
        json.dumps(body).encode(),
    )


async def read_body(receive: Receive) -> bytes:
    """The whole request body (TooLarge past Lambda's 6 MB synchronous limit)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.SYNC_PAYLOAD_MAX_BYTES:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def http_request(scope: Scope, raw_path: str, body: bytes) -> hp.HttpRequest:
    """The request `scope` describes, with `raw_path` the part the function sees."""
    headers = tuple((n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in scope["headers"])
    if any(n == "cookie" and COOKIE in v for n, v in headers):
        # The console's session is the server's business, never a function's.
        stripped = ((n, without_token(v) if n == "cookie" else v) for n, v in headers)
        headers = tuple((n, v) for n, v in stripped if v or n != "cookie")
    client = scope.get("client")
    source_ip = client[0] if client else "127.0.0.1"
    server = scope.get("server")
    # What Lambda's front end adds (unless a caller sent them: then theirs stay first).
    extra = [
        ("x-forwarded-for", source_ip),
        ("x-forwarded-proto", scope.get("scheme", "http")),
        ("x-forwarded-port", str(server[1]) if server else ""),
        ("x-amzn-trace-id", ids.trace_id().split(";", 1)[0]),
    ]
    have = {n for n, _ in headers}
    headers += tuple((n, v) for n, v in extra if n not in have)
    return hp.HttpRequest(
        method=scope["method"],
        raw_path=raw_path or "/",
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=body,
        source_ip=source_ip,
        protocol=f"HTTP/{scope.get('http_version', '1.1')}",
    )


def signed_request(scope: Scope, body: bytes) -> SignedRequest:
    """What the SigV4 verifier needs of the request `scope` describes."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if name in headers:
            headers[name] += "," + raw_value.decode("latin-1")
        else:
            headers[name] = raw_value.decode("latin-1")
    # Positional: this runs ahead of every signed request (method, raw path, query, ...).
    return SignedRequest(
        scope["method"],
        raw_path_of(scope),
        scope.get("query_string", b"").decode("latin-1"),
        headers,
        body,
    )


def _host(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"host":
            return str(value.decode("latin-1"))
    return ""


def raw_path_of(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw else str(scope["path"])


async def run_function(
    state: AppState,
    ref: FunctionRef,
    event: dict[str, Any],
    request_id: str,
    stream: ResponseStream | None = None,
) -> InvokeResult:
    """Invoke `ref` synchronously with `event`: TooLarge if the event is over Lambda's
    synchronous payload limit, TooManyRequestsError when throttled, another LaminaError if
    the function cannot be resolved. A response the function streams goes to `stream`."""
    payload = json.dumps(event, separators=(",", ":")).encode()
    if len(payload) > limits.SYNC_PAYLOAD_MAX_BYTES:
        raise TooLarge
    functions = state.functions
    config = await functions.resolve_current(ref)
    # The trace the request's X-Amzn-Trace-Id names (the caller's, or the Root added to
    # the event): the function's _X_AMZN_TRACE_ID continues it, as on Lambda.
    trace, _ = functions.recursion.trace(ref.name, _trace_header(event))
    request = InvokeRequest(
        request_id=request_id,
        payload=payload,
        invoked_arn=functions.arn(ref.name, ref.qualifier),
        trace_id=trace,
        stream=stream,
        source="Http",
    )
    if config.durable is not None and state.durable is not None:
        # A durable function's request starts its execution and answers with its outcome.
        return await state.durable.start_for(config, request, wait=True)
    return await state.scheduler.invoke(config, request)


class HttpFront:
    """Function URLs (and HTTP routes, when a router is given) ahead of `app`."""

    def __init__(
        self,
        app: ASGIApp,
        state: AppState,
        routes: ASGIApp | None = None,
        verifier: Verifier | None = None,
    ) -> None:
        self.app = app
        self.state = state
        self.routes = routes
        #: checks AWS_IAM function URLs' signatures (None: authentication is off)
        self.verifier = verifier

    def target(self, scope: Scope) -> tuple[str, str] | str | None:
        """What this front serves `scope` as: a function URL (its id and the path the function
        sees), `"routes"` for an HTTP route, or None (the Lambda API's). Authentication asks
        this too: these requests are not AWS-signed, and must not be checked as if they were.
        Worked out once per request (the listener gate and authentication ask before the
        front itself does)."""
        found = scope.get(_TARGET_KEY, _UNKNOWN)
        if found is _UNKNOWN:
            found = scope[_TARGET_KEY] = self._target(scope)
        return found  # type: ignore[no-any-return]

    def _target(self, scope: Scope) -> tuple[str, str] | str | None:
        if scope["type"] != "http":
            return None
        path: str = scope["path"]
        if path.startswith(URL_PATH_PREFIX):
            match = _URL_PATH.fullmatch(raw_path_of(scope))
            if match is not None:
                return match[1], match[2] or "/"
        elif self.routes is not None and (path == "/_http" or path.startswith("/_http/")):
            return "routes"
        for name, value in scope["headers"]:
            # A cheap test first: this runs ahead of every Invoke.
            if name == b"host" and b".lambda-url." in value:
                host = _URL_HOST.fullmatch(value.decode("latin-1").split(":", 1)[0])
                if host is not None and host[2] == self.state.settings.region:
                    return host[1], raw_path_of(scope)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        target = self.target(scope)
        if target is None:
            await self.app(scope, receive, send)
        elif isinstance(target, tuple):
            await self._url(scope, receive, send, *target)
        else:
            assert self.routes is not None
            await self.routes(scope, receive, send)

    async def _url(
        self, scope: Scope, receive: Receive, send: Send, url_id: str, raw_path: str
    ) -> None:
        request_id = ids.request_id()
        url = self.state.functions.urls.by_id(url_id)
        # NONE: decided before the body is read (an unopened URL costs nothing more).
        if url is None or (url.auth_type == "NONE" and not self._permitted(url, scope)):
            # What Lambda answers for a URL that does not exist (any more) or that the
            # function's resource policy does not open to this caller.
            await send_response(json_error(403, {"Message": "Forbidden"}, request_id), send)
            return
        try:
            body = await read_body(receive)
        except TooLarge:
            await send_response(_too_large(request_id), send)
            return
        if url.auth_type == "AWS_IAM" and not (
            self._iam_allowed(scope, body) and self._permitted(url, scope)
        ):
            # Lambda's answer to an AWS_IAM URL request that is unsigned or signed wrongly,
            # or whose signer no policy lets invoke the URL.
            await send_response(json_error(403, {"Message": "Forbidden"}, request_id), send)
            return
        req = http_request(scope, raw_path, body)
        response = await self._serve_url(url, req, scope, request_id)
        response.headers.append(("x-amzn-requestid", request_id))
        if isinstance(response, StreamedHttp):
            await send_streamed(response, receive, send)
        else:
            await send_response(response, send)

    def _permitted(self, url: FunctionUrl, scope: Scope) -> bool:
        """Whether the function's resource policy (its alias's, for an alias's URL) lets this
        caller use the URL (no I/O: policies are in memory)."""
        qualifier = None if url.qualifier == LATEST else url.qualifier
        functions = self.state.functions
        arn = functions.arn(url.function_name, qualifier)
        policy = functions.policies.policy_for(url.function_name, qualifier)
        if url.auth_type == "NONE":
            return public_url_allowed(arn, policy)
        if self.verifier is None:
            return True  # authentication off: every caller is let through, as on the API
        # AWS_IAM: `_iam_allowed` verified the signature and left the caller in the scope.
        principal = scope.get(SCOPE_KEY)
        return principal is not None and authorize_url(principal, arn, policy) is Decision.ALLOW

    def _iam_allowed(self, scope: Scope, body: bytes) -> bool:
        """Whether an AWS_IAM URL's request is SigV4-signed (service `lambda`) by a live key;
        with authentication off, every request is let through, as every API request is."""
        if self.verifier is None:
            return True
        try:
            principal = self.verifier.verify(signed_request(scope, body), "lambda")
        except AuthError:
            return False
        scope[SCOPE_KEY] = principal
        return True

    async def _serve_url(
        self, url: FunctionUrl, req: hp.HttpRequest, scope: Scope, request_id: str
    ) -> hp.HttpResponse:
        origin = req.header("origin")
        cors = url.cors
        if (
            cors is not None
            and req.method == "OPTIONS"
            and origin is not None
            and req.header("access-control-request-method") is not None
        ):
            return hp.HttpResponse(200, preflight_headers(cors, origin), b"")
        host = _host(scope)
        target = hp.Target(
            request_id=request_id,
            # Lambda's for AuthType NONE: the caller is anonymous
            account_id="anonymous",
            api_id=url.url_id,
            domain_name=host or self.state.settings.endpoint_url.split("//", 1)[1],
            domain_prefix=url.url_id,
        )
        event = hp.event_v2(req, target)
        ref = FunctionRef(url.function_name, None if url.qualifier == LATEST else url.qualifier)
        response = await self._invoke(
            ref, event, request_id, streaming=url.invoke_mode == "RESPONSE_STREAM"
        )
        if cors is not None and origin is not None:
            response.headers = [
                (n, v) for n, v in response.headers if n.lower() not in _CORS_RESPONSE_HEADERS
            ]
            response.headers += cors_headers(cors, origin)
        return response

    async def _invoke(
        self, ref: FunctionRef, event: dict[str, Any], request_id: str, streaming: bool = False
    ) -> hp.HttpResponse:
        """The function's answer to a URL request, or Lambda's error response for it
        (a `StreamedHttp` when the URL streams and the function does)."""
        try:
            if streaming:
                streamed = await invoke_streamed(
                    lambda stream: run_function(self.state, ref, event, request_id, stream)
                )
                if streamed is None:
                    return _internal_error()
                if isinstance(streamed, StreamedHttp):
                    return streamed
                result = streamed
            else:
                result = await run_function(self.state, ref, event, request_id)
        except TooLarge:
            return _too_large(request_id)
        except TooManyRequestsError:
            return json_error(429, {"Message": "Rate Exceeded."}, request_id)
        except LaminaError:
            return _internal_error()
        if result.function_error:
            # A function error, a timeout or a crash: Lambda's URL answer for all of them.
            return _internal_error()
        try:
            return hp.response_v2(result.payload)
        except hp.BadResponse:
            return _internal_error()


def _too_large(request_id: str) -> hp.HttpResponse:
    message = (
        f"Request must be smaller than {limits.SYNC_PAYLOAD_MAX_BYTES} bytes for the "
        "InvokeFunction operation"
    )
    return json_error(413, {"Message": message}, request_id)


def _internal_error() -> hp.HttpResponse:
    return hp.HttpResponse(502, [("content-type", "application/json")], b"Internal Server Error")


def _origin_allowed(cors: UrlCors, origin: str) -> str | None:
    """The Access-Control-Allow-Origin value for `origin` (None: not allowed)."""
    origins = cors.allow_origins or ()
    if "*" in origins:
        # A wildcard cannot go with credentials (browsers refuse it): echo the origin then.
        return origin if cors.allow_credentials else "*"
    lowered = origin.lower()
    return origin if any(o.lower() == lowered for o in origins) else None


def cors_headers(cors: UrlCors, origin: str) -> list[tuple[str, str]]:
    """The CORS headers of an actual (not preflight) response to `origin`."""
    allowed = _origin_allowed(cors, origin)
    if allowed is None:
        return []
    out = [("access-control-allow-origin", allowed), ("vary", "Origin")]
    if cors.allow_credentials:
        out.append(("access-control-allow-credentials", "true"))
    if cors.expose_headers:
        out.append(("access-control-expose-headers", ",".join(cors.expose_headers)))
    return out


def preflight_headers(cors: UrlCors, origin: str) -> list[tuple[str, str]]:
    """The answer to a preflight OPTIONS from `origin`, from the URL's CORS settings."""
    allowed = _origin_allowed(cors, origin)
    if allowed is None:
        return [("vary", "Origin")]
    out = [("access-control-allow-origin", allowed), ("vary", "Origin")]
    if cors.allow_methods:
        out.append(("access-control-allow-methods", ",".join(cors.allow_methods)))
    if cors.allow_headers:
        out.append(("access-control-allow-headers", ",".join(cors.allow_headers)))
    if cors.max_age is not None:
        out.append(("access-control-max-age", str(cors.max_age)))
    if cors.allow_credentials:
        out.append(("access-control-allow-credentials", "true"))
    if cors.expose_headers:
        out.append(("access-control-expose-headers", ",".join(cors.expose_headers)))
    return out


def _trace_header(event: dict[str, Any]) -> str | None:
    headers = event.get("headers")
    if isinstance(headers, dict):
        for name, value in headers.items():
            if name.lower() == "x-amzn-trace-id" and isinstance(value, str):
                return value
    return None
