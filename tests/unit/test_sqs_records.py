"""The SQS source's pure rules: Lambda's `aws:sqs` record shape, and how a
`ReportBatchItemFailures` response is read (AWS's success and failure conditions, the FIFO
group rule). The real-endpoint behaviour is in tests/integration/test_sqs_source.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from lamina.events.sources.api import Message
from lamina.events.sources.sqs import batch_item_failures, sqs_record

ARN = "arn:aws:sqs:eu-west-1:123456789012:orders"


def _raw(message_id: str, group: str | None = None, **extra: Any) -> dict[str, Any]:
    attributes = {
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1700000000000",
        "SenderId": "AIDAEXAMPLE",
        "ApproximateFirstReceiveTimestamp": "1700000000005",
    }
    if group is not None:
        attributes |= {
            "MessageGroupId": group,
            "SequenceNumber": "18849496460467696128",
            "MessageDeduplicationId": f"dedup-{message_id}",
        }
    return {
        "MessageId": message_id,
        "ReceiptHandle": f"handle-{message_id}",
        "MD5OfBody": "098f6bcd4621d373cade4e832627b4f6",
        "Body": "test",
        "Attributes": attributes,
        **extra,
    }


def _messages(*specs: tuple[str, str | None]) -> list[Message]:
    out = []
    for message_id, group in specs:
        record = sqs_record(_raw(message_id, group), ARN, "eu-west-1")
        out.append(Message(message_id, b"test", record, record["receiptHandle"]))
    return out


def test_record_has_lambdas_shape_and_spelling() -> None:
    raw = _raw(
        "m-1",
        MD5OfMessageAttributes="a5ed5b3a3a5b1d1f4d5c0f9d4f1e7b11",
        MessageAttributes={
            "text": {"StringValue": "hello", "DataType": "String"},
            "count": {"StringValue": "3", "DataType": "Number.int"},
            "blob": {"BinaryValue": b"\x00\xffdata", "DataType": "Binary"},
        },
    )
    assert sqs_record(raw, ARN, "eu-west-1") == {
        "messageId": "m-1",
        "receiptHandle": "handle-m-1",
        "body": "test",
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1700000000000",
            "SenderId": "AIDAEXAMPLE",
            "ApproximateFirstReceiveTimestamp": "1700000000005",
        },
        "messageAttributes": {
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
                "dataType": "Number.int",
            },
            "blob": {
                "binaryValue": "AP9kYXRh",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "Binary",
            },
        },
        "md5OfMessageAttributes": "a5ed5b3a3a5b1d1f4d5c0f9d4f1e7b11",
        "md5OfBody": "098f6bcd4621d373cade4e832627b4f6",
        "eventSource": "aws:sqs",
        "eventSourceARN": ARN,
        "awsRegion": "eu-west-1",
    }


def test_record_without_message_attributes_has_no_md5_of_them() -> None:
    record = sqs_record(_raw("m-1"), ARN, "eu-west-1")
    assert record["messageAttributes"] == {}
    assert "md5OfMessageAttributes" not in record


def test_fifo_attributes_are_passed_on() -> None:
    record = sqs_record(_raw("m-1", "g-1"), ARN + ".fifo", "eu-west-1")
    assert record["attributes"]["MessageGroupId"] == "g-1"
    assert record["attributes"]["MessageDeduplicationId"] == "dedup-m-1"
    assert record["attributes"]["SequenceNumber"] == "18849496460467696128"


@pytest.mark.parametrize(
    "response",
    [
        None,
        b"",
        b"null",
        {},
        {"batchItemFailures": None},
        {"batchItemFailures": []},
        {"statusCode": 200},
        json.dumps({"batchItemFailures": []}).encode(),
    ],
)
def test_complete_success(response: Any) -> None:
    # AWS: an empty or null batchItemFailures, an empty or null response: all succeeded.
    assert batch_item_failures(response, _messages(("a", None), ("b", None))) == set()


@pytest.mark.parametrize(
    "response",
    [
        b"{not json",
        "ok",
        b'"ok"',
        [{"itemIdentifier": "a"}],
        {"batchItemFailures": {"itemIdentifier": "a"}},
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"ItemIdentifier": "a"}]},
        {"batchItemFailures": [{"itemIdentifier": "not-in-batch"}]},
        {"batchItemFailures": [{"itemIdentifier": "a"}, "b"]},
        {"batchItemFailures": [{"itemIdentifier": 7}]},
    ],
)
def test_invalid_responses_fail_the_whole_batch(response: Any) -> None:
    # AWS: invalid JSON, an empty or null itemIdentifier, a bad key name, an unknown id.
    assert batch_item_failures(response, _messages(("a", None), ("b", None))) is None


def test_named_items_fail() -> None:
    messages = _messages(("a", None), ("b", None), ("c", None))
    response = {"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "c"}]}
    assert batch_item_failures(response, messages) == {"b", "c"}
    assert batch_item_failures(json.dumps(response).encode(), messages) == {"b", "c"}


def test_fifo_failure_fails_the_rest_of_its_group_only() -> None:
    messages = _messages(("a1", "A"), ("b1", "B"), ("a2", "A"), ("b2", "B"), ("a3", "A"))
    response = {"batchItemFailures": [{"itemIdentifier": "a2"}]}
    assert batch_item_failures(response, messages, fifo=True) == {"a2", "a3"}
    # The earlier message of the group succeeded; the other group is untouched.
    assert batch_item_failures(response, messages, fifo=False) == {"a2"}


def test_fifo_function_reporting_the_rest_itself_is_read_as_said() -> None:
    messages = _messages(("a1", "A"), ("a2", "A"), ("b1", "B"))
    response = {"batchItemFailures": [{"itemIdentifier": i} for i in ("a1", "a2", "b1")]}
    assert batch_item_failures(response, messages, fifo=True) == {"a1", "a2", "b1"}
