"""Function names, ARNs and qualifiers, as Lambda accepts and prints them."""

from __future__ import annotations

import re
from dataclasses import dataclass

from lamina.errors import (
    AccessDeniedError,
    InvalidParameterValueError,
    ResourceNotFoundError,
    ValidationError,
)

_PREFIX = (
    r"(?:arn:(?P<partition>aws[a-zA-Z-]*)?:lambda:)?"
    r"(?:(?P<region>(?:eusc-)?[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d):)?"
    r"(?:(?P<account>\d{12}):)?"
    r"(?:function:)?"
)
# FunctionName as the API accepts it: a name, a partial ARN (account:function:name) or a full
# ARN, each optionally with ":qualifier" (botocore's FunctionName).
_REF = re.compile(_PREFIX + r"(?P<name>[a-zA-Z0-9_-]+)(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]+))?")
# The same for the operations whose model takes a NamespacedFunctionName (GetFunction,
# DeleteFunction, Invoke...): dots in the name, and `$LATEST.PUBLISHED`.
_NAMESPACED_REF = re.compile(
    _PREFIX
    + r"(?P<name>[a-zA-Z0-9_.-]+)(?::(?P<qualifier>\$LATEST(?:\.PUBLISHED)?|[a-zA-Z0-9_-]+))?"
)
# The patterns AWS quotes when a value does not match (botocore's current model):
# FunctionName's, and NamespacedFunctionName's.
_REGION_TEXT = r"((eusc-)?[a-z]{2}((-gov)|(-iso([a-z]?)))?-[a-z]+-\d{1}:)?"
REF_PATTERN_TEXT = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?" + _REGION_TEXT + r"(\d{12}:)?(function:)?"
    r"([a-zA-Z0-9-_]+)(:(\$LATEST|[a-zA-Z0-9-_]+))?"
)
_NAMESPACED_PATTERN_TEXT = (
    r"(arn:(aws[a-zA-Z-]*)?:lambda:)?" + _REGION_TEXT + r"(\d{12}:)?(function:)?"
    r"([a-zA-Z0-9-_\.]+)(:(\$LATEST(\.PUBLISHED)?|[a-zA-Z0-9-_]+))?"
)
_NAME_MAX = 64


@dataclass(frozen=True)
class FunctionRef:
    name: str
    qualifier: str | None


def function_arn(region: str, account: str, name: str, qualifier: str | None = None) -> str:
    arn = f"arn:aws:lambda:{region}:{account}:function:{name}"
    return f"{arn}:{qualifier}" if qualifier else arn


def parse_function_ref(
    value: str,
    *,
    region: str,
    account: str,
    qualifier: str | None = None,
    field_name: str = "functionName",
    max_len: int = 140,
    namespaced: bool = False,
) -> FunctionRef:
    """Parse a FunctionName parameter (name, partial ARN or ARN) and an optional Qualifier.

    Raises ValidationException for a malformed value, as Lambda does; for an ARN of another
    region ResourceNotFoundException ("not reachable in this region") and of another account
    AccessDeniedException, as Lambda answers (nothing of that name can exist here).
    `namespaced`: the operation takes a NamespacedFunctionName (up to 256 characters, the
    wider pattern; a name with dots then simply names no function).
    """
    if namespaced:
        max_len = max(max_len, 256)
    pattern, text = (
        (_NAMESPACED_REF, _NAMESPACED_PATTERN_TEXT) if namespaced else (_REF, REF_PATTERN_TEXT)
    )
    if not value or len(value) > max_len or not (m := pattern.fullmatch(value)):
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{field_name}' failed to satisfy "
            + (
                f"constraint: Member must have length less than or equal to {max_len}"
                if value and len(value) > max_len
                else f"constraint: Member must satisfy regular expression pattern: {text}"
            )
        )
    name = m["name"]
    if len(name) > _NAME_MAX:
        raise ValidationError(
            f"1 validation error detected: Value '{value}' at '{field_name}' failed to satisfy "
            f"constraint: Member must have length less than or equal to {_NAME_MAX}"
        )
    if m["account"] and m["account"] != account:
        raise AccessDeniedError(
            f"User is not authorized to access {value}: it belongs to another account "
            f"(this server serves account {account})."
        )
    if m["region"] and m["region"] != region:
        raise ResourceNotFoundError(
            f"Functions from '{m['region']}' are not reachable in this region ('{region}')"
        )
    derived = m["qualifier"]
    if qualifier is not None and derived is not None and qualifier != derived:
        raise InvalidParameterValueError(
            "The derived qualifier from the function name does not match the specified qualifier."
        )
    return FunctionRef(name=name, qualifier=derived if derived is not None else qualifier)
