"""The FunctionEventInvokeConfig operations and DeadLetterConfig, through boto3."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from tests.conftest import ROLE, Functions, Server, make_zip

pytestmark = pytest.mark.control_plane

CODE = "def handler(event, context):\n    return event\n"
REGION, ACCOUNT = "us-east-1", "000000000000"
EMPTY_DESTINATIONS: dict[str, dict[str, str]] = {"OnSuccess": {}, "OnFailure": {}}

_MODEL = botocore.session.get_session().get_service_model("lambda")


def arn(name: str, qualifier: str | None = None) -> str:
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    return f"{base}:{qualifier}" if qualifier else base


def assert_shape(data: dict[str, Any]) -> None:
    """Only members of botocore's FunctionEventInvokeConfig, DestinationConfig always there."""
    shape: Any = _MODEL.shape_for("FunctionEventInvokeConfig")
    members = set(shape.members)
    assert not set(data) - members - {"ResponseMetadata"}, data
    assert set(data["DestinationConfig"]) == {"OnSuccess", "OnFailure"}
    assert isinstance(data["LastModified"], datetime.datetime)


def message(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(exc.value.response["Error"]["Message"])


def code_of(exc: pytest.ExceptionInfo[Any]) -> str:
    return str(exc.value.response["Error"]["Code"])


def config_of(lam: Any, name: str, qualifier: str | None = None) -> dict[str, Any]:
    kwargs = {"Qualifier": qualifier} if qualifier else {}
    got: dict[str, Any] = lam.get_function_event_invoke_config(FunctionName=name, **kwargs)
    return got


def settings(config: dict[str, Any]) -> dict[str, Any]:
    """What a configuration says, without its time and response metadata."""
    return {k: v for k, v in config.items() if k not in ("LastModified", "ResponseMetadata")}


# -- put, get, update, delete --------------------------------------------------------


def test_put_replaces_update_merges_delete_removes(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE)["FunctionName"]
    other = functions.create(CODE)["FunctionName"]
    before = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)

    put = lam.put_function_event_invoke_config(
        FunctionName=name, MaximumRetryAttempts=1, MaximumEventAgeInSeconds=120
    )
    assert put["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert_shape(put)
    assert put["LastModified"] >= before
    assert settings(put) == {
        "FunctionArn": arn(name, "$LATEST"),
        "MaximumRetryAttempts": 1,
        "MaximumEventAgeInSeconds": 120,
        "DestinationConfig": EMPTY_DESTINATIONS,
    }
    got = config_of(lam, name)
    assert_shape(got)
    assert settings(got) == settings(put)
    assert got["LastModified"] == put["LastModified"]

    # Put replaces the whole configuration: what it leaves out is unset.
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)
    assert settings(config_of(lam, name)) == {
        "FunctionArn": arn(name, "$LATEST"),
        "MaximumRetryAttempts": 0,
        "DestinationConfig": EMPTY_DESTINATIONS,
    }

    # Update changes only what it is given, destination by destination.
    updated = lam.update_function_event_invoke_config(
        FunctionName=name, MaximumEventAgeInSeconds=3600
    )
    assert updated["MaximumRetryAttempts"] == 0
    assert updated["MaximumEventAgeInSeconds"] == 3600
    lam.update_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {"Destination": arn(other)}}
    )
    lam.update_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": arn(other, "$LATEST")}}
    )
    assert settings(config_of(lam, name)) == {
        "FunctionArn": arn(name, "$LATEST"),
        "MaximumRetryAttempts": 0,
        "MaximumEventAgeInSeconds": 3600,
        "DestinationConfig": {
            "OnSuccess": {"Destination": arn(other, "$LATEST")},
            "OnFailure": {"Destination": arn(other)},
        },
    }
    # A destination member given without a Destination removes that destination only.
    lam.update_function_event_invoke_config(FunctionName=name, DestinationConfig={"OnSuccess": {}})
    assert config_of(lam, name)["DestinationConfig"] == {
        "OnSuccess": {},
        "OnFailure": {"Destination": arn(other)},
    }

    deleted = lam.delete_function_event_invoke_config(FunctionName=name)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 204
    missing = f"The function {arn(name, '$LATEST')} doesn't have an EventInvokeConfig"
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as got_missing:
        config_of(lam, name)
    assert message(got_missing) == missing
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as deleted_twice:
        lam.delete_function_event_invoke_config(FunctionName=name)
    assert message(deleted_twice) == missing
    # Update needs a configuration to update (Lambda answers the same).
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as update_missing:
        lam.update_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    assert message(update_missing) == missing


def test_qualifiers_have_their_own_configurations(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")

    assert lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=0)[
        "FunctionArn"
    ] == arn(name, "$LATEST")
    # Unqualified and $LATEST are one configuration.
    assert config_of(lam, name, "$LATEST")["MaximumRetryAttempts"] == 0
    assert config_of(lam, f"{name}:$LATEST")["MaximumRetryAttempts"] == 0
    version = lam.put_function_event_invoke_config(
        FunctionName=name, Qualifier="1", MaximumRetryAttempts=1
    )
    assert version["FunctionArn"] == arn(name, "1")
    alias = lam.put_function_event_invoke_config(
        FunctionName=arn(name, "live"), MaximumRetryAttempts=2
    )
    assert alias["FunctionArn"] == arn(name, "live")
    # An alias does not fall back to its version or to $LATEST, nor they to it.
    assert config_of(lam, name, "live")["MaximumRetryAttempts"] == 2
    assert config_of(lam, f"{name}:1")["MaximumRetryAttempts"] == 1
    assert config_of(lam, arn(name))["MaximumRetryAttempts"] == 0
    assert config_of(lam, f"{ACCOUNT}:function:{name}:live")["MaximumRetryAttempts"] == 2

    for qualifier in ("9", "nope"):
        with pytest.raises(lam.exceptions.ResourceNotFoundException) as unknown:
            lam.put_function_event_invoke_config(
                FunctionName=name, Qualifier=qualifier, MaximumRetryAttempts=1
            )
        assert message(unknown) == f"Function not found: {arn(name, qualifier)}"
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            config_of(lam, name, qualifier)
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            lam.delete_function_event_invoke_config(FunctionName=name, Qualifier=qualifier)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.put_function_event_invoke_config(
            FunctionName=f"{name}:live", Qualifier="1", MaximumRetryAttempts=1
        )
    with pytest.raises(lam.exceptions.ResourceNotFoundException) as no_function:
        lam.put_function_event_invoke_config(FunctionName="t-nobody-here", MaximumRetryAttempts=1)
    assert message(no_function) == f"Function not found: {arn('t-nobody-here')}"
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.list_function_event_invoke_configs(FunctionName="t-nobody-here")


def test_list_in_pages(functions: Functions, lam: Any, lam_unchecked: Any) -> None:
    name = functions.create(CODE)["FunctionName"]
    assert (
        lam.list_function_event_invoke_configs(FunctionName=name)["FunctionEventInvokeConfigs"]
        == []
    )
    for i in range(2):
        lam.update_function_configuration(FunctionName=name, Timeout=10 + i)
        lam.get_waiter("function_updated_v2").wait(FunctionName=name)
        lam.publish_version(FunctionName=name)
    for alias in ("b", "a"):
        lam.create_alias(FunctionName=name, Name=alias, FunctionVersion="1")
    for qualifier in ("b", "2", "$LATEST", "a", "1"):
        lam.put_function_event_invoke_config(
            FunctionName=name, Qualifier=qualifier, MaximumEventAgeInSeconds=60
        )
    expected = [arn(name, q) for q in ("$LATEST", "1", "2", "a", "b")]

    listed = lam.list_function_event_invoke_configs(FunctionName=name)
    assert [c["FunctionArn"] for c in listed["FunctionEventInvokeConfigs"]] == expected
    assert "NextMarker" not in listed
    for config in listed["FunctionEventInvokeConfigs"]:
        assert_shape(config)

    pages = list(
        lam.get_paginator("list_function_event_invoke_configs").paginate(
            FunctionName=name, PaginationConfig={"PageSize": 2}
        )
    )
    assert [len(p["FunctionEventInvokeConfigs"]) for p in pages] == [2, 2, 1]
    assert [c["FunctionArn"] for p in pages for c in p["FunctionEventInvokeConfigs"]] == expected

    for bad in (0, 51):
        with pytest.raises(lam.exceptions.ClientError) as too_many:
            lam_unchecked.list_function_event_invoke_configs(FunctionName=name, MaxItems=bad)
        assert code_of(too_many) == "ValidationException"
        assert f"Value '{bad}' at 'maxItems'" in message(too_many)
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        lam.list_function_event_invoke_configs(FunctionName=f"{name}:1")


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings_", "expected"),
    [
        (
            {"MaximumRetryAttempts": 3},
            "1 validation error detected: Value '3' at 'maximumRetryAttempts' failed to satisfy "
            "constraint: Member must have value less than or equal to 2",
        ),
        (
            {"MaximumRetryAttempts": -1},
            "1 validation error detected: Value '-1' at 'maximumRetryAttempts' failed to satisfy "
            "constraint: Member must have value greater than or equal to 0",
        ),
        (
            {"MaximumEventAgeInSeconds": 59},
            "1 validation error detected: Value '59' at 'maximumEventAgeInSeconds' failed to "
            "satisfy constraint: Member must have value greater than or equal to 60",
        ),
        (
            {"MaximumEventAgeInSeconds": 21601},
            "1 validation error detected: Value '21601' at 'maximumEventAgeInSeconds' failed to "
            "satisfy constraint: Member must have value less than or equal to 21600",
        ),
        (
            {"MaximumRetryAttempts": "two"},
            "1 validation error detected: Value 'two' at 'maximumRetryAttempts' failed to "
            "satisfy constraint: Member must be an integer",
        ),
        (
            {"MaximumRetryAttempts": 1.5, "MaximumEventAgeInSeconds": 0},
            "2 validation errors detected: Value '1.5' at 'maximumRetryAttempts' failed to "
            "satisfy constraint: Member must be an integer; Value '0' at "
            "'maximumEventAgeInSeconds' failed to satisfy constraint: Member must have value "
            "greater than or equal to 60",
        ),
        (
            {"DestinationConfig": {"OnFailure": {"Destination": "not-an-arn"}}},
            "1 validation error detected: Value 'not-an-arn' at "
            "'destinationConfig.onFailure.destination' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: ",
        ),
    ],
)
def test_values_out_of_range_are_refused(
    functions: Functions,
    lam: Any,
    lam_unchecked: Any,
    settings_: dict[str, Any],
    expected: str,
) -> None:
    name = functions.create(CODE)["FunctionName"]
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    for call in (
        lam_unchecked.put_function_event_invoke_config,
        lam_unchecked.update_function_event_invoke_config,
    ):
        with pytest.raises(lam.exceptions.ClientError) as refused:
            call(FunctionName=name, **settings_)
        assert code_of(refused) == "ValidationException"
        assert message(refused).startswith(expected)
    # Nothing was written.
    assert settings(config_of(lam, name)) == {
        "FunctionArn": arn(name, "$LATEST"),
        "MaximumRetryAttempts": 1,
        "DestinationConfig": EMPTY_DESTINATIONS,
    }


def test_at_least_one_setting(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE)["FunctionName"]
    for call in (lam.put_function_event_invoke_config, lam.update_function_event_invoke_config):
        empties: list[dict[str, Any]] = [{}, {"DestinationConfig": {}}]
        for empty in empties:
            with pytest.raises(lam.exceptions.InvalidParameterValueException) as refused:
                call(FunctionName=name, **empty)
            assert message(refused) == (
                "You must specify at least one of error handling or destination setting."
            )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        config_of(lam, name)
    # A destination member, even without a destination, is a setting.
    put = lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {}}
    )
    assert settings(put) == {
        "FunctionArn": arn(name, "$LATEST"),
        "DestinationConfig": EMPTY_DESTINATIONS,
    }


# -- destinations --------------------------------------------------------------------


def test_destinations_must_be_functions_lamina_has(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE, Publish=True)["FunctionName"]
    other = functions.create(CODE, Publish=True)["FunctionName"]
    lam.create_alias(FunctionName=other, Name="live", FunctionVersion="1")
    for target in (arn(other), arn(other, "1"), arn(other, "live"), arn(other, "$LATEST")):
        got = lam.put_function_event_invoke_config(
            FunctionName=name,
            DestinationConfig={
                "OnSuccess": {"Destination": target},
                "OnFailure": {"Destination": target},
            },
        )
        assert got["DestinationConfig"]["OnSuccess"] == {"Destination": target}
        assert got["DestinationConfig"]["OnFailure"] == {"Destination": target}
    kept = settings(config_of(lam, name))

    def refused(destination: str, member: str = "OnFailure") -> str:
        with pytest.raises(lam.exceptions.InvalidParameterValueException) as exc:
            lam.put_function_event_invoke_config(
                FunctionName=name,
                MaximumRetryAttempts=0,
                DestinationConfig={member: {"Destination": destination}},
            )
        return message(exc)

    # Lambda refuses a function as its own destination (a success record would run it forever).
    for own in (arn(name), arn(name, "1")):
        assert refused(own, "OnSuccess") == (
            "You can't specify the function as a destination for itself."
        )
    missing = arn("t-nobody-here")
    assert refused(missing) == (
        f"The destination ARN {missing} is invalid: function t-nobody-here does not exist."
    )
    assert "has no version or alias 9" in refused(arn(other, "9"))
    elsewhere = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{other}"
    assert "region eu-west-1" in refused(elsewhere)
    foreign = f"arn:aws:lambda:{REGION}:123456789012:function:{other}"
    assert "account 123456789012" in refused(foreign)
    for service, target in (
        ("Amazon SQS queues", f"arn:aws:sqs:{REGION}:{ACCOUNT}:failures"),
        ("Amazon SNS topics", f"arn:aws:sns:{REGION}:{ACCOUNT}:failures"),
        ("Amazon EventBridge event buses", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/x"),
        ("Amazon S3 buckets", "arn:aws:s3:::failures"),
    ):
        text = refused(target)
        assert text.startswith(f"Lamina does not support {service} as destinations yet")
        assert "Use a Lambda function ARN" in text
    iam = f"arn:aws:iam::{ACCOUNT}:role/x"
    assert refused(iam) == f"The destination ARN {iam} is invalid."
    # The configuration from before the refusals is untouched.
    assert settings(config_of(lam, name)) == kept


# -- lifecycle -----------------------------------------------------------------------


def test_configurations_go_with_what_they_configure(functions: Functions, lam: Any) -> None:
    name = functions.create(CODE, Publish=True)["FunctionName"]
    lam.update_function_configuration(FunctionName=name, Timeout=10)
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    lam.publish_version(FunctionName=name)
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    for qualifier in ("$LATEST", "1", "2", "live"):
        lam.put_function_event_invoke_config(
            FunctionName=name, Qualifier=qualifier, MaximumRetryAttempts=1
        )

    def listed() -> list[str]:
        page = lam.list_function_event_invoke_configs(FunctionName=name)
        return [c["FunctionArn"] for c in page["FunctionEventInvokeConfigs"]]

    lam.delete_alias(FunctionName=name, Name="live")
    assert listed() == [arn(name, q) for q in ("$LATEST", "1", "2")]
    # A new alias of the same name starts without one.
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion="2")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        config_of(lam, name, "live")
    lam.delete_function(FunctionName=name, Qualifier="1")
    assert listed() == [arn(name, q) for q in ("$LATEST", "2")]
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        config_of(lam, name, "1")

    lam.delete_function(FunctionName=name)
    functions.create(CODE, FunctionName=name)
    assert listed() == []


def test_configurations_and_dead_letter_queues_survive_a_restart(tmp_path: Path) -> None:
    server = Server(data_dir=tmp_path / "data").start()
    try:
        lam = server.client()
        for name in ("kept", "target"):
            lam.create_function(
                FunctionName=name,
                Runtime="python3.11",
                Role=ROLE,
                Handler="app.handler",
                Code={"ZipFile": make_zip({"app.py": CODE})},
                Publish=True,
            )
            lam.get_waiter("function_active_v2").wait(FunctionName=name)
        lam.update_function_configuration(
            FunctionName="kept", DeadLetterConfig={"TargetArn": arn("target")}
        )
        lam.create_alias(FunctionName="kept", Name="live", FunctionVersion="1")
        lam.put_function_event_invoke_config(
            FunctionName="kept",
            Qualifier="live",
            MaximumEventAgeInSeconds=600,
            DestinationConfig={"OnSuccess": {"Destination": arn("target")}},
        )
        before = config_of(lam, "kept", "live")
    finally:
        assert server.stop() == 0
    server = Server(data_dir=tmp_path / "data").start()
    try:
        lam = server.client()
        after = config_of(lam, "kept", "live")
        assert settings(after) == settings(before)
        assert after["LastModified"] == before["LastModified"]
        with pytest.raises(lam.exceptions.ResourceNotFoundException):
            config_of(lam, "kept")
        configuration = lam.get_function_configuration(FunctionName="kept")
        assert configuration["DeadLetterConfig"] == {"TargetArn": arn("target")}
    finally:
        assert server.stop() == 0


# -- DeadLetterConfig ----------------------------------------------------------------


def test_dead_letter_config_is_per_version(functions: Functions, lam: Any) -> None:
    target = functions.create(CODE)["FunctionName"]
    queue = {"TargetArn": arn(target)}
    created = functions.create(CODE, DeadLetterConfig=queue)
    name = created["FunctionName"]
    assert created["DeadLetterConfig"] == queue
    assert lam.get_function(FunctionName=name)["Configuration"]["DeadLetterConfig"] == queue
    assert lam.get_function_configuration(FunctionName=name)["DeadLetterConfig"] == queue
    listed = [
        f
        for page in lam.get_paginator("list_functions").paginate()
        for f in page["Functions"]
        if f["FunctionName"] == name
    ]
    assert listed[0]["DeadLetterConfig"] == queue
    assert lam.publish_version(FunctionName=name)["DeadLetterConfig"] == queue

    revision = lam.get_function_configuration(FunctionName=name)["RevisionId"]
    removed = lam.update_function_configuration(
        FunctionName=name, DeadLetterConfig={"TargetArn": ""}
    )
    assert "DeadLetterConfig" not in removed
    assert removed["RevisionId"] != revision
    lam.get_waiter("function_updated_v2").wait(FunctionName=name)
    assert "DeadLetterConfig" not in lam.get_function_configuration(FunctionName=name)
    # The version keeps what it was published with; the change makes the next one differ.
    assert (
        lam.get_function_configuration(FunctionName=name, Qualifier="1")["DeadLetterConfig"]
        == queue
    )
    assert lam.publish_version(FunctionName=name)["Version"] == "2"
    versions = lam.list_versions_by_function(FunctionName=name)["Versions"]
    assert [v.get("DeadLetterConfig") for v in versions] == [None, queue, None]

    qualified = {"TargetArn": arn(target, "$LATEST")}
    assert (
        lam.update_function_configuration(FunctionName=name, DeadLetterConfig=qualified)[
            "DeadLetterConfig"
        ]
        == qualified
    )


def test_dead_letter_targets_lamina_cannot_use_are_refused(
    functions: Functions, lam: Any, lam_unchecked: Any
) -> None:
    target = functions.create(CODE)["FunctionName"]
    name = functions.create(CODE, DeadLetterConfig={"TargetArn": arn(target)})["FunctionName"]
    before = lam.get_function_configuration(FunctionName=name)

    def refused(target_arn: str, client: Any = lam) -> Any:
        with pytest.raises(lam.exceptions.ClientError) as exc:
            client.update_function_configuration(
                FunctionName=name, Description="changed", DeadLetterConfig={"TargetArn": target_arn}
            )
        return exc

    for kind, target_arn in (
        ("Amazon SQS queues", f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"),
        ("Amazon SNS topics", f"arn:aws:sns:{REGION}:{ACCOUNT}:dlq"),
    ):
        exc = refused(target_arn)
        assert code_of(exc) == "InvalidParameterValueException"
        assert message(exc).startswith(f"Lamina does not support {kind} in DeadLetterConfig yet")
        assert "Use a Lambda function ARN" in message(exc)
    for target_arn, expected in (
        (
            arn(name),
            "Invalid dead letter queue ARN: a function cannot be its own dead-letter queue.",
        ),
        (
            arn("t-nobody-here"),
            "Invalid dead letter queue ARN: function t-nobody-here does not exist.",
        ),
        (
            f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:{target}",
            "Invalid dead letter queue ARN: The resource specified by the TargetArn must be in "
            "the same region as the Lambda function it's associated with.",
        ),
    ):
        exc = refused(target_arn)
        assert code_of(exc) == "InvalidParameterValueException"
        assert message(exc) == expected
    exc = refused(f"arn:aws:s3:::{target}")
    assert code_of(exc) == "InvalidParameterValueException"
    assert message(exc).startswith("Invalid dead letter queue ARN")
    exc = refused("not-an-arn", lam_unchecked)
    assert code_of(exc) == "ValidationException"
    assert message(exc).startswith(
        "1 validation error detected: Value 'not-an-arn' at 'deadLetterConfig.targetArn'"
    )
    # Nothing of a refused update was written.
    after = lam.get_function_configuration(FunctionName=name)
    for key in ("RevisionId", "Description", "DeadLetterConfig", "LastModified"):
        assert after[key] == before[key]

    # A refused create leaves no function behind.
    with pytest.raises(lam.exceptions.InvalidParameterValueException):
        functions.create(
            CODE,
            FunctionName="t-dlq-refused",
            DeadLetterConfig={"TargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"},
        )
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.get_function(FunctionName="t-dlq-refused")
