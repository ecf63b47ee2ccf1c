"""The SQS source against a real SQS-API endpoint: moto's `moto_server` (a third-party
server, the stand-in for AWS SQS or a self-hosted SQS-compatible one) on a loopback port.
Each test makes its own queues (unique names) and deletes them."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
from tests.conftest import free_port
from tests.integration import _sqs
from tests.integration._sqs import ACCOUNT, REGION, Queues
from tests.integration.test_code_from_s3 import moto_server

from lamina.events.sources.api import Message, SourceUnavailable
from lamina.events.sources.sqs import SqsSource, queue_visibility_timeout
from lamina.mappings import (
    RESULT_NONE,
    Connection,
    EventSourceMapping,
    MappingState,
    SourceKind,
)

pytestmark = pytest.mark.control_plane

T = TypeVar("T")

# The moto SQS endpoint, a client of it and the test's queues (shared with test_sqs_mapping).
endpoint = _sqs.endpoint
sqs = _sqs.sqs
queues = _sqs.queues


def run(coroutine: Awaitable[T], timeout: float = 60) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the source finds through the usual AWS chain (moto takes any)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def mapping_for(name: str, account: str = ACCOUNT) -> EventSourceMapping:
    return EventSourceMapping(
        uuid=str(uuid.uuid4()),
        function_arn=f"arn:aws:lambda:{REGION}:000000000000:function:f",
        function_name="f",
        qualifier=None,
        source_arn=f"arn:aws:sqs:{REGION}:{account}:{name}",
        kind=SourceKind.SQS,
        state=MappingState.ENABLED,
        state_reason="USER_INITIATED",
        last_modified=time.time(),
        last_result=RESULT_NONE,
        batch_size=10,
        batching_window_s=0,
    )


def connection_for(endpoint: str, name: str) -> Connection:
    """What the control resolves for an SQS mapping: the endpoint and the queue's name."""
    return Connection(kind=SourceKind.SQS, url=endpoint, queue_name=name)


def source(endpoint: str, name: str, account: str = ACCOUNT) -> SqsSource:
    return SqsSource(mapping_for(name, account), connection_for(endpoint, name))


async def opened(endpoint: str, name: str) -> SqsSource:
    src = source(endpoint, name)
    await src.open()
    return src


def _send(sqs: Any, url: str, n: int, **kwargs: Any) -> list[str]:
    return [
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}", **kwargs)["MessageId"] for i in range(n)
    ]


async def _receive_all(src: SqsSource, n: int, wait_s: float = 5) -> list[Message]:
    """Receive until `n` messages came (moto may hand out fewer per call)."""
    got: list[Message] = []
    deadline = time.monotonic() + wait_s
    while len(got) < n and time.monotonic() < deadline:
        got += await src.receive(n - len(got), 1)
    return got


# -- receiving ------------------------------------------------------------------------


def test_long_poll_waits_for_the_first_message(endpoint: str, sqs: Any, queues: Queues) -> None:
    name, url = queues.make()

    async def scenario() -> tuple[float, list[Message], float, list[Message]]:
        src = await opened(endpoint, name)
        try:
            started = time.monotonic()
            empty = await src.receive(10, 1)
            waited_empty = time.monotonic() - started

            started = time.monotonic()
            poll = asyncio.create_task(src.receive(10, 10))
            await asyncio.sleep(0.5)
            await asyncio.to_thread(_send, sqs, url, 1)
            got = await poll
            return waited_empty, empty, time.monotonic() - started, got
        finally:
            await src.close()

    waited_empty, empty, waited, got = run(scenario())
    assert empty == []
    assert waited_empty >= 0.9  # it did wait, as a long poll does
    assert len(got) == 1
    assert 0.4 < waited < 5  # answered when the message came, not after the 10 s


def test_record_shape_field_by_field(endpoint: str, sqs: Any, queues: Queues) -> None:
    name, url = queues.make()
    sent = sqs.send_message(
        QueueUrl=url,
        MessageBody='{"order": 42}',
        MessageAttributes={
            "text": {"DataType": "String", "StringValue": "hello"},
            "count": {"DataType": "Number", "StringValue": "3"},
            "blob": {"DataType": "Binary", "BinaryValue": b"\x00\x01\xff"},
        },
    )
    before_ms = int(time.time() * 1000)

    async def scenario() -> tuple[list[Message], dict[str, Any]]:
        src = await opened(endpoint, name)
        try:
            got = await src.receive(10, 5)
            return got, src.event(got)
        finally:
            await src.close()

    got, event = run(scenario())
    assert len(got) == 1
    m = got[0]
    record = m.record
    assert event == {"Records": [record]}
    assert list(record) == [
        "messageId",
        "receiptHandle",
        "body",
        "attributes",
        "messageAttributes",
        "md5OfMessageAttributes",
        "md5OfBody",
        "eventSource",
        "eventSourceARN",
        "awsRegion",
    ]
    assert record["messageId"] == sent["MessageId"] == m.id
    assert record["receiptHandle"] == m.token and record["receiptHandle"]
    assert record["body"] == '{"order": 42}'
    assert m.body == b'{"order": 42}'
    assert record["md5OfBody"] == hashlib.md5(b'{"order": 42}').hexdigest()
    assert record["md5OfBody"] == sent["MD5OfMessageBody"]
    assert record["md5OfMessageAttributes"] == sent["MD5OfMessageAttributes"]
    attributes = record["attributes"]
    assert attributes["ApproximateReceiveCount"] == "1"
    assert attributes["SenderId"]
    sent_ms = int(attributes["SentTimestamp"])
    assert abs(sent_ms - before_ms) < 5000
    assert int(attributes["ApproximateFirstReceiveTimestamp"]) >= sent_ms
    assert m.sent_at == pytest.approx(sent_ms / 1000)
    assert record["messageAttributes"] == {
        "text": {
            "stringValue": "hello",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        },
        "count": {
            "stringValue": "3",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Number",
        },
        "blob": {
            "binaryValue": "AAH/",
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "Binary",
        },
    }
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"] == queues.arn(name)
    assert record["awsRegion"] == REGION
    # The event is JSON as the function gets it.
    assert json.loads(json.dumps(event)) == event


def test_fifo_records_carry_group_sequence_and_dedup(
    endpoint: str, sqs: Any, queues: Queues
) -> None:
    name, url = queues.make(fifo=True)
    sqs.send_message(
        QueueUrl=url, MessageBody="x", MessageGroupId="g1", MessageDeduplicationId="d1"
    )

    async def scenario() -> list[Message]:
        src = await opened(endpoint, name)
        try:
            return await src.receive(10, 5)
        finally:
            await src.close()

    (m,) = run(scenario())
    assert m.record["attributes"]["MessageGroupId"] == "g1"
    assert m.record["attributes"]["MessageDeduplicationId"] == "d1"
    assert m.record["attributes"]["SequenceNumber"].isdigit()


def test_a_batch_larger_than_ten_is_filled_from_several_calls(
    endpoint: str, sqs: Any, queues: Queues
) -> None:
    name, url = queues.make()
    ids = set(_send(sqs, url, 25))

    async def scenario() -> tuple[list[Message], int | None]:
        src = await opened(endpoint, name)
        try:
            got = await src.receive(25, 2)
            more = await _receive_all(src, 25 - len(got), 3)
            return got + more, await src.backlog()
        finally:
            await src.close()

    got, backlog = run(scenario())
    assert {m.id for m in got} == ids
    assert len(got) == 25
    assert backlog == 0


def test_backlog_counts_waiting_messages(endpoint: str, sqs: Any, queues: Queues) -> None:
    name, url = queues.make()
    _send(sqs, url, 3)

    async def scenario() -> int | None:
        src = await opened(endpoint, name)
        try:
            return await src.backlog()
        finally:
            await src.close()

    assert run(scenario()) == 3


# -- settling -------------------------------------------------------------------------


def test_acknowledge_deletes(endpoint: str, sqs: Any, queues: Queues) -> None:
    name, url = queues.make()
    _send(sqs, url, 12)

    async def scenario() -> None:
        src = await opened(endpoint, name)
        try:
            got = await _receive_all(src, 12)
            assert len(got) == 12
            await src.acknowledge(got)
        finally:
            await src.close()

    run(scenario())
    assert queues.counts(url) == (0, 0)


def test_release_leaves_the_message_to_reappear_after_the_visibility_timeout(
    endpoint: str, sqs: Any, queues: Queues
) -> None:
    name, url = queues.make(VisibilityTimeout=2)
    (sent,) = _send(sqs, url, 1)

    async def scenario() -> tuple[list[Message], float, list[Message]]:
        src = await opened(endpoint, name)
        try:
            (m,) = await src.receive(10, 5)
            released = time.monotonic()
            await src.release([m])
            # Not handed back at once: the visibility timeout runs its course.
            assert await src.receive(10, 0) == []
            again = await src.receive(10, 6)
            return [m], time.monotonic() - released, again
        finally:
            await src.close()

    first, after, again = run(scenario())
    assert after >= 1.5
    assert [m.id for m in again] == [sent]
    assert again[0].record["attributes"]["ApproximateReceiveCount"] == "2"
    assert again[0].token != first[0].token


def test_redrive_policy_moves_the_message_to_the_dead_letter_queue(
    endpoint: str, sqs: Any, queues: Queues
) -> None:
    dlq_name, dlq_url = queues.make()
    dlq_arn = queues.arn(dlq_name)
    name, url = queues.make(
        VisibilityTimeout=1,
        RedrivePolicy=json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 2}),
    )
    (sent,) = _send(sqs, url, 1)

    async def scenario() -> list[int]:
        src = await opened(endpoint, name)
        counts = []
        try:
            for _ in range(2):
                (m,) = await src.receive(10, 5)
                counts.append(int(m.record["attributes"]["ApproximateReceiveCount"]))
                await src.release([m])
                await asyncio.sleep(1.2)
            # The third receive finds it over maxReceiveCount: SQS moved it away.
            assert await src.receive(10, 1) == []
            return counts
        finally:
            await src.close()

    assert run(scenario()) == [1, 2]
    moved = sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=2)["Messages"]
    assert [m["MessageId"] for m in moved] == [sent]


def test_heartbeat_keeps_a_held_message_invisible_until_settled(
    endpoint: str, sqs: Any, queues: Queues
) -> None:
    name, url = queues.make(VisibilityTimeout=2)
    (sent,) = _send(sqs, url, 1)

    def other_consumer(wait: int) -> list[str]:
        got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=wait).get("Messages", [])
        return [m["MessageId"] for m in got]

    async def scenario() -> tuple[list[str], list[str]]:
        src = await opened(endpoint, name)
        try:
            (m,) = await src.receive(10, 5)
            # Held for more than twice the visibility timeout: nobody else gets it.
            meanwhile = await asyncio.to_thread(other_consumer, 5)
            await src.release([m])
            # Released: no longer extended, so it comes back within the timeout.
            return meanwhile, await asyncio.to_thread(other_consumer, 4)
        finally:
            await src.close()

    meanwhile, after = run(scenario())
    assert meanwhile == []
    assert after == [sent]


def test_heartbeat_stops_at_close(endpoint: str, sqs: Any, queues: Queues) -> None:
    name, url = queues.make(VisibilityTimeout=2)
    (sent,) = _send(sqs, url, 1)

    async def scenario() -> None:
        src = await opened(endpoint, name)
        try:
            assert len(await src.receive(10, 5)) == 1
        finally:
            await src.close()

    run(scenario())
    started = time.monotonic()
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5).get("Messages", [])
    assert [m["MessageId"] for m in got] == [sent]
    assert time.monotonic() - started < 4


def test_batch_item_failures_leave_exactly_the_failed(
    endpoint: str, sqs: Any, queues: Queues
) -> None:
    name, url = queues.make(VisibilityTimeout=1)
    ids = _send(sqs, url, 3)

    async def scenario() -> list[Message]:
        src = await opened(endpoint, name)
        try:
            got = await _receive_all(src, 3)
            response = json.dumps({"batchItemFailures": [{"itemIdentifier": ids[1]}]})
            failed = src.failed_ids(response.encode(), got)
            assert failed == {ids[1]}
            await src.acknowledge([m for m in got if m.id not in failed])
            await src.release([m for m in got if m.id in failed])
            await asyncio.sleep(1.2)
            return await _receive_all(src, 3, 2)
        finally:
            await src.close()

    again = run(scenario())
    assert [m.id for m in again] == [ids[1]]


def test_fifo_failure_holds_back_the_rest_of_its_group(
    endpoint: str, sqs: Any, queues: Queues
) -> None:
    name, url = queues.make(fifo=True, VisibilityTimeout=1)
    sent: dict[str, str] = {}
    for body, group in (("a1", "A"), ("b1", "B"), ("a2", "A"), ("a3", "A"), ("b2", "B")):
        sent[body] = sqs.send_message(
            QueueUrl=url, MessageBody=body, MessageGroupId=group, MessageDeduplicationId=body
        )["MessageId"]

    async def scenario() -> None:
        src = await opened(endpoint, name)
        try:
            got = await src.receive(10, 5)
            assert [m.record["body"] for m in got] == ["a1", "b1", "a2", "a3", "b2"]
            # The function says only a2 failed; a3 must not overtake it.
            failed = src.failed_ids({"batchItemFailures": [{"itemIdentifier": sent["a2"]}]}, got)
            assert failed == {sent["a2"], sent["a3"]}
            await src.acknowledge([m for m in got if m.id not in failed])
            await src.release([m for m in got if m.id in failed])
        finally:
            await src.close()

    run(scenario())
    # a2 and a3 are still in the queue (in flight until their visibility timeout), every
    # other message is deleted. (Which of them SQS hands out first is SQS's business: real
    # SQS keeps the group's order; moto 5 hands out a3 first here, so it is not asserted.)
    assert sum(queues.counts(url)) == 2


def test_a_delete_that_fails_is_logged_not_raised(
    endpoint: str, sqs: Any, queues: Queues, caplog: pytest.LogCaptureFixture
) -> None:
    # A receipt handle SQS no longer takes (it expired, the message was received anew):
    # moto answers a made-up one as SQS answers an invalid one, ReceiptHandleIsInvalid.
    name, url = queues.make()
    _send(sqs, url, 1)

    async def scenario() -> None:
        src = await opened(endpoint, name)
        try:
            (m,) = await src.receive(10, 5)
            stale = Message(id="gone", body=b"", record={}, token="no-longer-valid")
            await src.acknowledge([stale, m])
        finally:
            await src.close()

    with caplog.at_level(logging.WARNING, logger="lamina.events.sources.sqs"):
        run(scenario())
    warnings = [r.getMessage() for r in caplog.records if "could not delete" in r.getMessage()]
    assert len(warnings) == 1
    assert "ReceiptHandleIsInvalid" in warnings[0]
    assert queues.counts(url) == (0, 0)  # the good one was deleted all the same


def test_close_during_a_long_poll_is_prompt_and_loses_nothing(
    endpoint: str, sqs: Any, queues: Queues
) -> None:
    name, url = queues.make(VisibilityTimeout=1)

    async def scenario() -> float:
        src = await opened(endpoint, name)
        poll = asyncio.create_task(src.receive(10, 5))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        poll.cancel()
        with pytest.raises(asyncio.CancelledError):
            await poll
        await src.close()
        return time.monotonic() - started

    assert run(scenario()) < 1.0
    (sent,) = _send(sqs, url, 1)
    # A server that does not notice the closed connection (moto) may still lease this message
    # to the abandoned poll: then it is back after the visibility timeout. Not lost either way.
    got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10).get("Messages", [])
    assert [m["MessageId"] for m in got] == [sent]


def test_queue_visibility_timeout(endpoint: str, queues: Queues) -> None:
    name, _ = queues.make(VisibilityTimeout=45)
    assert run(queue_visibility_timeout(endpoint, f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}")) == 45
    with pytest.raises(SourceUnavailable, match="does not exist"):
        run(queue_visibility_timeout(endpoint, f"arn:aws:sqs:{REGION}:{ACCOUNT}:missing-{name}"))


def test_close_twice_and_use_after_close(endpoint: str, queues: Queues) -> None:
    name, _ = queues.make()

    async def scenario() -> None:
        src = await opened(endpoint, name)
        await src.close()
        await src.close()
        with pytest.raises(SourceUnavailable, match="closed"):
            await src.receive(1, 0)

    run(scenario())


# -- problems -------------------------------------------------------------------------


def _open_error(src: SqsSource) -> str:
    async def scenario() -> str:
        try:
            await src.open()
        except SourceUnavailable as e:
            return str(e)
        finally:
            await src.close()
        raise AssertionError("open() succeeded")

    return run(scenario())


def test_missing_queue(endpoint: str) -> None:
    message = _open_error(source(endpoint, "no-such-queue"))
    assert "no-such-queue" in message
    assert "does not exist" in message
    assert endpoint in message


def test_unreachable_endpoint() -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    message = _open_error(source(endpoint, "q"))
    assert f"cannot reach the SQS endpoint {endpoint}" in message
    assert time.monotonic() - started < 10


def test_no_credentials(endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    message = _open_error(source(endpoint, "q"))
    assert "no AWS credentials" in message
    assert "AWS_ACCESS_KEY_ID" in message


@pytest.fixture(scope="module")
def iam_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Any]]:
    """A moto that checks signatures and IAM policies (after a first unchecked call, which
    makes a user whose key may only read a queue it creates)."""
    with moto_server(tmp_path_factory.mktemp("moto-iam"), INITIAL_NO_AUTH_ACTION_COUNT="4") as url:
        admin = {"endpoint_url": url, "region_name": REGION}
        iam = boto3.client("iam", aws_access_key_id="a", aws_secret_access_key="a", **admin)
        iam.create_user(UserName="reader")
        iam.put_user_policy(
            UserName="reader",
            PolicyName="only-get-url",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Action": "sqs:GetQueueUrl", "Resource": "*"}
                    ],
                }
            ),
        )
        key = iam.create_access_key(UserName="reader")["AccessKey"]
        iam.close()
        sqs = boto3.client("sqs", aws_access_key_id="a", aws_secret_access_key="a", **admin)
        sqs.create_queue(QueueName="guarded")
        sqs.close()
        yield url, key


def test_bad_credentials_and_denied_actions(
    iam_endpoint: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, key = iam_endpoint
    message = _open_error(source(url, "guarded"))
    assert f"the SQS endpoint {url} refused Lamina's credentials" in message
    assert "InvalidClientTokenId" in message

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    message = _open_error(source(url, "guarded"))
    # The key may find the queue but not read its attributes.
    assert "GetQueueAttributes" in message or "GetQueueUrl" in message
    assert "denied" in message
    assert "guarded" in message
