"""The invocation log's segment writer, its lookups and its retention (no server)."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lamina.models import InvokeRequest, InvokeResult
from lamina.observability.invocation_log import (
    RESPONSE_MAX_BYTES,
    InvocationLog,
    parse_duration,
    payload_of,
    segment_seconds,
    sweep_seconds,
)

ARN = "arn:aws:lambda:us-east-1:000000000000:function:f"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_log(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., InvocationLog]]:
    logs: list[InvocationLog] = []

    def make(retention_s: float = 60.0, max_bytes: int = 1 << 30, **kw: int) -> InvocationLog:
        log = InvocationLog(tmp_path / "replay", retention_s, max_bytes, clock=clock, **kw)
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close()


def request(rid: str, payload: bytes = b'{"a":1}', arn: str = ARN, **kw: Any) -> InvokeRequest:
    return InvokeRequest(request_id=rid, payload=payload, invoked_arn=arn, **kw)


def ok(payload: bytes = b'"done"', error: str | None = None) -> InvokeResult:
    return InvokeResult(
        payload=payload,
        executed_version="3",
        function_error=error,
        duration_ms=12.5,
        error_type="ValueError" if error else None,
    )


def test_a_record_is_found_with_its_request_and_outcome(
    make_log: Callable[..., InvocationLog],
) -> None:
    log = make_log()
    log.start()
    log.record(
        "f",
        "3",
        request(
            "r-1",
            arn=ARN + ":prod",
            client_context='{"custom":{"k":"v"}}',
            tenant_id="t1",
            trace_id="Root=1-2-3",
            source="Event",
            attempt=2,
        ),
        999_999.0,
        ok(b'{"errorType":"ValueError"}', "Unhandled"),
    )
    log.record("f", "3", request("r-2"), 999_999.5, ok())
    assert log.flush()
    found = log.find("r-1")
    assert found is not None
    assert found["functionName"] == "f"
    assert found["qualifier"] == "prod"
    assert found["source"] == "Event"
    assert found["attempt"] == 2
    assert found["clientContext"] == '{"custom":{"k":"v"}}'
    assert found["tenantId"] == "t1"
    assert found["traceId"] == "Root=1-2-3"
    assert payload_of(found) == b'{"a":1}'
    outcome = found["outcome"]
    assert outcome["status"] == "Unhandled"
    assert outcome["errorType"] == "ValueError"
    assert outcome["executedVersion"] == "3"
    assert outcome["durationMs"] == 12.5
    other = log.find("r-2")
    assert other is not None and other["qualifier"] is None
    assert other["outcome"]["status"] == "Success"
    assert log.find("r-3") is None


def test_the_last_attempt_is_answered(make_log: Callable[..., InvocationLog], clock: Clock) -> None:
    log = make_log(retention_s=3600)
    log.start()
    log.record("f", "1", request("r", attempt=1), clock.now, ok(b"1", "Unhandled"))
    assert log.flush()
    clock.now += 600  # the retry lands in a later segment
    log.record("f", "1", request("r", attempt=2), clock.now, ok(b"2"))
    assert log.flush()
    assert len(list((log.directory).iterdir())) == 2
    found = log.find("r")
    assert (
        found is not None
        and found["attempt"] == 2
        and payload_of(found["outcome"], "response") == b"2"
    )


def test_bytes_that_are_not_text_and_long_responses(make_log: Callable[..., InvocationLog]) -> None:
    log = make_log()
    log.start()
    blob = bytes(range(256))
    log.record("f", "1", request("r", payload=blob), 1.0e6, ok(b"x" * (RESPONSE_MAX_BYTES + 10)))
    log.record("f", "1", request("t", payload=b"{}"), 1.0e6, None, "TooManyRequestsException")
    assert log.flush()
    found = log.find("r")
    assert found is not None
    assert "payload" not in found and payload_of(found) == blob
    assert found["outcome"]["responseTruncated"] is True
    assert len(payload_of(found["outcome"], "response")) == RESPONSE_MAX_BYTES
    throttled = log.find("t")
    assert throttled is not None
    assert throttled["outcome"] == {
        "status": "Error",
        "errorType": "TooManyRequestsException",
        "executedVersion": "1",
    }


def test_files_are_private(make_log: Callable[..., InvocationLog]) -> None:
    old = os.umask(0o022)  # not the server's 077: the writer itself makes them private
    try:
        log = make_log()
        log.start()
        log.record("f", "1", request("r"), 1.0e6, ok())
        assert log.flush()
    finally:
        os.umask(old)
    assert stat.S_IMODE(log.directory.stat().st_mode) == 0o700
    (segment,) = log.directory.iterdir()
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600


def test_expired_records_are_not_answered_and_their_segments_go(
    make_log: Callable[..., InvocationLog], clock: Clock
) -> None:
    log = make_log(retention_s=8)  # segments of 2 s
    assert log.segment_s == 2.0
    log.start()
    log.record("f", "1", request("old"), clock.now, ok())
    assert log.flush()
    clock.now += 4
    log.record("f", "1", request("new"), clock.now, ok())
    assert log.flush()
    assert len(list(log.directory.iterdir())) == 2
    clock.now += 6  # "old" is 10 s old, "new" 6 s
    assert log.find("old") is None  # expired, although its segment is still there
    assert log.find("new") is not None
    assert log.sweep() == 1
    (left,) = log.directory.iterdir()
    assert b"new" in left.read_bytes()
    clock.now += 10
    assert log.find("new") is None
    assert log.sweep() == 1
    assert list(log.directory.iterdir()) == []


def test_the_writer_sweeps_by_itself(make_log: Callable[..., InvocationLog], clock: Clock) -> None:
    log = make_log(retention_s=1)  # swept every 0.25 s
    log.start()
    log.record("f", "1", request("r"), clock.now, ok())
    assert log.flush()
    assert len(list(log.directory.iterdir())) == 1
    clock.now += 5

    deadline = time.monotonic() + 5
    while list(log.directory.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(log.directory.iterdir()) == []


def test_the_oldest_segments_go_past_the_size_cap(
    make_log: Callable[..., InvocationLog], clock: Clock
) -> None:
    log = make_log(retention_s=3600, max_bytes=3000)  # segments of 5 min
    log.start()
    for i in range(4):
        log.record(
            "f", "1", request(f"r{i}", payload=json.dumps("x" * 900).encode()), clock.now, ok()
        )
        assert log.flush()
        clock.now += 300
    segments = sorted(log.directory.iterdir())
    assert sum(p.stat().st_size for p in segments) <= 3000
    assert log.find("r0") is None
    assert log.find("r3") is not None


def test_a_restart_counts_the_segments_already_there(
    make_log: Callable[..., InvocationLog], clock: Clock
) -> None:
    first = make_log(retention_s=3600, max_bytes=2500)
    first.start()
    first.record("f", "1", request("a", payload=json.dumps("x" * 900).encode()), clock.now, ok())
    first.record("f", "1", request("b", payload=json.dumps("x" * 900).encode()), clock.now, ok())
    first.close()
    clock.now += 300
    second = make_log(retention_s=3600, max_bytes=2500)
    second.start()
    second.record("f", "1", request("c", payload=json.dumps("x" * 900).encode()), clock.now, ok())
    assert second.flush()
    assert second.find("a") is None  # the old segment went: the cap counts it
    assert second.find("c") is not None


def test_a_full_queue_drops_and_counts_never_waits(make_log: Callable[..., InvocationLog]) -> None:
    log = make_log(queue_max=2)  # not started: nothing drains the queue
    for i in range(5):
        log.record("f", "1", request(f"r{i}"), 1.0e6, ok())
    assert log.dropped == 3
    log.start()
    assert log.flush()
    assert log.find("r1") is not None and log.find("r2") is None


def test_durations() -> None:
    assert parse_duration("24h") == 86400
    assert parse_duration("30m") == 1800
    assert parse_duration("2s") == 2
    assert parse_duration("0") == 0
    assert parse_duration("1.5d") == 129600
    for bad in ("", "h", "-1s", "1y", "1 2"):
        with pytest.raises(ValueError):
            parse_duration(bad)
    assert segment_seconds(2) == 1 and segment_seconds(86400) == 300
    assert sweep_seconds(2) == 0.5 and sweep_seconds(86400) == 60
