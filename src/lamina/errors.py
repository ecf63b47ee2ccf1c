"""The one error tree.

A `LaminaError` is something a caller did or asked for that cannot be done: it carries the AWS
error type and HTTP status, and one handler in `api/` turns it into an AWS-shaped response.
A function that fails is not an error of ours: that is a result (see `models.InvokeResult`).
"""

from __future__ import annotations

import errno
import sqlite3


class LaminaError(Exception):
    """A user-facing error with its AWS error type and HTTP status."""

    error_type: str = "ServiceException"
    status: int = 500
    #: Lambda's "Type" field in error bodies: "User" for caller mistakes, "Service" for ours.
    fault: str = "Service"
    #: seconds for the Retry-After header (None: no header)
    retry_after_s: int | None = None

    def __init__(self, message: str, **fields: object) -> None:
        super().__init__(message)
        self.message = message
        #: extra members of the error body (for example TooManyRequestsException's Reason)
        self.fields = fields


class UserError(LaminaError):
    fault = "User"
    status = 400


class ValidationError(UserError):
    error_type = "ValidationException"


class InvalidParameterValueError(UserError):
    error_type = "InvalidParameterValueException"


class InvalidRequestContentError(UserError):
    error_type = "InvalidRequestContentException"


class AccessDeniedError(UserError):
    error_type = "AccessDeniedException"
    status = 403


class ResourceNotFoundError(UserError):
    error_type = "ResourceNotFoundException"
    status = 404


class ProvisionedConcurrencyConfigNotFoundError(UserError):
    error_type = "ProvisionedConcurrencyConfigNotFoundException"
    status = 404


class RecursiveInvocationError(UserError):
    """Invoke stopped by recursive loop detection."""

    error_type = "RecursiveInvocationException"
    status = 400


class ResourceConflictError(UserError):
    error_type = "ResourceConflictException"
    status = 409


class ResourceInUseError(UserError):
    """The resource is being changed or used by another, e.g. a broker that mappings read
    from, or an event-source mapping that is being deleted."""

    error_type = "ResourceInUseException"


class CodeSigningConfigNotFoundError(UserError):
    """A code signing configuration named for a function does not exist."""

    error_type = "CodeSigningConfigNotFoundException"
    status = 404


class CodeVerificationFailedError(UserError):
    """A package failed a signature check (unsigned, untrusted publisher, expired, revoked)
    and the function's code signing policy is Enforce."""

    error_type = "CodeVerificationFailedException"


class InvalidCodeSignatureError(UserError):
    """A package's signature fails the integrity check: refused whatever the policy."""

    error_type = "InvalidCodeSignatureException"


class PreconditionFailedError(UserError):
    error_type = "PreconditionFailedException"
    status = 412


class PolicyLengthExceededError(UserError):
    """A function's resource-based policy over Lambda's 20 KB."""

    error_type = "PolicyLengthExceededException"


class MalformedPolicyDocumentError(UserError):
    """A policy document IAM would refuse (IAM's error code; `auth.policy.PolicyError` says
    what is wrong)."""

    error_type = "MalformedPolicyDocument"


class RequestTooLargeError(UserError):
    error_type = "RequestTooLargeException"
    status = 413


class RequestEntityTooLargeError(UserError):
    error_type = "RequestEntityTooLargeException"
    status = 413


class UnsupportedMediaTypeError(UserError):
    error_type = "UnsupportedMediaTypeException"
    status = 415


class TooManyRequestsError(UserError):
    error_type = "TooManyRequestsException"
    status = 429


class StorageFullError(TooManyRequestsError):
    """Lamina's data disk has no room for a change, which was left undone (the request may
    be sent again). A 429 TooManyRequestsException with Retry-After, not a 500: every Lambda
    operation lists it, every SDK backs off and retries it by itself, and the condition is
    temporary (the log store gives space back within seconds; see docs/log-limits.md)."""

    retry_after_s = 5

    def __init__(self, what: str) -> None:
        super().__init__(
            f"Lamina's data disk is full: {what} could not be stored and nothing was changed. "
            "Retry later."
        )


def is_disk_full(error: BaseException | None) -> bool:
    """Whether an error (or one it was raised from, or wraps: SQLAlchemy's `orig`) is a full
    disk or quota, as the OS or SQLite says it."""
    seen = 0
    while error is not None and seen < 8:
        if isinstance(error, sqlite3.Error):
            if getattr(error, "sqlite_errorcode", None) == _SQLITE_FULL:
                return True
            if "database or disk is full" in str(error):
                return True
        elif isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        inner = getattr(error, "orig", None)
        if isinstance(inner, BaseException) and is_disk_full(inner):
            return True
        error = error.__cause__ or error.__context__
        seen += 1
    return False


_SQLITE_FULL = 13


class UnknownOperationError(UserError):
    error_type = "UnknownOperationException"
    status = 404


class InvalidRuntimeError(LaminaError):
    """The function's runtime cannot run here (any more)."""

    error_type = "InvalidRuntimeException"
    status = 502
    fault = "User"


class InvalidSubnetIDError(LaminaError):
    """A function's subnet is no longer one of the server's VPCs (Invoke's
    InvalidSubnetIDException: Lambda cannot set up the function's VPC access)."""

    error_type = "InvalidSubnetIDException"
    status = 502
    fault = "User"


class ResourceNotReadyError(LaminaError):
    """Invoke's ResourceNotReadyException: what the function needs is not on this node and
    cannot be made ready now (a container image that can no longer be pulled)."""

    error_type = "ResourceNotReadyException"
    status = 502
    fault = "User"


class SnapStartNotReadyError(UserError):
    """Invoke of a SnapStart version whose template is still being made (State Pending)."""

    error_type = "SnapStartNotReadyException"
    status = 409
    #: Lambda's text
    MESSAGE = (
        "Lambda is initializing your function. It will be ready to invoke once your function "
        "state becomes ACTIVE."
    )


class SnapStartError(UserError):
    """Invoke of a SnapStart version whose restored environment's after-restore hook failed."""

    error_type = "SnapStartException"
    status = 400


class SnapStartTimeoutError(UserError):
    """Invoke of a SnapStart version whose restore (and after-restore hooks) took too long."""

    error_type = "SnapStartTimeoutException"
    status = 408


class ServiceError(LaminaError):
    """Something broke on our side; the message must still be useful to the caller."""

    error_type = "ServiceException"
    status = 500


class ServiceNotServedError(UserError):
    """A request for an AWS service Lamina does not serve (a function's SDK pointed at
    Lamina for DynamoDB, say): refused at once, with a status SDKs do not retry."""

    error_type = "UnsupportedServiceException"


# -- API Gateway (apigatewayv2, apigatewaymanagementapi) ---------------------------------------


class NotFoundError(UserError):
    """API Gateway's 404 (an API, route, integration or stage that does not exist)."""

    error_type = "NotFoundException"
    status = 404


class BadRequestError(UserError):
    """API Gateway's 400 for input it refuses."""

    error_type = "BadRequestException"


class ConflictError(UserError):
    """API Gateway's 409 (a route key or stage name already taken)."""

    error_type = "ConflictException"
    status = 409


class GoneError(UserError):
    """The `@connections` API's 410: the connection is closed or never existed."""

    error_type = "GoneException"
    status = 410


class PayloadTooLargeError(UserError):
    """The `@connections` API's 413: PostToConnection data over a message's limit."""

    error_type = "PayloadTooLargeException"
    status = 413
