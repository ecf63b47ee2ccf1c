"""Event-source mappings end to end: a RabbitMQ broker registered with the server, boto3's
CreateEventSourceMapping on one of its queues, the function invoked with Lambda's `aws:rmq`
event, and each message acknowledged only after the function succeeded for it. Needs the
RabbitMQ at 127.0.0.1:5672 (each test makes a virtual host of its own); the SQS test runs
moto's server as the SQS-API endpoint."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from tests._rabbit import URL, count, declare, private_vhost, publish
from tests.conftest import SIGNED_HTTP, Functions, Server, seen, wait_for
from tests.integration._mappings import delete_mapping, wait_state
from tests.integration.test_code_from_s3 import moto_server

pytestmark = pytest.mark.control_plane

RECORDER = """
import base64, json, time
def handler(event, context):
    for key, messages in event["rmqMessagesByQueue"].items():
        for m in messages:
            data = base64.b64decode(m["data"]).decode()
            print("SEEN " + json.dumps({
                "t": time.time(), "key": key, "data": data, "redelivered": m["redelivered"],
                "batch": len(messages), "source": event["eventSource"],
                "arn": event["eventSourceArn"],
            }))
            if data.startswith("fail-once") and not m["redelivered"]:
                raise ValueError("failed on purpose, the first time")
    return {"ok": True}
"""


@pytest.fixture
def vhost() -> Iterator[str]:
    with private_vhost("lamina-esm") as name:
        yield name


@pytest.fixture
def broker(server: Server) -> Iterator[str]:
    """A broker registered with the server (the shared RabbitMQ): its ARN."""
    name = f"b{uuid.uuid4().hex[:10]}"
    url = f"{server.endpoint}/lamina/brokers/{name}"
    resp = SIGNED_HTTP.put(url, json={"Url": URL})
    assert resp.status_code == 200, resp.text
    arn: str = resp.json()["Broker"]["Arn"]
    yield arn
    SIGNED_HTTP.delete(url)


@pytest.fixture
def reader_role(server: Server) -> str:
    """An execution role that may read Amazon MQ (RabbitMQ) brokers."""
    name = f"mq-reader-{uuid.uuid4().hex[:8]}"
    statements = [{"Effect": "Allow", "Action": "mq:DescribeBroker", "Resource": "*"}]
    put = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/roles/{name}",
        json={"Policies": [{"Version": "2012-10-17", "Statement": statements}]},
    )
    assert put.status_code in (200, 201), put.text
    return f"arn:aws:iam::000000000000:role/{name}"


def new_queue(vhost: str) -> str:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    asyncio.run(declare(vhost, queue))
    return queue


def send(vhost: str, queue: str, *bodies: str) -> None:
    asyncio.run(publish(vhost, queue, [b.encode() for b in bodies]))


def create_mapping(
    lam: Any, function: str, broker: str, queue: str, vhost: str, **more: Any
) -> dict[str, Any]:
    resp: dict[str, Any] = lam.create_event_source_mapping(
        FunctionName=function,
        EventSourceArn=broker,
        Queues=[queue],
        SourceAccessConfigurations=[{"Type": "VIRTUAL_HOST", "URI": vhost}],
        **more,
    )
    return resp


def test_a_rabbitmq_queue_feeds_a_function_and_each_message_is_acknowledged(
    server: Server,
    lam: Any,
    functions: Functions,
    vhost: str,
    broker: str,
    reader_role: str,
) -> None:
    name = functions.create(RECORDER, Role=reader_role)["FunctionName"]
    queue = new_queue(vhost)
    created = create_mapping(lam, name, broker, queue, vhost, BatchSize=10)
    assert created["State"] == "Creating"
    mapping = wait_state(lam, created["UUID"], "Enabled")
    bodies = [f"message {i}" for i in range(25)]
    send(vhost, queue, *bodies)
    records = wait_for(lambda: len(r := seen(server, name)) >= 25 and r, message="25 messages")
    assert sorted(r["data"] for r in records) == sorted(bodies)
    assert {r["key"] for r in records} == {f"{queue}::{vhost}"}
    assert {r["source"] for r in records} == {"aws:rmq"}
    assert {r["arn"] for r in records} == {broker}
    assert all(r["batch"] <= 10 for r in records)
    wait_for(
        lambda: lam.get_event_source_mapping(UUID=mapping["UUID"])["LastProcessingResult"] == "OK",
        message="LastProcessingResult OK",
    )
    # The mapping's counters, in /lamina/sources and /metrics.
    listed = SIGNED_HTTP.get(server.endpoint + "/lamina/sources").json()["Sources"]
    stats = next(s for s in listed if s["UUID"] == mapping["UUID"])["Stats"]
    assert stats["RecordsReceived"] == 25 and stats["FunctionErrors"] == 0
    metrics = httpx.get(server.endpoint + "/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("lamina_event_source_records_total{")
        and mapping["UUID"] in line
        and 'outcome="received"' in line
    )
    assert line.endswith(" 25.0")
    # Every message was acknowledged: with the consumer gone, none comes back.
    delete_mapping(lam, mapping["UUID"])
    assert asyncio.run(count(vhost, queue)) == 0


def test_a_failed_batch_is_redelivered_by_the_broker(
    server: Server,
    lam: Any,
    functions: Functions,
    vhost: str,
    broker: str,
    reader_role: str,
) -> None:
    name = functions.create(RECORDER, Role=reader_role)["FunctionName"]
    queue = new_queue(vhost)
    mapping = create_mapping(lam, name, broker, queue, vhost, BatchSize=1)
    wait_state(lam, mapping["UUID"], "Enabled")
    send(vhost, queue, "fail-once please", "fine")
    records = wait_for(
        lambda: len(r := seen(server, name)) >= 3 and r, message="the failed message again"
    )
    tries = [r["redelivered"] for r in records if r["data"] == "fail-once please"]
    assert tries == [False, True]
    assert [r["data"] for r in records].count("fine") == 1
    delete_mapping(lam, mapping["UUID"])
    assert asyncio.run(count(vhost, queue)) == 0


def test_filtered_messages_are_dropped_and_acknowledged(
    server: Server,
    lam: Any,
    functions: Functions,
    vhost: str,
    broker: str,
    reader_role: str,
) -> None:
    name = functions.create(RECORDER, Role=reader_role)["FunctionName"]
    queue = new_queue(vhost)
    pattern = json.dumps({"data": {"kind": ["order"]}})
    mapping = create_mapping(
        lam,
        name,
        broker,
        queue,
        vhost,
        FilterCriteria={"Filters": [{"Pattern": pattern}]},
        MaximumBatchingWindowInSeconds=1,
    )
    wait_state(lam, mapping["UUID"], "Enabled")
    kept = [json.dumps({"kind": "order", "n": i}) for i in range(3)]
    send(vhost, queue, kept[0], json.dumps({"kind": "noise"}), "text", kept[1], kept[2])
    wait_for(lambda: len(seen(server, name)) >= 3, message="the kept messages")
    wait_for(
        lambda: (
            next(
                s
                for s in SIGNED_HTTP.get(server.endpoint + "/lamina/sources").json()["Sources"]
                if s["UUID"] == mapping["UUID"]
            )["Stats"]["RecordsFiltered"]
            == 2
        ),
        message="two messages filtered",
    )
    delete_mapping(lam, mapping["UUID"])
    assert sorted(r["data"] for r in seen(server, name)) == sorted(kept)
    assert asyncio.run(count(vhost, queue)) == 0


def test_a_role_that_may_no_longer_read_the_broker_is_a_problem_and_nothing_is_read(
    server: Server,
    lam: Any,
    functions: Functions,
    vhost: str,
    broker: str,
    reader_role: str,
) -> None:
    name = functions.create(RECORDER, Role=reader_role)["FunctionName"]
    queue = new_queue(vhost)
    mapping = create_mapping(lam, name, broker, queue, vhost)
    wait_state(lam, mapping["UUID"], "Enabled")
    # The role's permission is taken away: the mapping stops reading and says why.
    role_name = reader_role.rsplit("/", 1)[1]
    statements = [{"Effect": "Allow", "Action": "logs:*", "Resource": "*"}]
    put = SIGNED_HTTP.put(
        f"{server.endpoint}/lamina/roles/{role_name}",
        json={"Policies": [{"Version": "2012-10-17", "Statement": statements}]},
    )
    assert put.status_code in (200, 201), put.text
    found = wait_for(
        lambda: (
            (m := lam.get_event_source_mapping(UUID=mapping["UUID"]))[
                "LastProcessingResult"
            ].startswith("PROBLEM:")
            and m
        ),
        message="a PROBLEM result",
    )
    assert "DescribeBroker" in found["LastProcessingResult"]
    assert found["State"] == "Enabled"
    send(vhost, queue, "unread")
    wait_for(lambda: asyncio.run(count(vhost, queue)) == 1, message="the message in the queue")
    delete_mapping(lam, mapping["UUID"])
    assert seen(server, name) == []
    assert asyncio.run(count(vhost, queue)) == 1


def test_an_unreachable_broker_is_a_problem_named_in_the_result(
    server: Server, lam: Any, functions: Functions, reader_role: str
) -> None:
    name = functions.create(RECORDER, Role=reader_role)["FunctionName"]
    broker_name = f"b{uuid.uuid4().hex[:10]}"
    url = f"{server.endpoint}/lamina/brokers/{broker_name}"
    # A port nothing listens on (the discard port, refused on loopback).
    resp = SIGNED_HTTP.put(url, json={"Url": "amqp://guest:guest@127.0.0.1:9/"})
    assert resp.status_code == 200, resp.text
    try:
        arn = resp.json()["Broker"]["Arn"]
        mapping = lam.create_event_source_mapping(
            FunctionName=name, EventSourceArn=arn, Queues=["q"]
        )
        found = wait_for(
            lambda: (
                (m := lam.get_event_source_mapping(UUID=mapping["UUID"]))[
                    "LastProcessingResult"
                ].startswith("PROBLEM:")
                and m
            ),
            message="a PROBLEM result",
        )
        assert found["State"] == "Enabled"
        assert "127.0.0.1:9" in found["LastProcessingResult"] or "connect" in (
            found["LastProcessingResult"].lower()
        )
        delete_mapping(lam, mapping["UUID"])
        assert "event source mapping" in server.log()
    finally:
        SIGNED_HTTP.delete(url)


THROTTLED = """
import base64, json, time
def handler(event, context):
    for messages in event["rmqMessagesByQueue"].values():
        for m in messages:
            data = base64.b64decode(m["data"]).decode()
            print("SEEN " + json.dumps({"t": time.time(), "data": data}))
    return None
"""


def test_a_throttled_mapping_backs_off_and_drops_nothing(
    server: Server,
    lam: Any,
    functions: Functions,
    vhost: str,
    broker: str,
    reader_role: str,
) -> None:
    name = functions.create(THROTTLED, Role=reader_role)["FunctionName"]
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    queue = new_queue(vhost)
    mapping = create_mapping(lam, name, broker, queue, vhost, BatchSize=5)
    wait_state(lam, mapping["UUID"], "Enabled")
    bodies = [f"held {i}" for i in range(12)]
    send(vhost, queue, *bodies)

    def stats() -> dict[str, Any]:
        listed = SIGNED_HTTP.get(server.endpoint + "/lamina/sources").json()["Sources"]
        found: dict[str, Any] = next(s for s in listed if s["UUID"] == mapping["UUID"])["Stats"]
        return found

    wait_for(lambda: stats()["Throttles"] >= 3, message="throttled batches retried")
    assert seen(server, name) == []
    lam.delete_function_concurrency(FunctionName=name)
    records = wait_for(lambda: len(r := seen(server, name)) >= 12 and r, message="all delivered")
    assert sorted(r["data"] for r in records) == sorted(bodies)
    delete_mapping(lam, mapping["UUID"])
    assert asyncio.run(count(vhost, queue)) == 0


# -- SQS, at an SQS-API endpoint (moto's server stands in for SQS) --------------------------

PARTIAL = """
import json, time
def handler(event, context):
    failed = []
    for r in event["Records"]:
        print("SEEN " + json.dumps({
            "t": time.time(), "body": r["body"], "id": r["messageId"],
            "source": r["eventSource"], "arn": r["eventSourceARN"],
        }))
        if r["body"].startswith("fail"):
            failed.append({"itemIdentifier": r["messageId"]})
    return {"batchItemFailures": failed}
"""


@pytest.fixture
def sqs_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # What the server (a child process) finds through the usual AWS chain; moto takes any.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with moto_server(tmp_path) as url:
        yield url


def test_an_sqs_queue_feeds_a_function_and_partial_failures_leave_exactly_the_failed(
    own_server: Any, sqs_endpoint: str, tmp_path: Path
) -> None:
    srv: Server = own_server(None, "--sqs-endpoint", sqs_endpoint)
    lam = srv.client()
    sqs = boto3.client(
        "sqs",
        endpoint_url=sqs_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    try:
        suffix = uuid.uuid4().hex[:8]
        dlq = sqs.create_queue(QueueName=f"dlq-{suffix}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        url = sqs.create_queue(
            QueueName=f"q-{suffix}",
            Attributes={
                "VisibilityTimeout": "1",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 1}),
            },
        )["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        role = f"sqs-reader-{suffix}"
        statements = [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]
        put = SIGNED_HTTP.put(
            f"{srv.endpoint}/lamina/roles/{role}",
            json={"Policies": [{"Version": "2012-10-17", "Statement": statements}]},
        )
        assert put.status_code in (200, 201), put.text
        fns = Functions(lam)
        # Lambda refuses a function timeout longer than the queue's visibility timeout.
        name = fns.create(PARTIAL, Role=f"arn:aws:iam::000000000000:role/{role}", Timeout=1)[
            "FunctionName"
        ]
        mapping = lam.create_event_source_mapping(
            FunctionName=name,
            EventSourceArn=arn,
            BatchSize=10,
            MaximumBatchingWindowInSeconds=1,
            FunctionResponseTypes=["ReportBatchItemFailures"],
        )
        wait_state(lam, mapping["UUID"], "Enabled")
        bodies = [f"fail {i}" for i in range(3)] + [f"ok {i}" for i in range(7)]
        for body in bodies:
            sqs.send_message(QueueUrl=url, MessageBody=body)

        def dead() -> list[str]:
            got = sqs.receive_message(QueueUrl=dlq, MaxNumberOfMessages=10, WaitTimeSeconds=1)
            return [m["Body"] for m in got.get("Messages", [])]

        dead_letters: list[str] = []
        wait_for(
            lambda: dead_letters.extend(dead()) or len(dead_letters) >= 3,
            timeout=30,
            message="the failed messages in the dead-letter queue",
        )
        assert sorted(dead_letters) == [f"fail {i}" for i in range(3)]
        records = seen(srv, name)
        assert sorted(r["body"] for r in records if r["body"].startswith("ok")) == sorted(
            b for b in bodies if b.startswith("ok")
        )
        assert {r["source"] for r in records} == {"aws:sqs"}
        assert {r["arn"] for r in records} == {arn}
        attributes = sqs.get_queue_attributes(
            QueueUrl=url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        assert attributes == {
            "ApproximateNumberOfMessages": "0",
            "ApproximateNumberOfMessagesNotVisible": "0",
        }
        delete_mapping(lam, mapping["UUID"])
        fns.cleanup()
    finally:
        sqs.close()


def test_concurrent_batches_of_one_queue_are_each_delivered_once(
    server: Server,
    lam: Any,
    functions: Functions,
    vhost: str,
    broker: str,
    reader_role: str,
) -> None:
    name = functions.create(RECORDER, Role=reader_role)["FunctionName"]
    queue = new_queue(vhost)
    bodies = [f"m{i}" for i in range(1500)]
    send(vhost, queue, *bodies)
    mapping = create_mapping(
        lam,
        name,
        broker,
        queue,
        vhost,
        BatchSize=10,
        MaximumBatchingWindowInSeconds=1,
        ScalingConfig={"MaximumConcurrency": 5},
    )
    records = wait_for(
        lambda: len(r := seen(server, name)) >= 1500 and r, timeout=60, message="every message"
    )
    delete_mapping(lam, mapping["UUID"])
    data = [r["data"] for r in seen(server, name)]
    assert sorted(data) == sorted(bodies)  # none twice: the channel never failed
    assert not any(r["redelivered"] for r in records)
    assert "unknown delivery tag" not in server.log()
    assert asyncio.run(count(vhost, queue)) == 0
