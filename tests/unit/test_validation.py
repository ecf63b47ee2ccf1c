"""Function configuration rules (`lamina.control.validation`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from lamina import limits
from lamina.control import validation as v
from lamina.errors import InvalidParameterValueError, ValidationError
from lamina.runtimes.catalog import RuntimeCatalog, RuntimeInfo


def problems(check: Any, *args: Any, **kwargs: Any) -> tuple[Any, str | None]:
    """Run one typed check on a fresh `Constraints`; return its result and the error text."""
    c = v.Constraints()
    result = check(c, *args, **kwargs)
    try:
        c.check()
    except ValidationError as e:
        return result, e.message
    return result, None


def checked(check: Any, *args: Any) -> Any:
    """Run one typed check on a fresh `Constraints` and raise what it found, model
    constraints first, then the refusals it deferred (as a request is checked)."""
    c = v.Constraints()
    result = check(c, *args)
    c.check()
    return result


# -- Constraints ----------------------------------------------------------------------------


def test_no_problems_means_check_passes() -> None:
    c = v.Constraints()
    assert v.timeout(c, 30) == 30
    assert v.memory_size(c, 256) == 256
    c.check()


def test_one_problem_is_singular() -> None:
    c = v.Constraints()
    v.timeout(c, 0)
    with pytest.raises(ValidationError) as exc:
        c.check()
    assert exc.value.message == (
        "1 validation error detected: Value '0' at 'timeout' failed to satisfy constraint: "
        "Member must have value greater than or equal to 1"
    )


def test_several_problems_are_reported_together() -> None:
    c = v.Constraints()
    v.timeout(c, 901)
    v.memory_size(c, 64)
    with pytest.raises(ValidationError) as exc:
        c.check()
    err = exc.value
    assert err.message.startswith("2 validation errors detected:")
    assert err.message == (
        "2 validation errors detected: "
        "Value '901' at 'timeout' failed to satisfy constraint: "
        "Member must have value less than or equal to 900; "
        "Value '64' at 'memorySize' failed to satisfy constraint: "
        "Member must have value greater than or equal to 128"
    )
    assert err.error_type == "ValidationException"
    assert err.status == 400


def test_null_value_is_shown_as_null() -> None:
    _, message = problems(v.function_name, None)
    assert message == (
        "1 validation error detected: Value null at 'functionName' failed to satisfy "
        "constraint: Member must not be null"
    )


# -- timeout / memory_size --------------------------------------------------------------------


@pytest.mark.parametrize("value", [1, 3, 900])
def test_timeout_in_range(value: int) -> None:
    assert problems(v.timeout, value) == (value, None)


@pytest.mark.parametrize(
    ("value", "constraint"),
    [
        (0, "Member must have value greater than or equal to 1"),
        (-5, "Member must have value greater than or equal to 1"),
        (901, "Member must have value less than or equal to 900"),
        ("30", "Member must be an integer"),
        (3.5, "Member must be an integer"),
        (True, "Member must be an integer"),
    ],
)
def test_timeout_out_of_range_or_wrong_type(value: object, constraint: str) -> None:
    result, message = problems(v.timeout, value)
    assert result is None
    assert message is not None
    assert message.endswith(f"at 'timeout' failed to satisfy constraint: {constraint}")


@pytest.mark.parametrize("value", [128, 129, 1769, 10_240])
def test_memory_size_in_range(value: int) -> None:
    assert problems(v.memory_size, value) == (value, None)


@pytest.mark.parametrize(
    ("value", "constraint"),
    [
        (127, "Member must have value greater than or equal to 128"),
        (0, "Member must have value greater than or equal to 128"),
        (10_241, "Member must have value less than or equal to 10240"),
        (None, "Member must be an integer"),
    ],
)
def test_memory_size_out_of_range(value: object, constraint: str) -> None:
    result, message = problems(v.memory_size, value)
    assert result is None
    assert message is not None
    assert f"at 'memorySize' failed to satisfy constraint: {constraint}" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [({"Size": 512}, 512), ({"Size": 10_240}, 10_240), ({"Size": 511}, None), (512, None)],
)
def test_ephemeral_storage(value: object, expected: int | None) -> None:
    result, message = problems(v.ephemeral_storage, value)
    assert result == expected
    assert (message is None) is (expected is not None)


# -- strings ----------------------------------------------------------------------------------


def test_function_name_rules() -> None:
    assert problems(v.function_name, "my-fn_1") == ("my-fn_1", None)
    assert problems(v.function_name, "a" * 64) == ("a" * 64, None)
    _, too_long = problems(v.function_name, "a" * 65)
    assert too_long is not None and "Member must have length less than or equal to 64" in too_long
    _, bad = problems(v.function_name, "my.fn")
    assert bad is not None and "Member must satisfy regular expression pattern" in bad
    _, not_str = problems(v.function_name, 5)
    assert not_str is not None and "Member must be a string" in not_str


def test_optional_strings_may_be_absent_but_required_ones_not() -> None:
    assert problems(v.handler, None, required=False) == (None, None)
    _, message = problems(v.handler, None, required=True)
    assert message is not None and "Value null at 'handler'" in message
    _, message = problems(v.handler, "has space.handler", required=True)
    assert message is not None and "at 'handler'" in message


def test_role_pattern() -> None:
    good = "arn:aws:iam::123456789012:role/service-role/my-role"
    assert problems(v.role, good, required=True) == (good, None)
    _, message = problems(v.role, "my-role", required=True)
    assert message is not None and "at 'role'" in message


def test_description_length() -> None:
    assert problems(v.description, "d" * limits.DESCRIPTION_MAX_CHARS)[1] is None
    _, message = problems(v.description, "d" * (limits.DESCRIPTION_MAX_CHARS + 1))
    assert message is not None and "less than or equal to 256" in message


def test_architectures() -> None:
    assert problems(v.architectures, None) == (None, None)
    assert problems(v.architectures, ["arm64"]) == (("arm64",), None)
    assert problems(v.architectures, ["x86_64"]) == (("x86_64",), None)
    assert problems(v.architectures, ["x86_64", "arm64"])[1] is not None
    assert problems(v.architectures, ["mips"])[1] is not None
    assert problems(v.architectures, "arm64")[1] is not None


def test_package_type() -> None:
    for value in (None, "Zip", "Image"):
        assert problems(v.package_type, value) == (None, None)
    with pytest.raises(ValidationError, match=r"enum value set: \[Image, Zip\]"):
        checked(v.package_type, "Jar")


# -- environment --------------------------------------------------------------------------------


def test_environment_accepts_a_normal_map() -> None:
    variables = {"TABLE": "orders", "LOG_LEVEL": "debug", "x1": "", "Aa_b": "value with spaces"}
    result, message = problems(v.environment, {"Variables": variables})
    assert message is None
    assert result == variables
    assert result is not variables  # a copy: later edits to the request do not leak in


def test_environment_absent_or_empty() -> None:
    assert problems(v.environment, None) == (None, None)
    assert problems(v.environment, {}) == ({}, None)
    assert problems(v.environment, {"Variables": {}}) == ({}, None)


@pytest.mark.parametrize("keys", [["AWS_REGION"], ["AWS_LAMBDA_RUNTIME_API", "AWS_REGION"]])
def test_environment_rejects_reserved_keys_naming_them(keys: list[str]) -> None:
    variables = {"FINE": "1", **dict.fromkeys(keys, "x")}
    with pytest.raises(InvalidParameterValueError) as exc:
        checked(v.environment, {"Variables": variables})
    assert "contains reserved keys" in exc.value.message
    assert exc.value.message.endswith("Reserved keys used in this request: " + ", ".join(keys))


@pytest.mark.parametrize(
    "key", ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LAMBDA_TASK_ROOT", "AWS_EXECUTION_ENV"]
)
def test_environment_reserved_keys_cover_credentials_and_runtime(key: str) -> None:
    with pytest.raises(InvalidParameterValueError, match=key):
        checked(v.environment, {"Variables": {key: "x"}})


@pytest.mark.parametrize("key", ["_HANDLER", "_X_AMZN_TRACE_ID"])
def test_environment_reserved_underscore_keys_fail_lambdas_key_pattern(key: str) -> None:
    # Lambda's key pattern ([a-zA-Z]([a-zA-Z0-9_])+, botocore's EnvironmentVariableName) cannot
    # start with "_", so AWS's API layer answers these with a ValidationException before any
    # reserved-key check.
    _, message = problems(v.environment, {"Variables": {key: "x"}})
    assert message is not None
    assert key in message
    assert "Map keys must satisfy constraint" in message


@pytest.mark.parametrize("key", ["1abc", "a", "has-dash", "has space", "", "é1"])
def test_environment_rejects_invalid_keys_as_validation_error(key: str) -> None:
    result, message = problems(v.environment, {"Variables": {"GOOD": "1", key: "x"}})
    assert result is None
    assert message is not None
    assert message.startswith("1 validation error detected:")
    assert "at 'environment.variables'" in message
    assert f"[{key}]" in message
    assert "GOOD" not in message


def test_environment_rejects_non_string_values_and_bad_shapes() -> None:
    assert problems(v.environment, {"Variables": {"A1": 1}})[1] is not None
    assert problems(v.environment, {"Variables": ["A1"]})[1] is not None
    assert problems(v.environment, "A1=1")[1] is not None


def test_environment_over_4kb_is_rejected() -> None:
    variables = {"BIG": "x" * limits.ENVIRONMENT_MAX_BYTES}
    with pytest.raises(InvalidParameterValueError) as exc:
        checked(v.environment, {"Variables": variables})
    assert "exceeded the 4KB limit" in exc.value.message


def test_environment_size_limit_boundary() -> None:
    overhead = len(json.dumps({"BIG": ""}, separators=(",", ":")))
    at_limit = {"BIG": "x" * (limits.ENVIRONMENT_MAX_BYTES - overhead)}
    assert problems(v.environment, {"Variables": at_limit}) == (at_limit, None)
    over = {"BIG": "x" * (limits.ENVIRONMENT_MAX_BYTES - overhead + 1)}
    with pytest.raises(InvalidParameterValueError, match="4KB"):
        checked(v.environment, {"Variables": over})


def test_environment_size_counts_bytes_of_all_variables() -> None:
    # Many small variables that add up to more than 4 KB.
    variables = {f"K{i:03d}": "v" * 40 for i in range(100)}
    with pytest.raises(InvalidParameterValueError, match="4KB"):
        checked(v.environment, {"Variables": variables})


# -- runtime --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["python3.12", "nodejs20.x", "provided.al2023", "python3.7"])
def test_runtime_in_lambdas_enum_passes_the_enum_check(value: str) -> None:
    assert problems(v.runtime, value) == (value, None)


@pytest.mark.parametrize("value", ["python3", "python4.0", "Python3.12", "", 3.12])
def test_runtime_outside_lambdas_enum_is_validation_error(value: object) -> None:
    result, message = problems(v.runtime, value)
    assert result is None
    assert message is not None
    assert "at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [" in (
        message
    )
    assert "python3.12" in message


def test_runtime_required_for_zip() -> None:
    assert problems(v.runtime, None) == (None, None)
    with pytest.raises(InvalidParameterValueError, match="Runtime parameter is required"):
        v.require_runtime({"handler": "app.handler"})
    v.require_runtime({"runtime": "python3.12"})


def test_semantic_refusals_wait_for_the_model_constraints() -> None:
    """A reserved variable and an unknown architecture in one request: Lambda answers the
    model's ValidationException, not the InvalidParameterValueException."""
    c = v.Constraints()
    v.environment(c, {"Variables": {"AWS_REGION": "x"}})
    v.architectures(c, ["mips"])
    with pytest.raises(ValidationError) as exc:
        c.check()
    assert exc.value.message == (
        "1 validation error detected: Value '[mips]' at 'architectures' failed to satisfy "
        "constraint: Member must satisfy constraint: [Member must satisfy enum value set: "
        "[x86_64, arm64]]"
    )
    c = v.Constraints()
    v.environment(c, {"Variables": {"AWS_REGION": "x"}})
    with pytest.raises(InvalidParameterValueError, match="reserved keys"):
        c.check()


def test_tracing_mode() -> None:
    assert problems(v.tracing_mode, None) == (None, None)
    assert problems(v.tracing_mode, {"Mode": "Active"}) == ("Active", None)
    assert problems(v.tracing_mode, {"Mode": "PassThrough"}) == ("PassThrough", None)
    _, message = problems(v.tracing_mode, {"Mode": "On"})
    assert message == (
        "1 validation error detected: Value 'On' at 'tracingConfig.mode' failed to satisfy "
        "constraint: Member must satisfy enum value set: [Active, PassThrough]"
    )


def _catalog(*names: str) -> RuntimeCatalog:
    return RuntimeCatalog(
        [RuntimeInfo(name=n, executable=f"/usr/bin/{n}", runtime_dir=Path("/x")) for n in names]
    )


def test_runtime_available_accepts_a_runtime_in_the_catalog() -> None:
    v.runtime_available("python3.11", _catalog("python3.11"))


@pytest.mark.parametrize("value", ["python3.7", "python2.7", "nodejs16.x", "go1.x"])
def test_runtime_available_rejects_deprecated_runtimes(value: str) -> None:
    # Even one the host could run: Lambda refuses these for new functions.
    with pytest.raises(InvalidParameterValueError) as exc:
        v.runtime_available(value, _catalog(value, "python3.11"))
    assert f"The runtime parameter of {value} is no longer supported" in exc.value.message


def test_runtime_available_names_the_available_runtimes() -> None:
    with pytest.raises(InvalidParameterValueError) as exc:
        v.runtime_available("python3.12", _catalog("python3.11", "python3.9"))
    assert exc.value.message == (
        "The runtime python3.12 is not available on this Lamina host. "
        "Available runtimes: python3.9, python3.11 (see `lamina runtimes`)."
    )


def test_runtime_available_with_empty_catalog() -> None:
    with pytest.raises(InvalidParameterValueError, match=r"python3\.11 is not available.*none"):
        v.runtime_available("python3.11", RuntimeCatalog([]))
