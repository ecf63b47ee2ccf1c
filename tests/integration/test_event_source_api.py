"""Event-source mappings through boto3 against a real server: the five operations and their
answers' shapes, Lambda's errors for bad input, qualified functions and what their deletion
takes along, restarts, the role check, authorization, tags, and brokers and secrets through
the `lamina` command.

No mapping runner is needed here: without one, a new mapping stays `Creating` (the runner
settles states), so nothing below waits for one to settle.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.session
import pytest
from botocore.exceptions import ClientError
from tests.conftest import (
    SIGNED_HTTP,
    Functions,
    Server,
    allow_event_sources,
    free_port,
    lamina,
    wait_for,
)
from tests.integration.test_authorization import client, new_key

pytestmark = pytest.mark.control_plane

REGION = "us-east-1"
ACCOUNT = "000000000000"
ECHO = "def handler(event, context):\n    return event\n"
MODEL = botocore.session.get_session().get_service_model("lambda")
SHAPE = MODEL.shape_for("EventSourceMappingConfiguration")


def sqs_arn(name: str | None = None) -> str:
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name or 'q-' + uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory, runtime_images: Any) -> Iterator[Server]:
    """A server of this module's own: an SQS endpoint configured (never contacted: the
    control plane does not reach it) and the tests' role able to read every source."""
    base = tmp_path_factory.mktemp("esm")
    server = Server(
        data_dir=base / "data", extra_args=("--sqs-endpoint", "http://127.0.0.1:9")
    ).start()
    allow_event_sources(server)
    yield server
    assert server.stop() == 0, server.log()


@pytest.fixture(scope="module")
def esm(srv: Server) -> Any:
    return srv.client()


@pytest.fixture(scope="module")
def unchecked(srv: Server) -> Any:
    """A client that sends what it is given: the server must refuse bad values itself."""
    return srv.client(parameter_validation=False)


@pytest.fixture
def fns(esm: Any) -> Iterator[Functions]:
    f = Functions(esm)
    yield f
    f.cleanup()


@pytest.fixture(scope="module")
def rabbit(srv: Server) -> Iterator[str]:
    """A RabbitMQ broker registered through the CLI; its ARN."""
    name = f"rmq-{uuid.uuid4().hex[:8]}"
    out = lamina(
        "brokers", "add", name, "amqp://guest:guest@127.0.0.1:5672/", endpoint=srv.endpoint
    )
    assert out.returncode == 0, out.stderr
    arn = out.stdout.split()[-1]
    assert arn.startswith(f"arn:aws:mq:{REGION}:{ACCOUNT}:broker:{name}:b-")
    yield arn


@pytest.fixture(scope="module")
def nats(srv: Server) -> str:
    name = f"js-{uuid.uuid4().hex[:8]}"
    out = lamina("brokers", "add", name, "nats://127.0.0.1:4222", endpoint=srv.endpoint)
    assert out.returncode == 0, out.stderr
    return f"arn:aws:nats:{REGION}:{ACCOUNT}:broker:{name}"


def code(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Code"])


def message(e: pytest.ExceptionInfo[ClientError]) -> str:
    return str(e.value.response["Error"]["Message"])


def clean(resp: dict[str, Any]) -> dict[str, Any]:
    resp = dict(resp)
    resp.pop("ResponseMetadata", None)
    return resp


def raw(srv: Server, uuid_: str) -> dict[str, Any]:
    """GetEventSourceMapping's JSON as sent (not as boto3 parsed it)."""
    resp = SIGNED_HTTP.get(f"{srv.endpoint}/2015-03-31/event-source-mappings/{uuid_}")
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def assert_model_shape(body: dict[str, Any]) -> None:
    """Every member is one of EventSourceMappingConfiguration's, with the model's type and
    constraints (botocore's own validator, run on the answer)."""
    from botocore.validate import ParamValidator

    assert set(body) <= set(SHAPE.members), set(body) - set(SHAPE.members)
    report = ParamValidator().validate(body, SHAPE)
    assert not report.has_errors(), report.generate_report()


# -- the five operations -------------------------------------------------------------


def test_create_get_list_update_delete_an_sqs_mapping(
    esm: Any, fns: Functions, srv: Server
) -> None:
    name = fns.create(ECHO)["FunctionName"]
    source = sqs_arn()
    made = esm.create_event_source_mapping(FunctionName=name, EventSourceArn=source)
    assert made["ResponseMetadata"]["HTTPStatusCode"] == 202
    uid = made["UUID"]
    assert made["State"] == "Creating"
    assert made["StateTransitionReason"] == "USER_INITIATED"
    assert made["LastProcessingResult"] == "No records processed"
    assert made["BatchSize"] == 10 and made["MaximumBatchingWindowInSeconds"] == 0
    assert made["FunctionResponseTypes"] == []
    assert made["FunctionArn"] == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    assert made["EventSourceMappingArn"] == (
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:event-source-mapping:{uid}"
    )
    body = raw(srv, uid)
    assert_model_shape(body)
    assert "Queues" not in body and "StartingPosition" not in body
    assert clean(esm.get_event_source_mapping(UUID=uid)) == clean(made)

    by_function = esm.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
    assert [m["UUID"] for m in by_function] == [uid]
    by_source = esm.list_event_source_mappings(EventSourceArn=source)["EventSourceMappings"]
    assert [m["UUID"] for m in by_source] == [uid]
    assert esm.list_event_source_mappings(EventSourceArn=sqs_arn())["EventSourceMappings"] == []

    updated = esm.update_event_source_mapping(
        UUID=uid,
        BatchSize=50,
        MaximumBatchingWindowInSeconds=2,
        FunctionResponseTypes=["ReportBatchItemFailures"],
        ScalingConfig={"MaximumConcurrency": 5},
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"body": {"kind": ["order"]}})}]},
    )
    assert updated["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert updated["BatchSize"] == 50 and updated["MaximumBatchingWindowInSeconds"] == 2
    assert updated["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert updated["ScalingConfig"] == {"MaximumConcurrency": 5}
    assert updated["FilterCriteria"]["Filters"][0]["Pattern"] == '{"body": {"kind": ["order"]}}'
    assert_model_shape(raw(srv, uid))
    assert updated["LastModified"] >= made["LastModified"]
    disabled = esm.update_event_source_mapping(UUID=uid, Enabled=False)
    assert disabled["State"] == "Disabling"

    deleted = esm.delete_event_source_mapping(UUID=uid)
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert deleted["State"] == "Deleting"

    def gone() -> bool:
        try:
            esm.get_event_source_mapping(UUID=uid)
        except esm.exceptions.ResourceNotFoundException:
            return True
        return False

    wait_for(gone, message="the deleted mapping to go")


def test_a_rabbitmq_mapping_has_amazon_mqs_members(
    esm: Any, fns: Functions, srv: Server, rabbit: str
) -> None:
    name = fns.create(ECHO)["FunctionName"]
    made = esm.create_event_source_mapping(
        FunctionName=name,
        EventSourceArn=rabbit,
        Queues=["orders"],
        SourceAccessConfigurations=[{"Type": "VIRTUAL_HOST", "URI": "/"}],
        Enabled=False,
    )
    assert made["State"] == "Disabled"
    assert made["BatchSize"] == 100
    # Amazon MQ's 500 ms default is not a whole number of seconds: left out until set.
    assert "MaximumBatchingWindowInSeconds" not in made
    assert made["Queues"] == ["orders"]
    assert made["SourceAccessConfigurations"] == [{"Type": "VIRTUAL_HOST", "URI": "/"}]
    assert_model_shape(raw(srv, made["UUID"]))
    # Another queue of the same broker is another mapping; the same queue is a duplicate.
    esm.create_event_source_mapping(FunctionName=name, EventSourceArn=rabbit, Queues=["other"])
    with pytest.raises(ClientError) as e:
        esm.create_event_source_mapping(FunctionName=name, EventSourceArn=rabbit, Queues=["orders"])
    assert code(e) == "ResourceConflictException"
    assert made["UUID"] in message(e)
    # Amazon MQ takes no partial batch responses: asking for them is refused, not ignored.
    with pytest.raises(ClientError) as e:
        esm.create_event_source_mapping(
            FunctionName=name,
            EventSourceArn=rabbit,
            Queues=["third"],
            FunctionResponseTypes=["ReportBatchItemFailures"],
        )
    assert code(e) == "InvalidParameterValueException"
    assert "FunctionResponseTypes" in message(e)
    with pytest.raises(ClientError) as e:
        esm.update_event_source_mapping(
            UUID=made["UUID"], FunctionResponseTypes=["ReportBatchItemFailures"]
        )
    assert code(e) == "InvalidParameterValueException"


def test_a_stream_mapping_has_kinesis_members(
    esm: Any, fns: Functions, srv: Server, nats: str
) -> None:
    name = fns.create(ECHO)["FunctionName"]
    dlq = sqs_arn()
    made = esm.create_event_source_mapping(
        FunctionName=name,
        EventSourceArn=f"{nats}:stream/events",
        StartingPosition="TRIM_HORIZON",
        ParallelizationFactor=4,
        MaximumRetryAttempts=3,
        MaximumRecordAgeInSeconds=3600,
        BisectBatchOnFunctionError=True,
        TumblingWindowInSeconds=30,
        DestinationConfig={"OnFailure": {"Destination": dlq}},
    )
    assert made["StateTransitionReason"] == "User action"
    assert made["StartingPosition"] == "TRIM_HORIZON"
    assert made["BatchSize"] == 100 and made["MaximumBatchingWindowInSeconds"] == 0
    assert (made["ParallelizationFactor"], made["MaximumRetryAttempts"]) == (4, 3)
    assert made["MaximumRecordAgeInSeconds"] == 3600
    assert made["BisectBatchOnFunctionError"] is True
    assert made["TumblingWindowInSeconds"] == 30
    assert made["DestinationConfig"] == {"OnFailure": {"Destination": dlq}}
    assert_model_shape(raw(srv, made["UUID"]))
    at = esm.create_event_source_mapping(
        FunctionName=name,
        EventSourceArn=f"{nats}:stream/other",
        StartingPosition="AT_TIMESTAMP",
        StartingPositionTimestamp=1_700_000_000,
    )
    assert at["StartingPositionTimestamp"].timestamp() == 1_700_000_000
    assert at["DestinationConfig"] == {"OnFailure": {}}


def test_listing_pages_with_marker_and_max_items(esm: Any, fns: Functions) -> None:
    name = fns.create(ECHO)["FunctionName"]
    made = {
        esm.create_event_source_mapping(FunctionName=name, EventSourceArn=sqs_arn())["UUID"]
        for _ in range(5)
    }
    seen: list[str] = []
    kwargs: dict[str, Any] = {"FunctionName": name, "MaxItems": 2}
    pages = 0
    while True:
        page = esm.list_event_source_mappings(**kwargs)
        pages += 1
        assert len(page["EventSourceMappings"]) <= 2
        seen += [m["UUID"] for m in page["EventSourceMappings"]]
        if "NextMarker" not in page:
            break
        kwargs["Marker"] = page["NextMarker"]
    assert pages == 3 and sorted(seen) == sorted(made)
    # boto3's paginator walks the same pages.
    paginator = esm.get_paginator("list_event_source_mappings")
    found = [
        m["UUID"]
        for page in paginator.paginate(FunctionName=name, PaginationConfig={"PageSize": 2})
        for m in page["EventSourceMappings"]
    ]
    assert sorted(found) == sorted(made)


# -- bad input -----------------------------------------------------------------------


BAD_SQS: list[tuple[dict[str, Any], str, str]] = [
    ({"BatchSize": 0}, "ValidationException", "batchSize"),
    ({"BatchSize": 10_001}, "ValidationException", "batchSize"),
    ({"BatchSize": 11}, "InvalidParameterValueException", "Maximum batch window"),
    ({"MaximumBatchingWindowInSeconds": 301}, "ValidationException", "maximumBatchingWindow"),
    ({"StartingPosition": "LATEST"}, "InvalidParameterValueException", "StartingPosition"),
    ({"StartingPosition": "SOMEWHERE"}, "ValidationException", "startingPosition"),
    ({"MaximumRetryAttempts": 2}, "InvalidParameterValueException", "MaximumRetryAttempts"),
    (
        {"DestinationConfig": {"OnFailure": {"Destination": sqs_arn()}}},
        "InvalidParameterValueException",
        "DestinationConfig",
    ),
    ({"ScalingConfig": {"MaximumConcurrency": 1}}, "ValidationException", "maximumConcurrency"),
    ({"FunctionResponseTypes": ["Everything"]}, "ValidationException", "functionResponseTypes"),
    (
        {"FilterCriteria": {"Filters": [{"Pattern": "not json"}]}},
        "InvalidParameterValueException",
        "Invalid filter pattern definition.",
    ),
    (
        {"FilterCriteria": {"Filters": [{"Pattern": '{"body": 5}'}]}},
        "InvalidParameterValueException",
        "Invalid filter pattern definition.",
    ),
    (
        {"FilterCriteria": {"Filters": [{"Pattern": '{"a": [1]}'}] * 6}},
        "InvalidParameterValueException",
        "number of filters",
    ),
    ({"Queues": ["q"]}, "InvalidParameterValueException", "Unsupported Queues"),
    (
        {"KMSKeyArn": "arn:aws:kms:us-east-1:000000000000:key/k"},
        "InvalidParameterValueException",
        "KMSKeyArn",
    ),
]


@pytest.fixture(scope="module")
def shared_function(esm: Any) -> Iterator[str]:
    f = Functions(esm)
    name: str = f.create(ECHO)["FunctionName"]
    yield name
    f.cleanup()


@pytest.mark.parametrize(("extra", "error", "text"), BAD_SQS)
def test_bad_sqs_settings_get_lambdas_errors(
    unchecked: Any, shared_function: str, extra: dict[str, Any], error: str, text: str
) -> None:
    with pytest.raises(ClientError) as e:
        unchecked.create_event_source_mapping(
            FunctionName=shared_function, EventSourceArn=sqs_arn(), **extra
        )
    assert code(e) == error, message(e)
    assert text in message(e)
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] < 500


def test_bad_sources_functions_and_uuids(
    unchecked: Any, fns: Functions, rabbit: str, nats: str
) -> None:
    name = fns.create(ECHO)["FunctionName"]
    fifo = sqs_arn("q.fifo")
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"EventSourceArn": "nope"}, "ValidationException", "eventSourceArn"),
        (
            {"EventSourceArn": f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/s"},
            "InvalidParameterValueException",
            "Unrecognized event source",
        ),
        (
            {"EventSourceArn": f"arn:aws:mq:{REGION}:{ACCOUNT}:broker:nobody:b-1", "Queues": ["q"]},
            "InvalidParameterValueException",
            "not registered",
        ),
        ({"EventSourceArn": rabbit}, "InvalidParameterValueException", "Queues"),
        ({"EventSourceArn": rabbit, "Queues": ["a", "b"]}, "ValidationException", "queues"),
        (
            {
                "EventSourceArn": rabbit,
                "Queues": ["q"],
                "SourceAccessConfigurations": [
                    {
                        "Type": "BASIC_AUTH",
                        "URI": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:x-abcdef",
                    }
                ],
            },
            "InvalidParameterValueException",
            "BASIC_AUTH",
        ),
        (
            {"EventSourceArn": f"{nats}:stream/s"},
            "InvalidParameterValueException",
            "startingPosition",
        ),
        (
            {
                "EventSourceArn": f"{nats}:stream/s",
                "StartingPosition": "LATEST",
                "MaximumRecordAgeInSeconds": 10,
            },
            "InvalidParameterValueException",
            "MaximumRecordAgeInSeconds",
        ),
        (
            {
                "EventSourceArn": f"{nats}:stream/s",
                "StartingPosition": "LATEST",
                "ScalingConfig": {"MaximumConcurrency": 3},
            },
            "InvalidParameterValueException",
            "ScalingConfig",
        ),
        (
            {"EventSourceArn": fifo, "BatchSize": 11, "MaximumBatchingWindowInSeconds": 1},
            "InvalidParameterValueException",
            "FIFO",
        ),
        ({}, "InvalidParameterValueException", "Unrecognized event source"),
    ]
    for extra, error, text in cases:
        with pytest.raises(ClientError) as e:
            unchecked.create_event_source_mapping(FunctionName=name, **extra)
        assert (code(e), text in message(e)) == (error, True), (extra, message(e))
    for function, error in (
        ("no-such-function", "ResourceNotFoundException"),
        (f"{name}:7", "ResourceNotFoundException"),
        (f"{name}:nolias", "ResourceNotFoundException"),
        ("bad name!", "ValidationException"),
    ):
        with pytest.raises(ClientError) as e:
            unchecked.create_event_source_mapping(FunctionName=function, EventSourceArn=sqs_arn())
        assert code(e) == error, (function, message(e))
    missing = str(uuid.uuid4())
    for call in (
        lambda: unchecked.get_event_source_mapping(UUID=missing),
        lambda: unchecked.update_event_source_mapping(UUID=missing, BatchSize=5),
        lambda: unchecked.delete_event_source_mapping(UUID=missing),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "ResourceNotFoundException"
    made = unchecked.create_event_source_mapping(FunctionName=name, EventSourceArn=sqs_arn())
    with pytest.raises(ClientError) as e:
        unchecked.update_event_source_mapping(UUID=made["UUID"], BatchSize=20)
    assert code(e) == "InvalidParameterValueException"
    with pytest.raises(ClientError) as e:
        unchecked.list_event_source_mappings(MaxItems=0)
    assert code(e) == "ValidationException"
    with pytest.raises(ClientError) as e:
        unchecked.list_event_source_mappings(EventSourceArn="queue-name")
    assert code(e) == "ValidationException" and "eventSourceArn" in message(e)


# -- functions, versions and aliases -------------------------------------------------


def test_qualified_mappings_go_with_their_version_alias_and_function(
    esm: Any, fns: Functions
) -> None:
    name = fns.create(ECHO)["FunctionName"]
    esm.publish_version(FunctionName=name)
    esm.update_function_configuration(FunctionName=name, Timeout=7)
    esm.get_waiter("function_updated_v2").wait(
        FunctionName=name, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    assert esm.publish_version(FunctionName=name)["Version"] == "2"
    esm.create_alias(FunctionName=name, Name="live", FunctionVersion="1")
    base = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
    on = {}
    for qualifier in (None, "1", "2", "live"):
        function = f"{name}:{qualifier}" if qualifier else name
        made = esm.create_event_source_mapping(FunctionName=function, EventSourceArn=sqs_arn())
        assert made["FunctionArn"] == (f"{base}:{qualifier}" if qualifier else base)
        on[qualifier] = made["UUID"]
    # An ARN names the function as well.
    by_arn = esm.create_event_source_mapping(FunctionName=f"{base}:1", EventSourceArn=sqs_arn())
    assert by_arn["FunctionArn"] == f"{base}:1"

    def uuids() -> set[str]:
        listed = esm.list_event_source_mappings(FunctionName=name)["EventSourceMappings"]
        return {m["UUID"] for m in listed}

    assert {
        m["UUID"]
        for m in esm.list_event_source_mappings(FunctionName=f"{name}:live")["EventSourceMappings"]
    } == {on["live"]}
    esm.delete_alias(FunctionName=name, Name="live")
    wait_for(lambda: on["live"] not in uuids(), message="the alias's mapping to go")
    esm.delete_function(FunctionName=name, Qualifier="2")
    wait_for(lambda: on["2"] not in uuids(), message="the version's mapping to go")
    assert on[None] in uuids() and on["1"] in uuids()
    esm.delete_function(FunctionName=name)
    wait_for(lambda: not uuids(), message="the function's mappings to go")
    with pytest.raises(ClientError) as e:
        esm.get_event_source_mapping(UUID=on[None])
    assert code(e) == "ResourceNotFoundException"


# -- restarts, sealing ---------------------------------------------------------------


def test_mappings_brokers_and_secrets_survive_a_restart_sealed(
    own_server: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = own_server(data, "--sqs-endpoint", "http://127.0.0.1:9", "--auth", "off")
    lam = first.client()
    fns = Functions(lam)
    name = fns.create(ECHO)["FunctionName"]
    added = lamina(
        "brokers", "add", "rmq", "amqp://app:hunter2pw@127.0.0.1:5672/", endpoint=first.endpoint
    )
    assert added.returncode == 0, added.stderr
    broker_arn = added.stdout.split()[-1]
    put = lamina(
        "secrets",
        "put",
        "rmq-login",
        "--username",
        "reader",
        "--password-stdin",
        endpoint=first.endpoint,
        stdin="s3cr3t-pw\n",
    )
    assert put.returncode == 0, put.stderr
    secret_arn = put.stdout.split()[-1]
    mq = lam.create_event_source_mapping(
        FunctionName=name,
        EventSourceArn=broker_arn,
        Queues=["orders"],
        SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": secret_arn}],
        Tags={"team": "payments"},
    )
    sqs = lam.create_event_source_mapping(
        FunctionName=name, EventSourceArn=sqs_arn(), Enabled=False
    )
    assert first.stop() == 0

    second = own_server(data, "--sqs-endpoint", "http://127.0.0.1:9", "--auth", "off")
    lam = second.client()
    # The poller has run meanwhile: it settles the mapping and reports why it cannot read
    # (no user `reader` on the broker); the rest is as it was created.
    moved = ("State", "LastProcessingResult")
    got = wait_for(
        lambda: (m := lam.get_event_source_mapping(UUID=mq["UUID"]))["State"] == "Enabled" and m,
        message="the mapping settled",
    )
    assert {k: v for k, v in clean(got).items() if k not in moved} == {
        k: v for k, v in clean(mq).items() if k not in moved
    }
    assert lam.get_event_source_mapping(UUID=sqs["UUID"])["State"] == "Disabled"
    assert lam.list_tags(Resource=mq["EventSourceMappingArn"])["Tags"] == {"team": "payments"}
    brokers = lamina("brokers", "list", endpoint=second.endpoint).stdout
    assert broker_arn in brokers and "hunter2pw" not in brokers
    secrets = lamina("secrets", "list", endpoint=second.endpoint).stdout
    assert secret_arn in secrets and "s3cr3t-pw" not in secrets
    assert second.stop() == 0
    # Sealed at rest: no password in any of the data directory's files.
    for path in data.rglob("*.db*"):
        content = path.read_bytes()
        assert b"hunter2pw" not in content and b"s3cr3t-pw" not in content, path


# -- the execution role, authorization, tags -----------------------------------------


def test_a_role_that_may_not_read_the_source_is_refused(
    esm: Any, fns: Functions, srv: Server, rabbit: str
) -> None:
    role_name = f"no-sqs-{uuid.uuid4().hex[:8]}"
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "logs:*", "Resource": "*"}],
    }
    put = SIGNED_HTTP.put(f"{srv.endpoint}/lamina/roles/{role_name}", json={"Policies": [policy]})
    role = put.json()["Role"]["Arn"]
    name = fns.create(ECHO, Role=role)["FunctionName"]
    with pytest.raises(ClientError) as e:
        esm.create_event_source_mapping(FunctionName=name, EventSourceArn=sqs_arn())
    assert code(e) == "InvalidParameterValueException"
    assert message(e) == (
        "The provided execution role does not have permissions to call ReceiveMessage on SQS"
    )
    with pytest.raises(ClientError) as e:
        esm.create_event_source_mapping(FunctionName=name, EventSourceArn=rabbit, Queues=["q"])
    assert message(e) == (
        "The provided execution role does not have permissions to call DescribeBroker on MQ"
    )
    # A mapping whose function's role is changed to one without the permission: its update
    # is refused the same way.
    other = fns.create(ECHO)["FunctionName"]
    made = esm.create_event_source_mapping(FunctionName=other, EventSourceArn=sqs_arn())
    esm.update_function_configuration(FunctionName=other, Role=role)
    esm.get_waiter("function_updated_v2").wait(
        FunctionName=other, WaiterConfig={"Delay": 0.1, "MaxAttempts": 100}
    )
    with pytest.raises(ClientError) as e:
        esm.update_event_source_mapping(UUID=made["UUID"], BatchSize=5)
    assert "ReceiveMessage on SQS" in message(e)


def test_keys_need_the_event_source_mapping_actions(
    esm: Any, fns: Functions, srv: Server, tmp_path: Path
) -> None:
    name = fns.create(ECHO)["FunctionName"]
    made = esm.create_event_source_mapping(FunctionName=name, EventSourceArn=sqs_arn())
    reader = client(
        srv,
        new_key(
            srv,
            tmp_path,
            {
                "Effect": "Allow",
                "Action": "lambda:GetEventSourceMapping",
                "Resource": made["EventSourceMappingArn"],
            },
        ),
    )
    assert reader.get_event_source_mapping(UUID=made["UUID"])["UUID"] == made["UUID"]
    for call in (
        lambda: reader.create_event_source_mapping(FunctionName=name, EventSourceArn=sqs_arn()),
        lambda: reader.list_event_source_mappings(),
        lambda: reader.update_event_source_mapping(UUID=made["UUID"], BatchSize=5),
        lambda: reader.delete_event_source_mapping(UUID=made["UUID"]),
    ):
        with pytest.raises(ClientError) as e:
            call()
        assert code(e) == "AccessDeniedException"
    creator = client(
        srv,
        new_key(
            srv,
            tmp_path,
            {
                "Effect": "Allow",
                "Action": "lambda:CreateEventSourceMapping",
                "Resource": "*",
                "Condition": {
                    "ArnLike": {"lambda:FunctionArn": f"arn:aws:lambda:*:*:function:{name}"}
                },
            },
        ),
    )
    assert creator.create_event_source_mapping(FunctionName=name, EventSourceArn=sqs_arn())["UUID"]
    other = fns.create(ECHO)["FunctionName"]
    with pytest.raises(ClientError) as e:
        creator.create_event_source_mapping(FunctionName=other, EventSourceArn=sqs_arn())
    assert code(e) == "AccessDeniedException"


def test_mappings_are_taggable_by_their_arn(esm: Any, fns: Functions) -> None:
    name = fns.create(ECHO)["FunctionName"]
    made = esm.create_event_source_mapping(
        FunctionName=name, EventSourceArn=sqs_arn(), Tags={"a": "1"}
    )
    arn = made["EventSourceMappingArn"]
    esm.tag_resource(Resource=arn, Tags={"b": "2"})
    assert esm.list_tags(Resource=arn)["Tags"] == {"a": "1", "b": "2"}
    esm.untag_resource(Resource=arn, TagKeys=["a"])
    assert esm.list_tags(Resource=arn)["Tags"] == {"b": "2"}
    with pytest.raises(ClientError) as e:
        esm.list_tags(Resource=arn[:-12] + "0" * 12)
    assert code(e) == "ResourceNotFoundException"


# -- brokers, secrets and sources through the CLI -------------------------------------


def test_brokers_and_secrets_through_the_cli(esm: Any, fns: Functions, srv: Server) -> None:
    broker = f"b-{uuid.uuid4().hex[:8]}"
    added = lamina(
        "brokers", "add", broker, "amqp://app:topsecretpw@127.0.0.1:5672/%2F", endpoint=srv.endpoint
    )
    assert added.returncode == 0, added.stderr
    arn = added.stdout.split()[-1]
    assert "rabbitmq" in added.stdout
    listed = lamina("brokers", "list", endpoint=srv.endpoint)
    assert arn in listed.stdout and "amqp://app@127.0.0.1:5672/%2F" in listed.stdout
    assert "topsecretpw" not in listed.stdout
    raw_list = SIGNED_HTTP.get(srv.endpoint + "/lamina/brokers").text
    assert "topsecretpw" not in raw_list

    secret = f"app/{uuid.uuid4().hex[:8]}"
    put = lamina(
        "secrets",
        "put",
        secret,
        "--username",
        "reader",
        "--password-stdin",
        endpoint=srv.endpoint,
        stdin="pw-in-stdin\n",
    )
    assert put.returncode == 0, put.stderr
    secret_arn = put.stdout.split()[-1]
    assert secret_arn.startswith(f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{secret}-")
    secrets = lamina("secrets", "list", endpoint=srv.endpoint).stdout
    assert secret_arn in secrets and "pw-in-stdin" not in secrets

    name = fns.create(ECHO)["FunctionName"]
    made = esm.create_event_source_mapping(
        FunctionName=name,
        EventSourceArn=arn,
        Queues=["jobs"],
        SourceAccessConfigurations=[{"Type": "BASIC_AUTH", "URI": secret_arn}],
    )
    refused = lamina("brokers", "remove", broker, endpoint=srv.endpoint)
    assert refused.returncode != 0 and "ResourceInUseException" in refused.stderr
    assert made["UUID"] in refused.stderr
    refused = lamina("secrets", "delete", secret, endpoint=srv.endpoint)
    assert refused.returncode != 0 and "ResourceInUseException" in refused.stderr

    def listed() -> str | None:
        sources = lamina("sources", endpoint=srv.endpoint)
        assert sources.returncode == 0, sources.stderr
        line = next(line for line in sources.stdout.splitlines() if made["UUID"] in line)
        return line if "PROBLEM" in line else None

    # The poller runs: the secret's user does not exist on the broker, and the listing says so.
    line = wait_for(listed, message="the mapping's problem listed")
    assert name in line and "Enabled" in line and "authentication failed for user reader" in line
    assert "(jobs)" in line
    data = SIGNED_HTTP.get(srv.endpoint + "/lamina/sources").json()["Sources"]
    entry = next(s for s in data if s["UUID"] == made["UUID"])
    assert entry["Kind"] == "rabbitmq" and entry["Stats"]["RecordsReceived"] == 0

    esm.delete_event_source_mapping(UUID=made["UUID"])
    wait_for(
        lambda: lamina("brokers", "remove", broker, endpoint=srv.endpoint).returncode == 0,
        message="the broker to be removable",
    )
    assert lamina("secrets", "delete", secret, endpoint=srv.endpoint).returncode == 0
    assert arn not in lamina("brokers", "list", endpoint=srv.endpoint).stdout
    bad = lamina("brokers", "add", "bad", "http://127.0.0.1:1", endpoint=srv.endpoint)
    assert bad.returncode != 0 and "InvalidParameterValueException" in bad.stderr
    missing = lamina("brokers", "remove", "never-added", endpoint=srv.endpoint)
    assert missing.returncode != 0 and "ResourceNotFoundException" in missing.stderr
    with contextlib.suppress(Exception):
        lamina("brokers", "remove", broker, endpoint=srv.endpoint)


def test_sqs_mappings_need_an_sqs_endpoint(lam: Any, functions: Functions) -> None:
    """The shared test server runs without --sqs-endpoint."""
    name = functions.create(ECHO)["FunctionName"]
    with pytest.raises(ClientError) as e:
        lam.create_event_source_mapping(FunctionName=name, EventSourceArn=sqs_arn())
    assert code(e) == "InvalidParameterValueException"
    assert "--sqs-endpoint" in message(e)


def test_serve_refuses_an_sqs_endpoint_that_is_not_a_url(tmp_path: Path) -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "lamina",
            "serve",
            "--data-dir",
            str(tmp_path / "data"),
            "--port",
            str(free_port()),
            "--sqs-endpoint",
            "sqs.local:9324",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "--sqs-endpoint: 'sqs.local:9324' is not an http(s) URL" in out.stderr
