"""The one place errors become AWS-shaped responses."""

from __future__ import annotations

import logging
import uuid

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from lamina.api.wire import json_response
from lamina.errors import (
    LaminaError,
    ServiceError,
    StorageFullError,
    UnknownOperationError,
    is_disk_full,
)

log = logging.getLogger(__name__)


def error_response(error: LaminaError) -> Response:
    body: dict[str, object] = {"Type": error.fault, "message": error.message, **error.fields}
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


async def unexpected_error(_: Request, exc: Exception) -> Response:
    if is_disk_full(exc):
        # The stores roll a failed change back whole: the caller may simply retry.
        log.warning("a request failed for want of disk space: %s", exc)
        return error_response(StorageFullError("the change"))
    log.error("unhandled error", exc_info=exc)
    return error_response(
        ServiceError(f"Lamina failed to handle the request: {type(exc).__name__}")
    )
