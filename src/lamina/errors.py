"""The one error tree.

A `LaminaError` is something a caller did or asked for that cannot be done: it carries the AWS
error type and HTTP status, and one handler in `api/` turns it into an AWS-shaped response.
A function that fails is not an error of ours: that is a result (see `models.InvokeResult`).
"""

from __future__ import annotations


class LaminaError(Exception):
    """A user-facing error with its AWS error type and HTTP status."""

    error_type: str = "ServiceException"
    status: int = 500
    #: Lambda's "Type" field in error bodies: "User" for caller mistakes, "Service" for ours.
    fault: str = "Service"

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


class ResourceConflictError(UserError):
    error_type = "ResourceConflictException"
    status = 409


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


class UnknownOperationError(UserError):
    error_type = "UnknownOperationException"
    status = 404


class InvalidRuntimeError(LaminaError):
    """The function's runtime cannot run here (any more)."""

    error_type = "InvalidRuntimeException"
    status = 502
    fault = "User"


class ServiceError(LaminaError):
    """Something broke on our side; the message must still be useful to the caller."""

    error_type = "ServiceException"
    status = 500
