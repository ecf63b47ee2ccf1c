"""The one place errors become AWS-shaped responses."""

from __future__ import annotations

import logging
import uuid

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lamina.api.wire import aws_json_error, json_response
from lamina.errors import (
    LaminaError,
    ServiceError,
    StorageFullError,
    UnknownOperationError,
    is_disk_full,
)

log = logging.getLogger(__name__)

#: what a caller is told about a failure of ours: no exception name or detail (those go to
#: the server's log, under the same request id)
INTERNAL_ERROR = "Lamina encountered an internal error. (RequestId: {request_id})"
#: set on an exception `internal_error` has logged, so that `LastResort` does not log it again
_LOGGED = "_lamina_logged"


#: Lambda's errors whose body spells the text `Message` (botocore's model declares the member
#: so for these; the others, and the errors the model does not declare, say `message`)
_CAPITALISED = frozenset(
    {
        "AccessDeniedException",
        "CodeSigningConfigNotFoundException",
        "CodeVerificationFailedException",
        "EC2AccessDeniedException",
        "EC2ThrottledException",
        "EC2UnexpectedException",
        "EFSIOException",
        "EFSMountConnectivityException",
        "EFSMountFailureException",
        "EFSMountTimeoutException",
        "ENILimitReachedException",
        "ENINotReadyException",
        "InvalidCodeSignatureException",
        "InvalidRuntimeException",
        "InvalidSecurityGroupIDException",
        "InvalidSubnetIDException",
        "InvalidZipFileException",
        "KMSAccessDeniedException",
        "KMSDisabledException",
        "KMSInvalidStateException",
        "KMSNotFoundException",
        "NoPublishedVersionException",
        "PublicPolicyException",
        "RecursiveInvocationException",
        "ResourceInUseException",
        "ResourceNotFoundException",
        "ServiceException",
        "ServiceQuotaExceededException",
        "SnapStartException",
        "SnapStartNotReadyException",
        "SnapStartRegenerationFailureException",
        "SnapStartTimeoutException",
        "SubnetIPAddressLimitReachedException",
    }
)


def error_body(error: LaminaError) -> dict[str, object]:
    """An error's JSON body as Lambda sends it: `Type` (User or Service) and the text under
    the member name botocore's model gives that error (`Message` or `message`), so that a
    strict SDK finds it as a modelled member."""
    key = "Message" if error.error_type in _CAPITALISED else "message"
    return {"Type": error.fault, key: error.message, **error.fields}


def error_response(error: LaminaError) -> Response:
    body = error_body(error)
    headers = {"x-amzn-ErrorType": error.error_type, "x-amzn-RequestId": str(uuid.uuid4())}
    if error.retry_after_s is not None:
        headers["Retry-After"] = str(error.retry_after_s)
    return json_response(body, status=error.status, headers=headers)


async def lamina_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, LaminaError)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):
        return error_response(
            UnknownOperationError(f"No operation at {request.method} {request.url.path}")
        )
    error = LaminaError(exc.detail or "HTTP error")
    error.status = exc.status_code
    error.error_type = "BadRequestException" if exc.status_code < 500 else "ServiceException"
    return error_response(error)


def internal_error(exc: BaseException, where: str = "request") -> ServiceError:
    """A failure of ours, logged with its traceback; the caller's error names only the
    request id that finds it in the log."""
    request_id = str(uuid.uuid4())
    log.error("unhandled error in %s (RequestId: %s)", where, request_id, exc_info=exc)
    setattr(exc, _LOGGED, True)
    return ServiceError(INTERNAL_ERROR.format(request_id=request_id))


def _failure(exc: BaseException, where: str) -> LaminaError:
    if is_disk_full(exc):
        # The stores roll a failed change back whole: the caller may simply retry.
        log.warning("a request failed for want of disk space: %s", exc)
        setattr(exc, _LOGGED, True)
        return StorageFullError("the change")
    return internal_error(exc, where)


async def unexpected_error(request: Request, exc: Exception) -> Response:
    return error_response(_failure(exc, f"{request.method} {request.url.path}"))


_REQUEST_ID = b"x-amzn-requestid"


def _add_request_id(start: Message) -> None:
    """Every Lambda response carries an `x-amzn-RequestId`, successful ones too: a response
    that has none yet (an invocation's is its request id) gets a fresh one."""
    headers = list(start.get("headers", ()))
    if not any(name.lower() == _REQUEST_ID for name, _ in headers):
        headers.append((_REQUEST_ID, str(uuid.uuid4()).encode()))
        start["headers"] = headers


class LastResort:
    """The outermost ASGI wrapper. It gives every response its request id; and an exception
    that escapes everything inside is answered with AWS's ServiceException (500), in the JSON
    1.1 shape for an X-Amz-Target request, and the connection stays open for the next
    request. Starlette's own handler answers first and then re-raises (for servers that log);
    that exception, after a complete response, is only swallowed here. Without this, uvicorn
    closes a keep-alive connection on any exception, and the client's next request on it gets
    no answer at all.

    Only a response that failed half-way cannot be mended: that exception goes on to uvicorn,
    which closes the connection (the caller sees a truncated response, not a wrong one).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # 0: nothing sent, 1: headers sent, 2: the whole response sent
        progress = 0

        async def tracked(message: Message) -> None:
            nonlocal progress
            if message["type"] == "http.response.start":
                progress = 1
                _add_request_id(message)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                progress = 2
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if progress == 2:
                # Answered already: by Starlette's handler, which then re-raises (and has
                # logged it), or the failure came after the response (a background task).
                if not getattr(exc, _LOGGED, False):
                    log.error("unhandled error after the response was sent", exc_info=exc)
                return
            if progress == 1:
                raise
            error = _failure(exc, f"{scope['method']} {scope['path']}")
            if any(name == b"x-amz-target" for name, _ in scope["headers"]):
                response = aws_json_error(error.error_type, error.message, error.status)
            else:
                response = error_response(error)
            await response(scope, receive, send)
