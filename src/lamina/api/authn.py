"""Authentication: the ASGI wrapper in front of the app (only `api.errors.LastResort` is
outside it). Every AWS-protocol request proves its key here.

A request is verified (SigV4, `lamina.auth.sigv4`) before anything else sees it; its
`Principal` goes into `scope["lamina.principal"]` for authorization, and its body, read once to
check the payload hash, is replayed to the app. A request that fails never reaches the app: it
gets AWS's 403 error (the type in `x-amzn-ErrorType` for the Lambda REST API, and in `__type`
for the JSON APIs on `POST /`).

A web console session stands for a signature (`api.console`): a request without one that
carries both the `lamina-console` cookie (a sealed, expiring token naming an access key,
`auth.console_session`) and `X-Lamina-Console: 1` (which a cross-site form or link cannot
send: the CSRF guard, with the cookie's SameSite=Strict) is the key's, looked up in the key
store as a signed request's is. One without the other is an unsigned request; a signed
request ignores the cookie; signing in (`POST /console/session`) takes a signature.

The credential scope must name the service of the API addressed (`signing_service`): `lambda`
for the Lambda API and Lamina's own `/lamina/...` endpoints (boto3, the AWS CLI and the
`lamina` command sign them so), `logs` and `events` for the JSON APIs by X-Amz-Target.

Open without a signature:
- `GET /health` and `GET /metrics` (health checks and Prometheus scrapers do not sign; both
  tell only counts and states, never code or payloads);
- `GET /lamina/code/<sha256>.zip` with a server-made, expiring signature in its query string
  (GetFunction's `Code.Location` and a layer's `Content.Location`: like Lambda's presigned S3
  URLs, they work with plain curl for `CODE_URL_TTL_S`, and a signed request works too);
- `POST /v1/traces`, functions' own OTLP spans, which carry a token of Lamina's instead
  (`api.otlp`: OTLP exporters do not sign);
- function URLs and HTTP routes, which are not AWS API calls: `HttpFront` checks an `AWS_IAM`
  URL's signature itself;
- the web console's page and assets, and reading or ending a console session (its handler
  reads the cookie); with the console off (`--no-console`), every `/console` path, which
  then answers 404.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lamina import limits
from lamina.api.cloudwatch_wire import error as cloudwatch_error
from lamina.api.cloudwatch_wire import protocol_of as wire_protocol
from lamina.api.errors import error_response
from lamina.api.events_api import TARGET_PREFIX as EVENTS_PREFIX
from lamina.api.http_front import signed_request
from lamina.api.logs_api import TARGET_PREFIX as LOGS_PREFIX
from lamina.api.wire import aws_json_error
from lamina.auth import console_session
from lamina.auth.console_session import SessionTokens
from lamina.auth.keys import KeyStore
from lamina.auth.principal import SCOPE_KEY, Principal
from lamina.auth.sigv4 import AuthError, MissingAuthenticationToken, Verifier

#: seconds a code download URL stays valid (Lambda's presigned URLs: 10 minutes)
CODE_URL_TTL_S = 600
#: where the code URL presigner is put (see `CodeUrlSigner.query`)
CODE_URL_SIGNER = "lamina.code_url_signer"
_OPEN = frozenset({("GET", "/health"), ("GET", "/metrics"), ("POST", "/v1/traces")})
#: the web console (`api.console`): its page, its sessions, its own API
CONSOLE_PREFIX = "/console"
CONSOLE_SESSION_PATH = CONSOLE_PREFIX + "/session"
CONSOLE_API_PREFIX = CONSOLE_PREFIX + "/api/"
_CODE_PREFIX = "/lamina/code/"
#: past this size, hashing the body moves to a thread (6 MB of SHA-256 is ~15 ms)
_HASH_INLINE_MAX = 256 * 1024


class CodeUrlSigner:
    """Signs and checks code download URLs with a key made at start (URLs end with the
    process, well within their 10 minutes' life in the common case)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._key = secrets.token_bytes(32)
        self._clock = clock

    def _mac(self, path: str, expires: str) -> str:
        return hmac.new(self._key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def query(self, path: str) -> str:
        """The query string that makes `path` downloadable without a signature, for a while."""
        expires = str(int(self._clock()) + CODE_URL_TTL_S)
        return f"X-Lamina-Expires={expires}&X-Lamina-Signature={self._mac(path, expires)}"

    def check(self, path: str, query: str) -> bool:
        params = dict(parse_qsl(query))
        expires = params.get("X-Lamina-Expires", "")
        signature = params.get("X-Lamina-Signature", "")
        if not expires.isdigit() or int(expires) < self._clock():
            return False
        return hmac.compare_digest(self._mac(path, expires), signature)


class Authn:
    """The authentication wrapper around `app` (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        keys: KeyStore,
        verifier: Verifier,
        is_front: Callable[[Scope], object],
        console: SessionTokens | None = None,
    ) -> None:
        self.app = app
        self.keys = keys
        self.verifier = verifier
        self.code_urls = CodeUrlSigner()
        #: whether a request is a function URL's or an HTTP route's (not AWS-signed)
        self._is_front = is_front
        #: the console's session tokens (None: the console is off)
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[CODE_URL_SIGNER] = self.code_urls
        method, path = scope["method"], scope["path"]
        if (method, path) in _OPEN or self._is_front(scope) is not None:
            await self.app(scope, receive, send)
            return
        if is_console_path(path) and (self.console is None or _console_open(method, path)):
            # The page and its assets; reading or ending a session (its handler checks the
            # cookie); with the console off, every console path (all answer 404).
            await self.app(scope, receive, send)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        if (
            method == "GET"
            and path.startswith(_CODE_PREFIX)
            and "X-Lamina-Signature=" in query
            and self.code_urls.check(path, query)
        ):
            await self.app(scope, receive, send)
            return
        try:
            body, more = await read_body(receive)
        except AuthError as e:
            await _error(scope, receive, send, e)
            return
        request = signed_request(scope, body)
        try:
            if not self.verifier.is_signed(request):
                principal = self._console_principal(method, path, request.headers)
            else:
                service = signing_service(method, path, request.headers)
                if len(body) > _HASH_INLINE_MAX:
                    principal = await asyncio.to_thread(self.verifier.verify, request, service)
                else:
                    principal = self.verifier.verify(request, service)
        except AuthError as e:
            await _error(scope, receive, send, e)
            return
        scope[SCOPE_KEY] = principal
        await self.app(scope, replay(body, more, receive), send)

    def _console_principal(self, method: str, path: str, headers: Mapping[str, str]) -> Principal:
        """The principal of an unsigned request that carries a console session: the
        `lamina-console` cookie and `X-Lamina-Console: 1` together, the key it names still
        in the store (looked up again each time: deleted keys and new policies count at
        once). Anything less is an unsigned request. Signing in takes a signature: a
        session cannot mint its own successor."""
        if (
            self.console is None
            or headers.get(console_session.HEADER) != "1"
            or (method == "POST" and path == CONSOLE_SESSION_PATH)
        ):
            raise MissingAuthenticationToken()
        token = console_session.token_in(headers.get("cookie", ""))
        if token is None:
            raise MissingAuthenticationToken()
        principal = self.keys.principal(self.console.check(token).access_key_id)
        if principal.role_arn is not None:  # (sign-in refuses role sessions: never minted)
            raise MissingAuthenticationToken()
        return principal


def is_console_path(path: str) -> bool:
    """Whether `path` is the web console's (`api.console`)."""
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def _console_open(method: str, path: str) -> bool:
    """Whether a console request needs no credentials here: all but sign-in (which must be
    signed) and the console's own API (cookie or signature, as the APIs)."""
    if path == CONSOLE_SESSION_PATH:
        return method != "POST"
    return not path.startswith(CONSOLE_API_PREFIX)


def signing_service(method: str, path: str, headers: Mapping[str, str]) -> str | None:
    """The service a request's credential scope must name: the API it addresses. `POST /`
    is the JSON 1.1 APIs', by X-Amz-Target (`logs`, `events`; None for a target neither
    serves, answered UnknownOperation whatever it was signed for); every other path is the
    Lambda API's or Lamina's own endpoints', which boto3, the AWS CLI and `lamina` sign as
    `lambda`."""
    if wire_protocol(method, path, headers) is not None:
        return "monitoring"  # CloudWatch, in any of its protocols
    if method == "POST" and path == "/":
        target = headers.get("x-amz-target", "")
        if target.startswith(LOGS_PREFIX):
            return "logs"
        if target.startswith(EVENTS_PREFIX):
            return "events"
        return None
    if path.startswith("/v2/"):
        return "apigateway"  # apigatewayv2 (WebSocket APIs)
    if "/@connections/" in path:
        return "execute-api"  # the WebSocket management API
    return "lambda"


class _TooLarge(AuthError):
    """A body larger than any request the API takes, refused before it is all read: an
    unauthenticated caller must not make the server hold more than that."""

    error_type = "RequestEntityTooLargeException"
    status = 413

    def __init__(self) -> None:
        super().__init__("Request must be smaller than 69905067 bytes for the operation.")


async def read_body(receive: Receive) -> tuple[bytes, bool]:
    """The whole body, and whether the client disconnected while sending it (a body past
    Lambda's largest request is refused before it is all read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limits.CREATE_REQUEST_MAX_BYTES:
            raise _TooLarge()
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), False


def replay(body: bytes, disconnected: bool, receive: Receive) -> Receive:
    """A `receive` that hands the already-read body (or the disconnect) over again, then
    defers to `receive`."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        # After the body, the app only waits for a disconnect: pass the real one on.
        return await receive()

    return replay


async def _error(scope: Scope, receive: Receive, send: Send, error: AuthError) -> None:
    """AWS's answer to a request that failed authentication, in the caller's protocol: the
    JSON 1.1 APIs' (X-Amz-Target) or the Lambda REST API's, as every other error is sent."""
    headers = {
        k.decode("latin-1").lower(): v.decode("latin-1")
        for k, v in scope["headers"]
        if k.lower() in (b"x-amz-target", b"content-type")
    }
    cloudwatch = wire_protocol(scope["method"], scope["path"], headers)
    json_protocol = "x-amz-target" in headers
    if cloudwatch is not None:
        response = cloudwatch_error(cloudwatch, error.error_type, error.message, error.status)
    elif json_protocol:
        response = aws_json_error(error.error_type, error.message, error.status)
    else:
        response = error_response(error)
    await response(scope, receive, send)
