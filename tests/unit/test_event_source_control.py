"""The control plane of event-source mappings without a server: the model's constraints, the
per-kind rules, states, the store (sealed credentials), connections, role checks and the
batched writes of processing results."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import pytest

from lamina.arns import FunctionRef, parse_function_ref
from lamina.control import event_sources as es
from lamina.control import mapping_rules
from lamina.control.brokers import BrokerService, display_url
from lamina.control.event_sources import EventSourceService
from lamina.control.mapping_input import MappingRequest, check_shapes
from lamina.errors import (
    InvalidParameterValueError,
    ResourceConflictError,
    ResourceInUseError,
    ResourceNotFoundError,
    ValidationError,
)
from lamina.events.sources.api import MappingControl
from lamina.mappings import RESULT_NONE, MappingState, SourceKind, problem
from lamina.settings import Settings
from lamina.store.engine import open_database
from lamina.store.event_sources import EventSourceStore
from lamina.store.sealed import Sealer

T = TypeVar("T")
ROLE = "arn:aws:iam::000000000000:role/app"
SQS = "arn:aws:sqs:us-east-1:000000000000:orders"
ALLOW_ALL = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": ["sqs:*", "mq:*", "nats:*"], "Resource": "*"}],
}


class FakeConfig:
    def __init__(self, role: str) -> None:
        self.role = role


class FakeFunctions:
    """What the service needs of FunctionService: functions `app` ($LATEST and version 1)."""

    def __init__(self) -> None:
        self.configs: dict[tuple[str, str], Any] = {
            ("app", "$LATEST"): FakeConfig(ROLE),
            ("app", "1"): FakeConfig(ROLE),
        }

    def ref(
        self, value: str, qualifier: str | None = None, *, namespaced: bool = False
    ) -> FunctionRef:
        return parse_function_ref(
            value, region="us-east-1", account="000000000000", namespaced=namespaced
        )

    def arn(self, name: str, qualifier: str | None = None) -> str:
        base = f"arn:aws:lambda:us-east-1:000000000000:function:{name}"
        return f"{base}:{qualifier}" if qualifier else base

    def latest(self, name: str) -> Any:
        return self.configs.get((name, "$LATEST"))

    def version(self, name: str, version: str) -> Any:
        return self.configs.get((name, version))

    def not_found(self, name: str, qualifier: str | None = None) -> ResourceNotFoundError:
        return ResourceNotFoundError(f"Function not found: {self.arn(name, qualifier)}")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)


class FakeRoles:
    def __init__(self) -> None:
        self.policies: dict[str, tuple[Any, ...]] = {ROLE: (ALLOW_ALL,)}

    def policies_for(self, role_arn: str | None) -> tuple[Any, ...]:
        return self.policies.get(role_arn or "", ())


class Parts:
    def __init__(self, tmp: Path, **settings: Any) -> None:
        self.db = tmp / "lamina.db"
        self.sealer = Sealer.open(tmp)  # (which makes the directory)
        self.engine = open_database(f"sqlite:///{self.db}", cluster=False)
        self.settings = Settings(data_dir=tmp, sqs_endpoint="http://127.0.0.1:9", **settings)
        self.functions = FakeFunctions()
        self.roles = FakeRoles()
        self.store = EventSourceStore(self.engine, self.sealer)
        self.brokers = BrokerService(self.settings, self.store, self.functions.run)
        self.service = EventSourceService(
            self.settings, self.store, self.functions, self.brokers, self.roles
        )


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    p = Parts(tmp_path)
    yield p
    p.engine.dispose()


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_the_service_is_what_the_runner_is_given(parts: Parts) -> None:
    control: MappingControl = parts.service  # mypy checks the Protocol too (server.py)
    assert control.mappings() == []


# -- the model's constraints ---------------------------------------------------------


@pytest.mark.parametrize(
    ("member", "value", "where"),
    [
        ("batch_size", 0, "batchSize"),
        ("batch_size", 10_001, "batchSize"),
        ("batching_window", 301, "maximumBatchingWindowInSeconds"),
        ("parallelization_factor", 11, "parallelizationFactor"),
        ("maximum_retry_attempts", -2, "maximumRetryAttempts"),
        ("maximum_record_age", 604_801, "maximumRecordAgeInSeconds"),
        ("tumbling_window", 901, "tumblingWindowInSeconds"),
        ("starting_position", "EARLIEST", "startingPosition"),
        ("response_types", ["Everything"], "functionResponseTypes"),
        ("scaling_config", {"MaximumConcurrency": 1}, "scalingConfig.maximumConcurrency"),
        ("queues", ["a", "b"], "queues"),
        ("access", [{"Type": "PASSWORD", "URI": "x"}], "sourceAccessConfigurations.1.member.type"),
        ("source_arn", "not-an-arn", "eventSourceArn"),
        ("enabled", "yes", "enabled"),
    ],
)
def test_model_constraints_are_validation_errors(member: str, value: Any, where: str) -> None:
    req = MappingRequest(function_name="app", source_arn=SQS)
    setattr(req, member, value)
    with pytest.raises(ValidationError) as e:
        check_shapes(req, create=True)
    assert f"at '{where}'" in e.value.message


def test_several_problems_are_reported_together() -> None:
    req = MappingRequest(function_name="app", batch_size=0, batching_window=-1)
    with pytest.raises(ValidationError) as e:
        check_shapes(req, create=True)
    assert e.value.message.startswith("2 validation errors detected")


# -- per-kind rules ------------------------------------------------------------------


def _apply(kind: SourceKind, arn: str, **members: Any) -> mapping_rules.Settings:
    return mapping_rules.apply(
        kind, arn, check_shapes(MappingRequest(**members), create=False), None
    )


def test_defaults_per_kind() -> None:
    sqs = _apply(SourceKind.SQS, SQS)
    assert (sqs.batch_size, sqs.batching_window_s) == (10, 0)
    mq = _apply(SourceKind.RABBITMQ, "arn:aws:mq:us-east-1:000000000000:broker:b:b-1", queues=["q"])
    assert (mq.batch_size, mq.batching_window_default) == (100, True)
    stream = _apply(
        SourceKind.NATS,
        "arn:aws:nats:us-east-1:000000000000:broker:n:stream/s",
        starting_position="LATEST",
    )
    assert stream.batch_size == 100
    assert (stream.maximum_retry_attempts, stream.maximum_record_age_s) == (-1, -1)
    assert stream.parallelization_factor == 1


@pytest.mark.parametrize(
    ("kind", "arn", "members", "message"),
    [
        (SourceKind.SQS, SQS, {"batch_size": 11}, "Maximum batch window in seconds"),
        (SourceKind.SQS, SQS + ".fifo", {"batch_size": 11, "batching_window": 1}, "FIFO"),
        (SourceKind.SQS, SQS + ".fifo", {"batching_window": 1}, "FIFO"),
        (SourceKind.SQS, SQS, {"starting_position": "LATEST"}, "StartingPosition is not valid"),
        (SourceKind.SQS, SQS, {"bisect": True}, "Unsupported BisectBatchOnFunctionError"),
        (SourceKind.SQS, SQS, {"queues": ["q"]}, "Unsupported Queues"),
        (
            SourceKind.SQS,
            SQS,
            {"destination_config": {"OnFailure": {"Destination": SQS}}},
            "Unsupported DestinationConfig",
        ),
        (SourceKind.RABBITMQ, "arn:aws:mq:us-east-1:000000000000:broker:b:b-1", {}, "Queues"),
        (
            SourceKind.RABBITMQ,
            "arn:aws:mq:us-east-1:000000000000:broker:b:b-1",
            {"queues": ["q"], "access": [{"Type": "SASL_SCRAM_256_AUTH", "URI": "x"}]},
            "SASL_SCRAM_256_AUTH",
        ),
        (SourceKind.NATS, "x", {}, "startingPosition"),
        (
            SourceKind.NATS,
            "x",
            {"starting_position": "LATEST", "starting_timestamp": 5},
            "Timestamp only valid",
        ),
        (SourceKind.NATS, "x", {"starting_position": "AT_TIMESTAMP"}, "StartingPositionTimestamp"),
        (
            SourceKind.NATS,
            "x",
            {"starting_position": "LATEST", "maximum_record_age": 59},
            "MaximumRecordAgeInSeconds",
        ),
        (
            SourceKind.REDIS,
            "x",
            {
                "starting_position": "LATEST",
                "destination_config": {
                    "OnFailure": {"Destination": "arn:aws:sns:us-east-1:000000000000:t"}
                },
            },
            "OnFailure",
        ),
        (
            SourceKind.REDIS,
            "x",
            {
                "starting_position": "LATEST",
                "destination_config": {"OnSuccess": {"Destination": SQS}},
            },
            "Unsupported DestinationConfig",
        ),
        (
            SourceKind.NATS,
            "x",
            {"starting_position": "LATEST", "scaling_config": {"MaximumConcurrency": 5}},
            "Unsupported ScalingConfig",
        ),
    ],
)
def test_per_kind_refusals(
    kind: SourceKind, arn: str, members: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidParameterValueError) as e:
        _apply(kind, arn, **members)
    assert message in e.value.message


def test_stream_failure_destinations_may_be_a_function_or_a_queue() -> None:
    for target in (SQS, "arn:aws:lambda:us-east-1:000000000000:function:dlq"):
        s = _apply(
            SourceKind.NATS,
            "x",
            starting_position="TRIM_HORIZON",
            destination_config={"OnFailure": {"Destination": target}},
        )
        assert s.on_failure == target


# -- the service ---------------------------------------------------------------------


def test_create_update_delete_move_through_lambdas_states(parts: Parts) -> None:
    svc = parts.service
    seen: list[str] = []
    svc.subscribe(seen.append)
    m = run(svc.create(MappingRequest(function_name="app", source_arn=SQS)))
    assert m.state is MappingState.CREATING and m.last_result == RESULT_NONE
    assert m.state_reason == "USER_INITIATED"
    assert seen == [m.uuid]
    # Settling is the runner's move; an update of a running mapping is Updating.
    run(svc.settle(m.uuid, MappingState.ENABLED))
    assert svc.require(m.uuid).state is MappingState.ENABLED
    assert run(svc.update(m.uuid, MappingRequest(batch_size=5))).state is MappingState.UPDATING
    run(svc.settle(m.uuid, MappingState.ENABLED))
    off = run(svc.update(m.uuid, MappingRequest(enabled=False)))
    assert off.state is MappingState.DISABLING
    run(svc.settle(m.uuid, MappingState.ENABLED))  # not a move from Disabling: ignored
    assert svc.require(m.uuid).state is MappingState.DISABLING
    run(svc.settle(m.uuid, MappingState.DISABLED))
    assert run(svc.update(m.uuid, MappingRequest(batch_size=7))).state is MappingState.DISABLED
    assert run(svc.update(m.uuid, MappingRequest(enabled=True))).state is MappingState.ENABLING
    gone = run(svc.delete(m.uuid))
    assert gone.state is MappingState.DELETING
    with pytest.raises(ResourceInUseError):
        run(svc.update(m.uuid, MappingRequest(batch_size=1)))
    run(svc.remove(m.uuid))
    assert svc.get(m.uuid) is None
    with pytest.raises(ResourceNotFoundError):
        svc.require(m.uuid)
    assert parts.store.all_mappings() == []


def test_disabled_at_creation_and_deleted_at_once_without_a_runner(parts: Parts) -> None:
    svc = parts.service
    m = run(svc.create(MappingRequest(function_name="app", source_arn=SQS, enabled=False)))
    assert m.state is MappingState.DISABLED
    run(svc.delete(m.uuid))
    assert svc.get(m.uuid) is None and parts.store.all_mappings() == []


def test_duplicates_missing_functions_and_qualified_arns(parts: Parts) -> None:
    svc = parts.service
    first = run(svc.create(MappingRequest(function_name="app", source_arn=SQS)))
    with pytest.raises(ResourceConflictError) as e:
        run(svc.create(MappingRequest(function_name="app", source_arn=SQS)))
    assert first.uuid in e.value.message
    versioned = run(svc.create(MappingRequest(function_name="app:1", source_arn=SQS)))
    assert versioned.function_arn.endswith(":function:app:1")
    with pytest.raises(ResourceNotFoundError):
        run(svc.create(MappingRequest(function_name="app:2", source_arn=SQS)))
    with pytest.raises(ResourceNotFoundError):
        run(svc.create(MappingRequest(function_name="nope", source_arn=SQS)))
    # The version's deletion takes its mapping; the function's takes the rest.
    parts.functions.configs.pop(("app", "1"))
    run(svc.function_changed("app", "1"))
    assert [m.uuid for m in svc.mappings()] == [first.uuid]
    run(svc.function_changed("app", None))
    assert svc.mappings() == []


def test_listing_filters_and_pages(parts: Parts) -> None:
    svc = parts.service
    made = {
        run(svc.create(MappingRequest(function_name="app", source_arn=f"{SQS}{i}"))).uuid
        for i in range(5)
    }
    seen: list[str] = []
    marker = None
    while True:
        page, marker = svc.list(function_name="app", marker=marker, max_items=2)
        seen += [m.uuid for m in page]
        if marker is None:
            break
    assert sorted(seen) == sorted(made) and len(seen) == 5
    assert [m.source_arn for m in svc.list(source_arn=f"{SQS}3")[0]] == [f"{SQS}3"]
    assert svc.list(function_name="app:1")[0] == []


def test_role_without_the_source_permission_is_refused(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.roles.policies[ROLE] = (
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sqs:ReceiveMessage", "Resource": "*"}],
        },
    )
    with pytest.raises(InvalidParameterValueError) as e:
        run(parts.service.create(MappingRequest(function_name="app", source_arn=SQS)))
    assert e.value.message == (
        "The provided execution role does not have permissions to call DeleteMessage on SQS"
    )
    parts.engine.dispose()
    # Without authentication nothing is checked.
    open_parts = Parts(tmp_path / "off", auth=False)
    open_parts.roles.policies.clear()
    run(open_parts.service.create(MappingRequest(function_name="app", source_arn=SQS)))
    open_parts.engine.dispose()


def test_results_are_kept_in_memory_at_once_and_written_in_batches(parts: Parts) -> None:
    svc = parts.service

    async def scenario() -> None:
        m = await svc.create(MappingRequest(function_name="app", source_arn=SQS))
        svc.report(m.uuid, problem("broker unreachable"))
        assert svc.require(m.uuid).last_result == "PROBLEM: broker unreachable"
        assert parts.store.all_mappings()[0].last_result == RESULT_NONE  # not written yet
        svc.start()
        await svc.close()  # writes what is left
        assert parts.store.all_mappings()[0].last_result == "PROBLEM: broker unreachable"

    run(scenario())


# -- brokers, secrets, connections ---------------------------------------------------


def test_brokers_secrets_and_connections(parts: Parts) -> None:
    svc, brokers = parts.service, parts.brokers

    async def scenario() -> None:
        rmq = await brokers.add("rmq", "amqp://app:s3cret@127.0.0.1:5672/%2Fprod")
        assert rmq.arn.startswith("arn:aws:mq:us-east-1:000000000000:broker:rmq:b-")
        assert rmq.display_url == "amqp://app@127.0.0.1:5672/%2Fprod"
        nats = await brokers.add("js", "nats://127.0.0.1:4222")
        assert nats.arn == "arn:aws:nats:us-east-1:000000000000:broker:js"
        secret = await brokers.put_secret("rmq-user", "reader", "p@ss:word")
        assert secret.arn.startswith(
            "arn:aws:secretsmanager:us-east-1:000000000000:secret:rmq-user-"
        )
        assert len(secret.arn.rsplit("-", 1)[1]) == 6
        # Putting it again keeps the ARN.
        assert (await brokers.put_secret("rmq-user", "reader", "new")).arn == secret.arn

        plain = await svc.create(
            MappingRequest(function_name="app", source_arn=rmq.arn, queues=["orders"])
        )
        c = svc.connection(plain)
        assert (c.kind, c.url, c.virtual_host) == (
            SourceKind.RABBITMQ,
            "amqp://app:s3cret@127.0.0.1:5672/%2Fprod",
            "/prod",
        )
        auth = await svc.create(
            MappingRequest(
                function_name="app:1",
                source_arn=rmq.arn,
                queues=["orders"],
                access=[
                    {"Type": "BASIC_AUTH", "URI": secret.arn},
                    {"Type": "VIRTUAL_HOST", "URI": "other"},
                ],
            )
        )
        c = svc.connection(auth)
        assert c.url == "amqp://reader:new@127.0.0.1:5672/other" and c.virtual_host == "other"
        stream = await svc.create(
            MappingRequest(
                function_name="app",
                source_arn=nats.arn + ":stream/events",
                starting_position="LATEST",
            )
        )
        assert svc.connection(stream).stream == "events"
        assert svc.connection(stream).url == "nats://127.0.0.1:4222"
        sqs = await svc.create(MappingRequest(function_name="app", source_arn=SQS))
        assert svc.connection(sqs).queue_name == "orders"
        assert svc.connection(sqs).url == "http://127.0.0.1:9"

        # In use: neither may go; unknown broker or secret: refused at create.
        with pytest.raises(ResourceInUseError):
            await brokers.remove("rmq")
        with pytest.raises(ResourceInUseError):
            await brokers.delete_secret("rmq-user")
        with pytest.raises(InvalidParameterValueError):
            await svc.create(
                MappingRequest(
                    function_name="app",
                    source_arn="arn:aws:mq:us-east-1:000000000000:broker:gone:b-1",
                    queues=["q"],
                )
            )
        with pytest.raises(InvalidParameterValueError):
            await svc.create(
                MappingRequest(
                    function_name="app",
                    source_arn=rmq.arn,
                    queues=["other"],
                    access=[{"Type": "BASIC_AUTH", "URI": secret.arn + "x"}],
                )
            )
        await svc.delete(auth.uuid)
        await brokers.delete_secret("rmq-user")
        with pytest.raises(LookupError):
            svc.connection(replace(auth, uuid="x"))

    run(scenario())
    # Credentials are sealed at rest: neither password is in the database's files.
    parts.engine.dispose()
    raw = b"".join(p.read_bytes() for p in parts.db.parent.glob("lamina.db*"))
    assert b"s3cret" not in raw and b"p@ss:word" not in raw
    conn = sqlite3.connect(parts.db)
    rows = conn.execute("SELECT display_url FROM event_source_brokers").fetchall()
    conn.close()
    assert ("amqp://app@127.0.0.1:5672/%2Fprod",) in rows


def test_no_sqs_endpoint_is_a_readable_refusal(tmp_path: Path) -> None:
    parts = Parts(tmp_path)
    parts.service._settings = Settings(data_dir=tmp_path)  # as a server without --sqs-endpoint
    with pytest.raises(InvalidParameterValueError) as e:
        run(parts.service.create(MappingRequest(function_name="app", source_arn=SQS)))
    assert "--sqs-endpoint" in e.value.message
    parts.engine.dispose()


def test_broker_urls_are_checked() -> None:
    assert display_url("redis://:pw@[::1]:6379/0") == "redis://[::1]:6379/0"
    assert display_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


@pytest.mark.parametrize("url", ["http://x", "amqp://", "amqp://h:port/"])
def test_bad_broker_urls_are_refused(parts: Parts, url: str) -> None:
    with pytest.raises(InvalidParameterValueError):
        run(parts.brokers.add("b", url))


def test_mappings_survive_a_new_service_on_the_same_store(parts: Parts) -> None:
    m = run(
        parts.service.create(
            MappingRequest(
                function_name="app",
                source_arn=SQS,
                filter_criteria={"Filters": [{"Pattern": json.dumps({"body": {"a": [1]}})}]},
                tags={"team": "x"},
            )
        )
    )
    again = EventSourceService(
        parts.settings, parts.store, parts.functions, parts.brokers, parts.roles
    )
    run(again.load())
    assert again.require(m.uuid) == m
    assert es.mapping_arn("us-east-1", "000000000000", m.uuid).endswith(m.uuid)
