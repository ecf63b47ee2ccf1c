"""Asynchronous invocation (InvocationType=Event, InvokeAsync): accepted durably with 202,
run through the scheduler, retried on function errors, held back while throttled, dropped
past its maximum age, and reported to destinations and dead-letter targets."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.conftest import SIGNED_HTTP, Functions, Server, seen, wait_for, wait_seen

pytestmark = pytest.mark.control_plane

# Back-offs at this scale: retries after 0.3 s and 0.6 s; throttled events from 10 ms up
# to 1.5 s.
BASE_DELAY = 0.3

RECORDER = """
import hashlib, json, time
SEEN = {}
def handler(event, context):
    rid = context.aws_request_id
    SEEN[rid] = SEEN.get(rid, 0) + 1
    shown = event
    if isinstance(event, str) and len(event) > 4096:
        # A log event holds at most 256 KB: a digest stands for a big payload.
        shown = {"len": len(event), "sha256": hashlib.sha256(event.encode()).hexdigest()}
    print("SEEN " + json.dumps({
        "rid": rid, "event": shown, "n": SEEN[rid], "t": time.time(),
        "version": context.function_version, "arn": context.invoked_function_arn,
    }))
    if isinstance(event, dict):
        if event.get("fail"):
            raise ValueError("failed on purpose")
        if event.get("fail_times", 0) >= SEEN[rid]:
            raise ValueError("not yet")
        if event.get("sleep"):
            time.sleep(event["sleep"])
    return {"done": rid}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    base = tmp_path_factory.mktemp("async")
    srv = Server(data_dir=base / "data", extra_args=("--retry-base-delay", str(BASE_DELAY))).start()
    yield srv
    assert srv.stop() == 0, srv.log()


@pytest.fixture(scope="module")
def lam(server: Server) -> Any:
    return server.client()


@pytest.fixture
def functions(lam: Any) -> Iterator[Functions]:
    f = Functions(lam)
    yield f
    f.cleanup()


def queue(server: Server) -> dict[str, Any]:
    data: dict[str, Any] = SIGNED_HTTP.get(server.endpoint + "/lamina/async").json()
    return data


def settled(server: Server, name: str) -> bool:
    return name not in queue(server)["functions"]


def recorder(functions: Functions, **kw: Any) -> str:
    name: str = functions.create(RECORDER, **kw)["FunctionName"]
    return name


def send(lam: Any, name: str, event: Any, **kw: Any) -> str:
    resp = lam.invoke(
        FunctionName=name, InvocationType="Event", Payload=json.dumps(event).encode(), **kw
    )
    assert resp["StatusCode"] == 202
    assert resp["Payload"].read() == b""
    rid: str = resp["ResponseMetadata"]["RequestId"]
    return rid


# -- accepting ---------------------------------------------------------------------------


def test_event_is_accepted_with_202_and_runs_under_its_request_id(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = recorder(functions)
    rid = send(lam, name, {"hello": "world"})
    (record,) = wait_seen(server, name, 1)
    assert record["rid"] == rid
    assert record["event"] == {"hello": "world"}
    assert record["n"] == 1
    wait_for(lambda: settled(server, name), message="the queue to empty")
    time.sleep(0.5)
    assert len(seen(server, name)) == 1  # a success is not run again


def test_invoke_async_is_accepted_and_runs(functions: Functions, lam: Any, server: Server) -> None:
    name = recorder(functions)
    resp = lam.invoke_async(FunctionName=name, InvokeArgs=b'{"old": "api"}')
    assert resp["Status"] == 202
    rid = resp["ResponseMetadata"]["RequestId"]
    (record,) = wait_seen(server, name, 1)
    assert record["rid"] == rid and record["event"] == {"old": "api"}


def test_empty_payload_is_an_empty_object(functions: Functions, lam: Any, server: Server) -> None:
    name = recorder(functions)
    lam.invoke(FunctionName=name, InvocationType="Event")
    (record,) = wait_seen(server, name, 1)
    assert record["event"] == {}


def test_payload_limit_is_256_kb(functions: Functions, lam: Any, server: Server) -> None:
    name = recorder(functions)
    limit = 256 * 1024
    at_limit = json.dumps("x" * (limit - 2)).encode()
    assert len(at_limit) == limit
    accepted_before = queue(server)["accepted"]
    with pytest.raises(lam.exceptions.RequestTooLargeException) as e:
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=at_limit + b" ")
    assert "262144" in str(e.value)
    with pytest.raises(lam.exceptions.RequestTooLargeException):
        lam.invoke_async(FunctionName=name, InvokeArgs=at_limit + b" ")
    assert queue(server)["accepted"] == accepted_before  # nothing was stored
    big = "x" * (limit - 2)
    send(lam, name, big)
    (record,) = wait_seen(server, name, 1)
    assert record["event"] == {
        "len": limit - 2,
        "sha256": hashlib.sha256(big.encode()).hexdigest(),
    }


def test_bad_requests_are_refused_before_anything_is_stored(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = recorder(functions)
    accepted_before = queue(server)["accepted"]
    with pytest.raises(lam.exceptions.InvalidRequestContentException):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{not json")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name + "-missing", InvocationType="Event", Payload=b"{}")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}", Qualifier="7")
    with pytest.raises(lam.exceptions.ResourceNotFoundException):
        lam.invoke_async(FunctionName=name + "-missing", InvokeArgs=b"{}")
    assert queue(server)["accepted"] == accepted_before


# -- retries -------------------------------------------------------------------------------


def test_function_error_is_retried_twice_with_growing_back_off(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = recorder(functions)
    rid = send(lam, name, {"fail": True})
    records = wait_seen(server, name, 3)
    assert [r["rid"] for r in records] == [rid] * 3
    # Lambda's back-off (1 then 2 minutes), scaled: at least 0.3 s, then at least 0.6 s.
    assert records[1]["t"] - records[0]["t"] >= BASE_DELAY * 0.95
    assert records[2]["t"] - records[1]["t"] >= 2 * BASE_DELAY * 0.95
    wait_for(lambda: settled(server, name), message="the event to be given up")
    time.sleep(1.0)
    assert len(seen(server, name)) == 3
    (dropped,) = [d for d in queue(server)["droppedEvents"] if d["requestId"] == rid]
    assert dropped["reason"] == "RetriesExhausted"
    assert dropped["attempts"] == 3
    assert dropped["detail"] == "ValueError"


@pytest.mark.parametrize("retries", [0, 1])
def test_maximum_retry_attempts(
    functions: Functions, lam: Any, server: Server, retries: int
) -> None:
    name = recorder(functions)
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=retries)
    send(lam, name, {"fail": True})
    wait_seen(server, name, retries + 1)
    wait_for(lambda: settled(server, name), message="the event to be given up")
    time.sleep(2 * BASE_DELAY + 0.5)
    assert len(seen(server, name)) == retries + 1


def test_a_retry_that_succeeds_ends_the_event(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = recorder(functions)
    rid = send(lam, name, {"fail_times": 1})
    records = wait_seen(server, name, 2)
    assert [r["n"] for r in records] == [1, 2] and {r["rid"] for r in records} == {rid}
    wait_for(lambda: settled(server, name), message="the queue to empty")
    time.sleep(2 * BASE_DELAY + 0.5)
    assert len(seen(server, name)) == 2


def test_timeout_is_retried(functions: Functions, lam: Any, server: Server) -> None:
    name = recorder(functions, Timeout=1)
    lam.put_function_event_invoke_config(FunctionName=name, MaximumRetryAttempts=1)
    send(lam, name, {"sleep": 3})
    wait_seen(server, name, 2, timeout=30)


# -- throttling ----------------------------------------------------------------------------


def test_throttled_event_waits_and_runs_when_concurrency_returns(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = recorder(functions)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    rids = {send(lam, name, {"n": i}) for i in range(3)}
    time.sleep(1.0)
    assert seen(server, name) == []
    state = queue(server)["functions"][name]
    assert state["depth"] == 3 and state["oldestAgeSeconds"] >= 0.9
    health = httpx.get(server.endpoint + "/health").json()["asyncQueue"]
    assert health["functions"][name]["depth"] == 3
    metrics = httpx.get(server.endpoint + "/metrics").text
    assert f'lamina_async_queue_depth{{function="{name}"}} 3.0' in metrics
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
    records = wait_seen(server, name, 3)
    assert {r["rid"] for r in records} == rids
    assert all(r["n"] == 1 for r in records)  # throttles are not attempts
    wait_for(lambda: settled(server, name), message="the queue to empty")
    metrics = httpx.get(server.endpoint + "/metrics").text
    assert f'lamina_async_queue_depth{{function="{name}"}} 0.0' in metrics
    assert f'lamina_async_events_total{{function="{name}",outcome="succeeded"}} 3.0' in metrics


def test_reserved_concurrency_bounds_async_runs(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = recorder(functions)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=2)
    for i in range(8):
        send(lam, name, {"sleep": 0.3, "i": i})
    records = wait_seen(server, name, 8)
    wait_for(lambda: settled(server, name), message="the queue to empty")
    # Each run lasts 0.3 s: at no start time were more than 2 running.
    starts = [r["t"] for r in records]
    for t in starts:
        assert sum(1 for s in starts if s <= t < s + 0.3) <= 2


def test_a_backlog_of_slow_events_scales_out(
    functions: Functions, lam: Any, server: Server
) -> None:
    """A lane starts 4 attempts at a time and scales out while a slow function's events
    wait, as Lambda scales a function out for its queue."""
    name = recorder(functions)
    # Scale-out waits while the host's CPU is busy: 2 s runs give it many chances to look.
    for i in range(16):
        send(lam, name, {"sleep": 2.0, "i": i})
    records = wait_seen(server, name, 16, timeout=60)
    starts = [r["t"] for r in records]
    peak = max(sum(1 for s in starts if s <= t < s + 2.0) for t in starts)
    assert peak > 4


# -- destinations and dead letters ---------------------------------------------------------


def test_on_success_destination_gets_the_invocation_record(
    functions: Functions, lam: Any, server: Server
) -> None:
    target = recorder(functions)
    name = recorder(functions)
    target_arn = lam.get_function(FunctionName=target)["Configuration"]["FunctionArn"]
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnSuccess": {"Destination": target_arn}}
    )
    rid = send(lam, name, {"order": 42})
    (delivered,) = wait_seen(server, target, 1)
    record = delivered["event"]
    assert delivered["rid"] != rid
    assert record["version"] == "1.0"
    assert record["timestamp"].endswith("Z")
    context = record["requestContext"]
    assert context["requestId"] == rid
    assert context["condition"] == "Success"
    assert context["approximateInvokeCount"] == 1
    assert context["functionArn"].endswith(f":function:{name}:$LATEST")
    assert record["requestPayload"] == {"order": 42}
    assert record["responseContext"] == {"statusCode": 200, "executedVersion": "$LATEST"}
    assert record["responsePayload"] == {"done": rid}


def test_on_failure_destination_and_dead_letter_after_retries(
    functions: Functions, lam: Any, server: Server
) -> None:
    on_failure = recorder(functions)
    dead_letters = recorder(functions)
    arn = lam.get_function(FunctionName=on_failure)["Configuration"]["FunctionArn"]
    dlq_arn = lam.get_function(FunctionName=dead_letters)["Configuration"]["FunctionArn"]
    name = recorder(functions, DeadLetterConfig={"TargetArn": dlq_arn})
    lam.put_function_event_invoke_config(
        FunctionName=name,
        MaximumRetryAttempts=1,
        DestinationConfig={"OnFailure": {"Destination": arn}},
    )
    rid = send(lam, name, {"fail": True, "id": "x1"})
    (delivered,) = wait_seen(server, on_failure, 1)
    record = delivered["event"]
    assert record["requestContext"]["requestId"] == rid
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2
    assert record["requestPayload"] == {"fail": True, "id": "x1"}
    assert record["responseContext"] == {
        "statusCode": 200,
        "executedVersion": "$LATEST",
        "functionError": "Unhandled",
    }
    assert record["responsePayload"]["errorType"] == "ValueError"
    assert record["responsePayload"]["errorMessage"] == "failed on purpose"
    (letter,) = wait_seen(server, dead_letters, 1)
    assert letter["event"] == {"fail": True, "id": "x1"}  # the event itself, as a DLQ keeps it
    counts = queue(server)
    assert counts["dead_lettered"] >= 1 and counts["failed"] >= 1


def test_success_does_not_go_to_on_failure(functions: Functions, lam: Any, server: Server) -> None:
    on_failure = recorder(functions)
    arn = lam.get_function(FunctionName=on_failure)["Configuration"]["FunctionArn"]
    name = recorder(functions)
    lam.put_function_event_invoke_config(
        FunctionName=name, DestinationConfig={"OnFailure": {"Destination": arn}}
    )
    send(lam, name, {})
    wait_seen(server, name, 1)
    wait_for(lambda: settled(server, name), message="the queue to empty")
    time.sleep(0.5)
    assert seen(server, on_failure) == []


def test_alias_and_version_qualifiers(functions: Functions, lam: Any, server: Server) -> None:
    target = recorder(functions)
    target_arn = lam.get_function(FunctionName=target)["Configuration"]["FunctionArn"]
    name = recorder(functions)
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name="live", FunctionVersion=version)
    # The alias has its own config; the unqualified function's ($LATEST) has none.
    lam.put_function_event_invoke_config(
        FunctionName=name,
        Qualifier="live",
        DestinationConfig={"OnSuccess": {"Destination": target_arn}},
    )
    send(lam, name, {"via": "alias"}, Qualifier="live")
    send(lam, name, {"via": "latest"})
    (record,) = wait_seen(server, target, 1)
    assert record["event"]["requestPayload"] == {"via": "alias"}
    assert record["event"]["requestContext"]["functionArn"].endswith(f"{name}:live")
    assert record["event"]["responseContext"]["executedVersion"] == version
    runs = wait_seen(server, name, 2)
    assert {r["version"] for r in runs} == {version, "$LATEST"}
    time.sleep(0.5)
    assert len(seen(server, target)) == 1


def test_events_of_a_deleted_function_are_dropped(
    functions: Functions, lam: Any, server: Server
) -> None:
    name = recorder(functions)
    lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
    rid = send(lam, name, {})
    lam.delete_function(FunctionName=name)
    wait_for(lambda: settled(server, name), message="the event to be dropped")
    (dropped,) = [d for d in queue(server)["droppedEvents"] if d["requestId"] == rid]
    assert dropped["reason"] == "FunctionNotFound"


# -- durability ------------------------------------------------------------------------------


def _own_server(tmp_path: Path) -> Server:
    return Server(
        data_dir=tmp_path / "data", extra_args=("--retry-base-delay", str(BASE_DELAY))
    ).start()


def test_queued_events_survive_a_restart(tmp_path: Path) -> None:
    srv = _own_server(tmp_path)
    try:
        lam = srv.client()
        f = Functions(lam)
        name = recorder(f)
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
        rids = {send(lam, name, {"i": i}) for i in range(5)}
        assert srv.stop() == 0, srv.log()
        srv.start()
        assert queue(srv)["functions"][name]["depth"] == 5
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=5)
        assert {r["rid"] for r in wait_seen(srv, name, 5)} == rids
        wait_for(lambda: settled(srv, name), message="the queue to empty")
    finally:
        srv.stop()


def test_event_older_than_its_maximum_age_is_dropped_with_a_record(tmp_path: Path) -> None:
    """The server was down longer than the event's maximum age: it is not run, its
    OnFailure destination hears EventAgeExceeded, and the drop is recorded."""
    srv = _own_server(tmp_path)
    try:
        lam = srv.client()
        f = Functions(lam)
        target = recorder(f)
        arn = lam.get_function(FunctionName=target)["Configuration"]["FunctionArn"]
        name = recorder(f)
        lam.put_function_event_invoke_config(
            FunctionName=name,
            MaximumEventAgeInSeconds=60,
            DestinationConfig={"OnFailure": {"Destination": arn}},
        )
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=0)
        old = send(lam, name, {"age": "old"})
        young = send(lam, name, {"age": "young"})
        assert srv.stop() == 0, srv.log()
        with sqlite3.connect(srv.data_dir / "events.db") as db:
            db.execute("UPDATE events SET enqueued_at = enqueued_at - 61 WHERE id = ?", (old,))
        srv.start()
        lam.put_function_concurrency(FunctionName=name, ReservedConcurrentExecutions=1)
        (ran,) = wait_seen(srv, name, 1)
        assert ran["rid"] == young
        (record,) = wait_seen(srv, target, 1)
        assert record["event"]["requestContext"]["requestId"] == old
        assert record["event"]["requestContext"]["condition"] == "EventAgeExceeded"
        assert record["event"]["requestContext"]["approximateInvokeCount"] == 0  # never ran
        assert record["event"]["requestPayload"] == {"age": "old"}
        wait_for(lambda: settled(srv, name), message="the queue to empty")
        state = queue(srv)
        (dropped,) = [d for d in state["droppedEvents"] if d["requestId"] == old]
        assert dropped["reason"] == "EventAgeExceeded"
        assert state["expired"] == 1
        time.sleep(0.5)
        assert len(seen(srv, name)) == 1
    finally:
        srv.stop()
