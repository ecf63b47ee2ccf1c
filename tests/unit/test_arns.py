"""Function names, ARNs and qualifiers (`lamina.arns`)."""

from __future__ import annotations

import pytest

from lamina.arns import FunctionRef, function_arn, parse_function_ref
from lamina.errors import (
    AccessDeniedError,
    InvalidParameterValueError,
    ResourceNotFoundError,
    ValidationError,
)

REGION = "us-east-1"
ACCOUNT = "000000000000"
ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function"


def parse(
    value: str,
    qualifier: str | None = None,
    *,
    field_name: str = "functionName",
    max_len: int = 140,
) -> FunctionRef:
    return parse_function_ref(
        value,
        region=REGION,
        account=ACCOUNT,
        qualifier=qualifier,
        field_name=field_name,
        max_len=max_len,
    )


# -- function_arn ------------------------------------------------------------------------------


def test_function_arn_unqualified() -> None:
    assert function_arn("eu-west-1", "123456789012", "my-fn") == (
        "arn:aws:lambda:eu-west-1:123456789012:function:my-fn"
    )


@pytest.mark.parametrize("qualifier", ["$LATEST", "7", "prod"])
def test_function_arn_qualified(qualifier: str) -> None:
    assert function_arn(REGION, ACCOUNT, "f", qualifier) == f"{ARN}:f:{qualifier}"


def test_function_arn_round_trips_through_parse() -> None:
    assert parse(function_arn(REGION, ACCOUNT, "my_fn-1", "live")) == FunctionRef("my_fn-1", "live")
    assert parse(function_arn(REGION, ACCOUNT, "my_fn-1")) == FunctionRef("my_fn-1", None)


# -- parse_function_ref: accepted forms -------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("my-function", FunctionRef("my-function", None)),
        ("My_Function-2", FunctionRef("My_Function-2", None)),
        ("my-function:prod", FunctionRef("my-function", "prod")),
        ("my-function:3", FunctionRef("my-function", "3")),
        ("my-function:$LATEST", FunctionRef("my-function", "$LATEST")),
        (f"{ACCOUNT}:function:my-function", FunctionRef("my-function", None)),
        (f"{ACCOUNT}:function:my-function:v2", FunctionRef("my-function", "v2")),
        (f"{ARN}:my-function", FunctionRef("my-function", None)),
        (f"{ARN}:my-function:live", FunctionRef("my-function", "live")),
        (f"{ARN}:my-function:$LATEST", FunctionRef("my-function", "$LATEST")),
    ],
)
def test_accepted_forms(value: str, expected: FunctionRef) -> None:
    assert parse(value) == expected


def test_qualifier_parameter_applies_to_unqualified_name() -> None:
    assert parse("f", qualifier="prod") == FunctionRef("f", "prod")
    assert parse(f"{ARN}:f", qualifier="5") == FunctionRef("f", "5")


def test_matching_qualifier_in_both_places_is_fine() -> None:
    assert parse("f:prod", qualifier="prod") == FunctionRef("f", "prod")
    assert parse(f"{ARN}:f:7", qualifier="7") == FunctionRef("f", "7")


def test_name_of_exactly_64_chars_is_accepted() -> None:
    name = "a" * 64
    assert parse(name).name == name
    assert parse(f"{ARN}:{name}:q") == FunctionRef(name, "q")


def test_configured_region_and_account_are_the_ones_accepted() -> None:
    ref = parse_function_ref(
        "arn:aws:lambda:eu-central-1:123456789012:function:f",
        region="eu-central-1",
        account="123456789012",
    )
    assert ref == FunctionRef("f", None)


# -- parse_function_ref: other region or account ---------------------------------------------


def test_arn_of_another_region_is_not_reachable() -> None:
    with pytest.raises(ResourceNotFoundError) as exc:
        parse("arn:aws:lambda:eu-west-1:000000000000:function:f")
    assert exc.value.status == 404
    assert exc.value.message == (
        "Functions from 'eu-west-1' are not reachable in this region ('us-east-1')"
    )


@pytest.mark.parametrize(
    "value",
    [
        "arn:aws:lambda:us-east-1:111111111111:function:f",
        "arn:aws:lambda:us-east-1:111111111111:function:f:prod",
        "111111111111:function:f",
    ],
)
def test_arn_of_another_account_is_access_denied(value: str) -> None:
    with pytest.raises(AccessDeniedError) as exc:
        parse(value)
    assert exc.value.status == 403
    assert value in exc.value.message


# -- parse_function_ref: malformed ------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "",
        "my function",
        "my.function",
        "fn/x",
        "f:",
        "f:a:b",
        "f:prod!",
        "f:$latest",
        "arn:aws:s3:::bucket",
        f"{ARN}:f:",
        "ünïcode",
    ],
)
def test_malformed_value_is_validation_error(value: str) -> None:
    with pytest.raises(ValidationError) as exc:
        parse(value)
    assert exc.value.message.startswith("1 validation error detected: ")
    assert "at 'functionName' failed to satisfy constraint" in exc.value.message
    assert "regular expression pattern" in exc.value.message
    assert exc.value.status == 400


def test_name_over_64_chars_is_validation_error() -> None:
    with pytest.raises(ValidationError, match="less than or equal to 64"):
        parse("a" * 65)
    with pytest.raises(ValidationError, match="less than or equal to 64"):
        parse(f"{ARN}:{'a' * 65}")


def test_value_over_max_len_is_validation_error_naming_the_length() -> None:
    value = f"{ARN}:{'a' * 64}:{'q' * 60}"
    assert len(value) > 140
    with pytest.raises(ValidationError, match="less than or equal to 140"):
        parse(value)


def test_field_name_and_max_len_are_reported() -> None:
    with pytest.raises(ValidationError, match=r"at 'FunctionName' .* less than or equal to 10"):
        parse("abcdefghijk", field_name="FunctionName", max_len=10)


# -- parse_function_ref: qualifier conflicts --------------------------------------------------


@pytest.mark.parametrize(
    ("value", "qualifier"),
    [("f:prod", "dev"), ("f:1", "2"), (f"{ARN}:f:1", "$LATEST"), (f"{ARN}:f:$LATEST", "1")],
)
def test_qualifier_mismatch_is_invalid_parameter(value: str, qualifier: str) -> None:
    with pytest.raises(InvalidParameterValueError, match="does not match the specified qualifier"):
        parse(value, qualifier=qualifier)
