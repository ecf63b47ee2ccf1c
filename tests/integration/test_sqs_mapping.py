"""SQS event-source mappings end to end: a Lamina server started with `--sqs-endpoint` pointing
at moto's `moto_server` (the stand-in for AWS SQS or a self-hosted SQS-API server), mappings
made with boto3 on `arn:aws:sqs:us-east-1:123456789012:<queue>`, the function fed Lambda's
`aws:sqs` records, successes deleted, `batchItemFailures` leaving exactly the failed messages,
the queue's redrive policy dead-lettering, filters dropping, `MaximumConcurrency` bounding the
function's concurrency, a batch's trace linked to its messages' `AWSTraceHeader`s, a missing
queue reported as `PROBLEM:` then resumed, and a `kill -9` mid-run losing nothing.

The server finds its SQS credentials through the usual AWS chain: here the environment it is
started with (moto takes any key). The function appends what it got to a file on the host, so
these servers run the `process` backend.
"""

from __future__ import annotations

import collections
import json
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import Server, wait_for
from tests.integration import _sqs
from tests.integration._mappings import (
    create_recorder,
    delete_mapping,
    put_role,
    recorded,
    wait_recorded,
    wait_result,
    wait_state,
)
from tests.integration._sqs import ACCOUNT, REGION, Queues
from tests.integration.test_traces import Receiver

from lamina.runtimes.images import SdkState

pytestmark = pytest.mark.control_plane

# The moto SQS endpoint, a client of it and the test's queues (shared with test_sqs_source).
endpoint = _sqs.endpoint
sqs = _sqs.sqs
queues = _sqs.queues

ROLE_NAME = "sqs-reader"
ROLE_ARN = f"arn:aws:iam::000000000000:role/{ROLE_NAME}"
#: what an SQS mapping's execution role needs (AWS's AWSLambdaSQSQueueExecutionRole)
POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
            "Resource": "*",
        }
    ],
}
NO_SQS_ROLE_NAME = "no-sqs"
NO_SQS_POLICY = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": "*"}],
}
#: the key the server signs its SQS requests with (from its environment)
SERVER_ENV = {"AWS_ACCESS_KEY_ID": "sqs-poller", "AWS_SECRET_ACCESS_KEY": "sqs-secret"}

RECORDER = """
import json, os, time

def handler(event, context):
    started = time.time()
    time.sleep(float(os.environ.get("SLEEP", "0")))
    failures, lines = [], []
    for r in event["Records"]:
        count = int(r["attributes"]["ApproximateReceiveCount"])
        if r["body"] == "poison" or (r["body"].startswith("fail") and count == 1):
            failures.append({"itemIdentifier": r["messageId"]})
        lines.append(json.dumps({
            "id": r["messageId"], "body": r["body"], "count": count,
            "source": r["eventSource"], "arn": r["eventSourceARN"], "region": r["awsRegion"],
            "attributes": r["attributes"], "messageAttributes": r["messageAttributes"],
            "md5": r["md5OfBody"], "keys": sorted(r), "batch": len(event["Records"]),
            "start": started, "end": time.time(),
        }))
    fd = os.open(os.environ["RECORD"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, ("\\n".join(lines) + "\\n").encode())
    finally:
        os.close(fd)
    if any(r["body"].startswith("raise") and r["attributes"]["ApproximateReceiveCount"] == "1"
           for r in event["Records"]):
        raise RuntimeError("failing the whole batch once")
    return {"batchItemFailures": failures}
"""


def start_server(
    data_dir: Path, endpoint: str, port: int | None = None, extra: tuple[str, ...] = ()
) -> Server:
    """A server polling `endpoint`, with the SQS key in its environment."""
    args = ("--sandbox", "process", "--sqs-endpoint", endpoint, *extra)
    server = Server(data_dir=data_dir, extra_args=args)
    if port is not None:
        server.port = port
    with pytest.MonkeyPatch.context() as env:
        for k, v in SERVER_ENV.items():
            env.setenv(k, v)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        return server.start(60)


@pytest.fixture(scope="module")
def srv(
    tmp_path_factory: pytest.TempPathFactory, endpoint: str, runtime_images: dict[str, SdkState]
) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("sqs") / "data", endpoint)
    put_role(server, ROLE_NAME, POLICY)
    put_role(server, NO_SQS_ROLE_NAME, NO_SQS_POLICY)
    yield server
    assert server.stop() == 0, server.log()


def make_function(
    lam: Any, record: Path, role: str = ROLE_ARN, sleep: float = 0, timeout: int = 30
) -> str:
    variables = {"RECORD": str(record), "SLEEP": str(sleep)}
    return create_recorder(
        lam, RECORDER, prefix="sqs-", role=role, variables=variables, timeout=timeout
    )


def create_mapping(lam: Any, function: str, arn: str, *, wait: bool = True, **kw: Any) -> str:
    m = lam.create_event_source_mapping(FunctionName=function, EventSourceArn=arn, **kw)
    if wait:
        wait_state(lam, m["UUID"], "Enabled")
    return str(m["UUID"])


def test_function_fed_lambdas_sqs_records(srv: Server, queues: Queues, tmp_path: Path) -> None:
    lam = srv.client()
    name, url = queues.make()
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record)
    uuid_ = create_mapping(lam, function, queues.arn(name), BatchSize=10)
    mapping = lam.get_event_source_mapping(UUID=uuid_)
    assert mapping["EventSourceArn"] == queues.arn(name)
    assert mapping["BatchSize"] == 10
    sent = queues.send(
        url,
        "one",
        "two",
        "three",
        MessageAttributes={"kind": {"DataType": "String", "StringValue": "order"}},
    )
    got = wait_recorded(record, 3)
    assert sorted(r["body"] for r in got) == ["one", "three", "two"]
    for r in got:
        assert r["id"] == sent[r["body"]]
        assert r["source"] == "aws:sqs"
        assert r["arn"] == queues.arn(name)
        assert r["region"] == REGION
        assert r["count"] == 1
        assert {"SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp"} <= set(
            r["attributes"]
        )
        assert r["messageAttributes"] == {
            "kind": {
                "stringValue": "order",
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            }
        }
        assert r["keys"] == sorted(
            [
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
        )
    queues.wait_drained(url)  # successes deleted
    wait_result(lam, uuid_, "OK")
    listed = lam.list_event_source_mappings(EventSourceArn=queues.arn(name))
    assert [m["UUID"] for m in listed["EventSourceMappings"]] == [uuid_]
    delete_mapping(lam, uuid_)


def test_partial_batch_failure_leaves_exactly_the_failed_and_redrive_dead_letters(
    srv: Server, queues: Queues, tmp_path: Path
) -> None:
    lam = srv.client()
    dlq_name, dlq_url = queues.make()
    name, url = queues.make(
        VisibilityTimeout=2,
        RedrivePolicy=json.dumps(
            {"deadLetterTargetArn": queues.arn(dlq_name), "maxReceiveCount": 2}
        ),
    )
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record, timeout=2)
    # Sent before the mapping exists, so that the first batch holds all four.
    sent = queues.send(url, "ok-1", "fail-1", "ok-2", "poison")
    uuid_ = create_mapping(
        lam,
        function,
        queues.arn(name),
        BatchSize=10,
        MaximumBatchingWindowInSeconds=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    # ok-1, ok-2: once. fail-1: failed once, then succeeded on its second receive.
    # poison: failed on both receives, then SQS moved it to the dead-letter queue.
    got = wait_recorded(record, 6, timeout=60)
    queues.wait_drained(url, timeout=30)
    time.sleep(1.0)
    got = recorded(record)
    deliveries = collections.Counter(r["body"] for r in got)
    assert deliveries == {"ok-1": 1, "ok-2": 1, "fail-1": 2, "poison": 2}
    assert sorted((r["body"], r["count"]) for r in got if r["count"] > 1) == [
        ("fail-1", 2),
        ("poison", 2),
    ]
    dead = queues.sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=2).get("Messages", [])
    assert [m["MessageId"] for m in dead] == [sent["poison"]]
    delete_mapping(lam, uuid_)


def test_function_error_leaves_the_whole_batch(srv: Server, queues: Queues, tmp_path: Path) -> None:
    lam = srv.client()
    name, url = queues.make(VisibilityTimeout=2)
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record, timeout=2)
    queues.send(url, "raise-a", "b")
    uuid_ = create_mapping(
        lam,
        function,
        queues.arn(name),
        BatchSize=10,
        MaximumBatchingWindowInSeconds=1,
        FunctionResponseTypes=["ReportBatchItemFailures"],
    )
    wait_recorded(record, 4, timeout=60)
    queues.wait_drained(url, timeout=30)
    got = recorded(record)
    # The error failed both; both came back after the visibility timeout and succeeded.
    assert sorted((r["body"], r["count"]) for r in got) == [
        ("b", 1),
        ("b", 2),
        ("raise-a", 1),
        ("raise-a", 2),
    ]
    delete_mapping(lam, uuid_)


def test_without_report_batch_item_failures_the_response_is_not_read(
    srv: Server, queues: Queues, tmp_path: Path
) -> None:
    lam = srv.client()
    name, url = queues.make(VisibilityTimeout=2)
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record, timeout=2)
    queues.send(url, "fail-a", "b")
    uuid_ = create_mapping(
        lam, function, queues.arn(name), BatchSize=10, MaximumBatchingWindowInSeconds=1
    )
    wait_recorded(record, 2)
    queues.wait_drained(url, timeout=30)
    time.sleep(2.5)
    # The function named fail-a as failed, but the mapping does not read that: all deleted.
    assert sorted(r["body"] for r in recorded(record)) == ["b", "fail-a"]
    delete_mapping(lam, uuid_)


def test_filters_drop_and_delete(srv: Server, queues: Queues, tmp_path: Path) -> None:
    lam = srv.client()
    name, url = queues.make()
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record)
    uuid_ = create_mapping(
        lam,
        function,
        queues.arn(name),
        FilterCriteria={"Filters": [{"Pattern": json.dumps({"body": {"kind": ["keep"]}})}]},
    )
    bodies = [json.dumps({"kind": k, "i": i}) for i, k in enumerate(["keep", "drop"] * 4)]
    queues.send(url, *bodies, "not json")
    wait_recorded(record, 4)
    queues.wait_drained(url)  # the dropped ones were deleted, not left to come back
    time.sleep(1.0)
    assert sorted(json.loads(r["body"])["i"] for r in recorded(record)) == [0, 2, 4, 6]
    delete_mapping(lam, uuid_)


def _most_at_once(got: list[dict[str, Any]]) -> int:
    events = sorted(
        [(r["start"], 1) for r in got] + [(r["end"], -1) for r in got], key=lambda e: (e[0], e[1])
    )
    now = most = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_maximum_concurrency_bounds_the_function(
    srv: Server, queues: Queues, tmp_path: Path
) -> None:
    lam = srv.client()
    name, url = queues.make(VisibilityTimeout=30)
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record, sleep=0.7)
    queues.send(url, *(f"m{i}" for i in range(12)))
    uuid_ = create_mapping(
        lam, function, queues.arn(name), BatchSize=1, ScalingConfig={"MaximumConcurrency": 2}
    )
    got = wait_recorded(record, 12, timeout=60)
    assert sorted(r["body"] for r in got) == sorted(f"m{i}" for i in range(12))
    assert all(r["batch"] == 1 for r in got)
    assert _most_at_once(got) == 2
    queues.wait_drained(url)
    delete_mapping(lam, uuid_)


def test_role_without_sqs_permissions_is_refused(
    srv: Server, queues: Queues, tmp_path: Path
) -> None:
    # As on AWS: CreateEventSourceMapping checks the function's execution role.
    lam = srv.client()
    name, url = queues.make()
    record = tmp_path / "record.jsonl"
    role = f"arn:aws:iam::000000000000:role/{NO_SQS_ROLE_NAME}"
    function = make_function(lam, record, role=role)
    queues.send(url, "untouched")
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.create_event_source_mapping(FunctionName=function, EventSourceArn=queues.arn(name))
    assert "does not have permissions to call ReceiveMessage on SQS" in str(e.value)
    assert lam.list_event_source_mappings(FunctionName=function)["EventSourceMappings"] == []
    assert queues.counts(url) == (1, 0)  # not even received


def test_function_timeout_longer_than_the_visibility_timeout_is_refused(
    srv: Server, queues: Queues, tmp_path: Path
) -> None:
    # As on AWS: the queue's visibility timeout must cover the function's timeout.
    lam = srv.client()
    name, _ = queues.make(VisibilityTimeout=10)
    slow = make_function(lam, tmp_path / "slow.jsonl", timeout=30)
    with pytest.raises(lam.exceptions.InvalidParameterValueException) as e:
        lam.create_event_source_mapping(FunctionName=slow, EventSourceArn=queues.arn(name))
    assert e.value.response["Error"]["Message"] == (
        "Queue visibility timeout: 10 seconds is less than Function timeout: 30 seconds"
    )
    fast = make_function(lam, tmp_path / "fast.jsonl", timeout=10)
    uuid_ = create_mapping(lam, fast, queues.arn(name))
    # Updating the mapping to the slow function is refused the same way.
    with pytest.raises(lam.exceptions.InvalidParameterValueException, match="less than Function"):
        lam.update_event_source_mapping(UUID=uuid_, FunctionName=slow)
    assert lam.get_event_source_mapping(UUID=uuid_)["FunctionArn"].endswith(f":function:{fast}")
    delete_mapping(lam, uuid_)


def test_missing_queue_is_a_problem_then_resumes(
    srv: Server, endpoint: str, queues: Queues, tmp_path: Path
) -> None:
    lam = srv.client()
    name = f"q-{uuid.uuid4().hex[:12]}"
    record = tmp_path / "record.jsonl"
    function = make_function(lam, record)
    uuid_ = create_mapping(lam, function, queues.arn(name), wait=False)
    result = wait_result(lam, uuid_, "PROBLEM:")
    assert result == (
        f"PROBLEM: the SQS queue {name} (account {ACCOUNT}) at {endpoint} does not exist"
    )
    url = queues.sqs.create_queue(QueueName=name)["QueueUrl"]
    queues.urls.append(url)
    queues.send(url, "after")
    got = wait_recorded(record, 1, timeout=60)
    assert [r["body"] for r in got] == ["after"]
    wait_result(lam, uuid_, "OK")
    delete_mapping(lam, uuid_)


MESSAGES = 600


def test_a_batch_links_to_its_messages_traces(
    queues: Queues, endpoint: str, tmp_path: Path, runtime_images: dict[str, SdkState]
) -> None:
    """Messages sent with an `AWSTraceHeader` (sampled): the function sees each header in its
    record's attributes, and the batch's `Invoke` span, exported over OTLP, links to each
    message's span (OTLP `links`), as Lambda links a consumer to its producers."""
    receiver = Receiver()
    server = start_server(tmp_path / "data", endpoint, extra=("--otlp-endpoint", receiver.endpoint))
    try:
        put_role(server, ROLE_NAME, POLICY)
        lam = server.client()
        name, url = queues.make()
        record = tmp_path / "record.jsonl"
        function = make_function(lam, record)
        create_mapping(lam, function, queues.arn(name), BatchSize=10)
        upstream = {}
        for body in ("first", "second"):
            root = f"1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}"
            parent = uuid.uuid4().hex[:16]
            header = f"Root={root};Parent={parent};Sampled=1"
            queues.send(
                url,
                body,
                MessageSystemAttributes={
                    "AWSTraceHeader": {"DataType": "String", "StringValue": header}
                },
            )
            upstream[body] = (header, (root[2:].replace("-", ""), parent))
        got = wait_recorded(record, 2)
        assert {r["body"]: r["attributes"]["AWSTraceHeader"] for r in got} == {
            body: header for body, (header, _) in upstream.items()
        }

        def linked() -> set[tuple[str, str]] | None:
            with receiver.lock:
                spans = [s for s in receiver.spans if s["name"] == f"Invoke {function}"]
            links = {
                (link["traceId"], link["spanId"]) for s in spans for link in s.get("links", [])
            }
            return links if len(links) == 2 else None

        assert wait_for(linked, 20, "the batch's links") == {link for _, link in upstream.values()}
    finally:
        assert server.stop() == 0, server.log()
        receiver.close()


def test_kill_9_during_a_run_loses_nothing(
    tmp_path: Path, endpoint: str, queues: Queues, runtime_images: dict[str, SdkState]
) -> None:
    name, url = queues.make(VisibilityTimeout=3)
    bodies = [f"id-{i:05d}" for i in range(MESSAGES)]
    for start in range(0, MESSAGES, 10):
        queues.sqs.send_message_batch(
            QueueUrl=url,
            Entries=[
                {"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])
            ],
        )
    data_dir = tmp_path / "data"
    first = start_server(data_dir, endpoint)
    record = tmp_path / "record.jsonl"
    try:
        put_role(first, ROLE_NAME, POLICY)
        lam = first.client()
        function = make_function(lam, record, sleep=0.05, timeout=3)
        create_mapping(lam, function, queues.arn(name), BatchSize=10)
        wait_recorded(record, 100, timeout=120)  # well into the run
    finally:
        assert first.proc is not None
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait(30)
    seen_at_kill = len({r["body"] for r in recorded(record)})
    assert seen_at_kill < MESSAGES, "the run ended before the kill: nothing was tested"
    second = start_server(data_dir, endpoint, port=first.port)
    try:

        def all_seen() -> bool:
            return len({r["body"] for r in recorded(record)}) >= MESSAGES

        wait_for(all_seen, 180, f"all {MESSAGES} messages seen")
        queues.wait_drained(url, timeout=60)
    finally:
        assert second.stop() == 0, second.log()
    got = recorded(record)
    assert set(r["body"] for r in got) == set(bodies)  # none lost
    # At least once, as Lambda's: what was in flight at the kill comes again (at most the
    # pollers' batches then), and a duplicate now and then is allowed, never a flood.
    # (Keyed by message id: a send the client retried is another message.)
    deliveries: dict[str, list[int]] = collections.defaultdict(list)
    for r in got:
        deliveries[r["id"]].append(r["count"])
    again = {message_id: counts for message_id, counts in deliveries.items() if len(counts) > 1}
    assert len(again) <= 100, again
