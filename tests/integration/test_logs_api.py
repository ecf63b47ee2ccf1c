"""The CloudWatch Logs API, with boto3's `logs` client, over what functions print."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from tests.conftest import SIGNED_HTTP, Functions, Server

pytestmark = pytest.mark.control_plane

PRINTER = """
def handler(event, context):
    for i in range(event.get("lines", 0)):
        print(f"line {i}")
    for text in event.get("say", []):
        print(text)
    return "ok"
"""


@pytest.fixture(scope="module")
def logs(server: Server) -> Any:
    return server.client("logs")


def invoke(lam: Any, name: str, event: dict[str, Any]) -> None:
    resp = lam.invoke(FunctionName=name, Payload=json.dumps(event).encode())
    assert "FunctionError" not in resp, resp["Payload"].read()


def group_of(name: str) -> str:
    return f"/aws/lambda/{name}"


def all_events(logs: Any, group: str, **kwargs: Any) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for page in logs.get_paginator("filter_log_events").paginate(logGroupName=group, **kwargs):
        events += page["events"]
    return events


@pytest.fixture
def printer(functions: Functions, lam: Any) -> Iterator[str]:
    name: str = functions.create(PRINTER)["FunctionName"]
    yield name


def test_filter_finds_a_printed_phrase(logs: Any, lam: Any, printer: str) -> None:
    invoke(lam, printer, {"say": ["the quick brown fox", "ERROR the slow red fox"]})
    found = logs.filter_log_events(logGroupName=group_of(printer), filterPattern='"quick brown"')
    assert [e["message"].rstrip("\n") for e in found["events"]] == ["the quick brown fox"]
    event = found["events"][0]
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\]\w+", event["logStreamName"])
    assert isinstance(event["eventId"], str) and event["eventId"]
    assert event["ingestionTime"] >= event["timestamp"] > 0
    assert "nextToken" not in found

    messages = [e["message"] for e in all_events(logs, group_of(printer))]
    assert any(m.startswith("START RequestId:") for m in messages)
    assert any(m.startswith("END RequestId:") for m in messages)
    assert any(m.startswith("REPORT RequestId:") for m in messages)

    either = all_events(logs, group_of(printer), filterPattern="?quick ?slow")
    assert len(either) == 2
    excluded = all_events(logs, group_of(printer), filterPattern="fox -ERROR")
    assert [e["message"].rstrip("\n") for e in excluded] == ["the quick brown fox"]
    assert all_events(logs, group_of(printer), filterPattern="Quick") == []  # case-sensitive


def test_bad_filter_patterns_are_refused(logs: Any, lam: Any, printer: str) -> None:
    invoke(lam, printer, {"say": ["x"]})
    for pattern in ['"unclosed', '{ $.level = "ERROR"', "{ $.latency > fast }"]:
        with pytest.raises(ClientError) as e:
            logs.filter_log_events(logGroupName=group_of(printer), filterPattern=pattern)
        assert e.value.response["Error"]["Code"] == "InvalidParameterException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_describe_groups_and_streams(
    logs: Any, lam: Any, functions: Functions, printer: str
) -> None:
    other = functions.create(PRINTER)["FunctionName"]
    invoke(lam, printer, {"say": ["a"]})
    invoke(lam, other, {"say": ["b"]})

    groups = logs.describe_log_groups(logGroupNamePrefix=group_of(printer))["logGroups"]
    assert [g["logGroupName"] for g in groups] == [group_of(printer)]
    group = groups[0]
    assert group["arn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:{group_of(printer)}:*"
    assert group["creationTime"] > 0 and group["storedBytes"] > 0
    assert "retentionInDays" not in group

    # paging, one group a page, reaches both and repeats neither
    names: list[str] = []
    pages = logs.get_paginator("describe_log_groups").paginate(
        logGroupNamePrefix="/aws/lambda/", PaginationConfig={"PageSize": 1}
    )
    for page in pages:
        assert len(page["logGroups"]) <= 1
        names += [g["logGroupName"] for g in page["logGroups"]]
    assert len(names) == len(set(names))
    assert {group_of(printer), group_of(other)} <= set(names)

    streams = logs.describe_log_streams(logGroupName=group_of(printer))["logStreams"]
    assert streams
    stream = streams[0]
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\]\w+", stream["logStreamName"])
    assert stream["firstEventTimestamp"] <= stream["lastEventTimestamp"]
    assert stream["lastIngestionTime"] >= stream["firstEventTimestamp"]
    assert stream["arn"].endswith(f":log-stream:{stream['logStreamName']}")
    by_time = logs.describe_log_streams(
        logGroupName=group_of(printer), orderBy="LastEventTime", descending=True, limit=50
    )["logStreams"]
    assert {s["logStreamName"] for s in by_time} == {s["logStreamName"] for s in streams}
    prefixed = logs.describe_log_streams(
        logGroupName=group_of(printer), logStreamNamePrefix=stream["logStreamName"][:11]
    )["logStreams"]
    assert stream["logStreamName"] in [s["logStreamName"] for s in prefixed]
    assert (
        logs.describe_log_streams(logGroupName=group_of(printer), logStreamNamePrefix="1999/")[
            "logStreams"
        ]
        == []
    )

    with pytest.raises(ClientError) as e:
        logs.describe_log_streams(
            logGroupName=group_of(printer), orderBy="LastEventTime", logStreamNamePrefix="2"
        )
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.describe_log_streams(logGroupName="/aws/lambda/no-such-function")


def test_get_log_events_pages_both_ways(logs: Any, lam: Any, printer: str) -> None:
    invoke(lam, printer, {"lines": 25})
    group = group_of(printer)
    stream = logs.describe_log_streams(logGroupName=group)["logStreams"][0]["logStreamName"]
    everything = logs.get_log_events(logGroupName=group, logStreamName=stream, startFromHead=True)
    full = [(e["timestamp"], e["message"]) for e in everything["events"]]
    assert sum(m.startswith("line ") for _, m in full) == 25
    assert full == sorted(full, key=lambda e: e[0])

    # forward from the head, ten at a time
    forward: list[tuple[int, str]] = []
    page = logs.get_log_events(
        logGroupName=group, logStreamName=stream, startFromHead=True, limit=10
    )
    while page["events"]:
        assert len(page["events"]) <= 10
        assert page["nextForwardToken"].startswith("f/")
        assert page["nextBackwardToken"].startswith("b/")
        forward += [(e["timestamp"], e["message"]) for e in page["events"]]
        token = page["nextForwardToken"]
        page = logs.get_log_events(
            logGroupName=group, logStreamName=stream, nextToken=token, limit=10
        )
    assert forward == full
    # at the end the token comes back unchanged, with nothing in the page, every time
    assert page["nextForwardToken"] == token
    again = logs.get_log_events(logGroupName=group, logStreamName=stream, nextToken=token)
    assert again["events"] == [] and again["nextForwardToken"] == token

    # backward from the tail, ten at a time; pages are still oldest-first
    backward: list[tuple[int, str]] = []
    page = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=10)
    assert [(e["timestamp"], e["message"]) for e in page["events"]] == full[-10:]
    while page["events"]:
        backward = [(e["timestamp"], e["message"]) for e in page["events"]] + backward
        token = page["nextBackwardToken"]
        page = logs.get_log_events(
            logGroupName=group, logStreamName=stream, nextToken=token, limit=10
        )
    assert backward == full
    assert page["nextBackwardToken"] == token

    # a backward page's forward token leads back to the newer events
    tail = logs.get_log_events(logGroupName=group, logStreamName=stream, limit=10)
    older = logs.get_log_events(
        logGroupName=group, logStreamName=stream, nextToken=tail["nextBackwardToken"], limit=5
    )
    newer = logs.get_log_events(
        logGroupName=group, logStreamName=stream, nextToken=older["nextForwardToken"], limit=10
    )
    assert [(e["timestamp"], e["message"]) for e in newer["events"]] == full[-10:]

    with pytest.raises(ClientError) as e:
        logs.get_log_events(logGroupName=group, logStreamName=stream, nextToken="f/garbage")
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(logs.exceptions.ResourceNotFoundException):
        logs.get_log_events(logGroupName=group, logStreamName="2000/01/01/[$LATEST]nope")


def test_time_ranges(logs: Any, lam: Any, printer: str) -> None:
    invoke(lam, printer, {"lines": 5})
    group = group_of(printer)
    events = all_events(logs, group)
    times = sorted({e["timestamp"] for e in events})
    first, last = times[0], times[-1]
    assert all_events(logs, group, startTime=last + 1) == []
    assert all_events(logs, group, endTime=first) == []  # endTime is exclusive
    at_first = all_events(logs, group, startTime=first, endTime=first + 1)
    assert at_first and all(e["timestamp"] == first for e in at_first)
    assert len(all_events(logs, group, startTime=first, endTime=last + 1)) == len(events)

    stream = events[0]["logStreamName"]
    in_range = logs.get_log_events(
        logGroupName=group, logStreamName=stream, startTime=last, startFromHead=True
    )["events"]
    assert in_range and all(e["timestamp"] >= last for e in in_range)


def test_filter_pages_with_next_token(logs: Any, lam: Any, printer: str) -> None:
    invoke(lam, printer, {"lines": 12})
    group = group_of(printer)
    seen: list[str] = []
    kwargs: dict[str, Any] = {"logGroupName": group, "filterPattern": "line", "limit": 5}
    while True:
        page = logs.filter_log_events(**kwargs)
        assert len(page["events"]) <= 5
        seen += [e["eventId"] for e in page["events"]]
        if "nextToken" not in page:
            break
        kwargs["nextToken"] = page["nextToken"]
    assert len(seen) == len(set(seen)) == 12


def test_retention_and_delete(logs: Any, lam: Any, printer: str) -> None:
    invoke(lam, printer, {"say": ["keep me"]})
    group = group_of(printer)
    logs.put_retention_policy(logGroupName=group, retentionInDays=7)
    described = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert described["retentionInDays"] == 7
    with pytest.raises(ClientError) as e:
        logs.put_retention_policy(logGroupName=group, retentionInDays=4)
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    logs.delete_retention_policy(logGroupName=group)
    described = logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"][0]
    assert "retentionInDays" not in described

    logs.delete_log_group(logGroupName=group)
    assert logs.describe_log_groups(logGroupNamePrefix=group)["logGroups"] == []
    for call in (
        lambda: logs.filter_log_events(logGroupName=group),
        lambda: logs.delete_log_group(logGroupName=group),
        lambda: logs.put_retention_policy(logGroupName=group, retentionInDays=1),
    ):
        with pytest.raises(logs.exceptions.ResourceNotFoundException) as missing:
            call()
        assert missing.value.response["Error"]["Message"] == (
            "The specified log group does not exist."
        )


def test_wire_errors(server: Server) -> None:
    def post(target: str, body: bytes = b"{}") -> httpx.Response:
        return SIGNED_HTTP.post(
            server.endpoint + "/",
            content=body,
            headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
        )

    missing = post("Logs_20140328.DeleteLogGroup", b'{"logGroupName": "/aws/lambda/nope"}')
    assert missing.status_code == 400
    assert missing.headers["content-type"] == "application/x-amz-json-1.1"
    assert missing.json() == {
        "__type": "ResourceNotFoundException",
        "message": "The specified log group does not exist.",
    }
    unknown = post("Logs_20140328.CreateExportTask")
    assert unknown.status_code == 400
    assert unknown.json()["__type"] == "UnknownOperationException"
    assert post("SomethingElse.DescribeLogGroups").json()["__type"] == ("UnknownOperationException")
    assert post("Logs_20140328.DescribeLogGroups", b"{not json").json()["__type"] == (
        "SerializationException"
    )
    too_many = post("Logs_20140328.DescribeLogGroups", b'{"limit": 51}')
    assert too_many.status_code == 400
    assert too_many.json()["__type"] == "InvalidParameterException"
