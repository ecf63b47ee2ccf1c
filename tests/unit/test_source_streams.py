"""Lambda's stream delivery rules (`events/sources/streams.py`) against a fake stream and a
fake invoker: order, checkpoints, retries, bisect, record age, the failure record,
parallelization by key, tumbling windows, throttles, filters."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import pytest

from lamina.events.sources import stream_events
from lamina.events.sources.api import (
    MappingStats,
    Outcome,
    SourceUnavailable,
    StreamRecord,
)
from lamina.events.sources.streams import Pacing, deliver_stream
from lamina.mappings import EventSourceMapping, MappingState, SourceKind

ARN = "arn:aws:nats:us-east-1:000000000000:broker:local:stream/orders"
FAST = Pacing(
    function_error=(0.001, 0.002),
    throttle=(0.001, 0.002),
    destination=(0.001, 0.002),
    poll_s=0.01,
    lag_every_s=0.0,
)


def mapping(**kw: Any) -> EventSourceMapping:
    base = EventSourceMapping(
        uuid="u-1",
        function_arn="arn:aws:lambda:us-east-1:000000000000:function:f",
        function_name="f",
        qualifier=None,
        source_arn=ARN,
        kind=SourceKind.NATS,
        state=MappingState.ENABLED,
        state_reason="USER_INITIATED",
        last_modified=0.0,
        last_result="",
        batch_size=10,
        batching_window_s=0,
        starting_position="TRIM_HORIZON",
    )
    return replace(base, **kw)


class FakeStream:
    """A one-shard stream in memory: `read` hands out records after the last one read,
    `checkpoint` records what was checkpointed (and checks it goes forward in order)."""

    shard_id = stream_events.SHARD_ID

    def __init__(self, m: EventSourceMapping) -> None:
        self.m = m
        self.records: list[StreamRecord] = []
        self.position = 0
        self.checkpointed: list[str] = []
        self.arrived = asyncio.Event()
        self.fail_reads = False

    def add(self, data: bytes | str, key: str = "k", arrived_at: float | None = None) -> str:
        seq = str(len(self.records) + 1)
        body = data.encode() if isinstance(data, str) else data
        at = time.time() if arrived_at is None else arrived_at
        record = stream_events.stream_record(self.m, self.shard_id, seq, key, body, at)
        self.records.append(StreamRecord(seq, key, body, at, record))
        self.arrived.set()
        return seq

    async def open(self, starting_position: str, starting_timestamp: float | None) -> None:
        pass

    async def read(self, max_records: int, wait_s: float) -> list[StreamRecord]:
        if self.fail_reads:
            raise SourceUnavailable("the stream is gone")
        if self.position >= len(self.records):
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), wait_s)
            except TimeoutError:
                return []
        out = self.records[self.position : self.position + max_records]
        self.position += len(out)
        return out

    async def checkpoint(self, records: Sequence[StreamRecord]) -> None:
        for r in records:
            expected = str(len(self.checkpointed) + 1)
            assert r.sequence == expected, f"checkpoint of {r.sequence} before {expected}"
            self.checkpointed.append(r.sequence)

    async def lag(self) -> int | None:
        return len(self.records) - self.position

    async def close(self) -> None:
        pass


Handler = Callable[[dict[str, Any]], Awaitable[Outcome]]


class FakeInvoker:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.events: list[dict[str, Any]] = []
        self.failures: list[dict[str, Any]] = []
        self.destination_down = 0

    async def invoke(self, m: EventSourceMapping, event: dict[str, Any]) -> Outcome:
        self.events.append(event)
        return await self.handler(event)

    async def send_to_failure_destination(
        self, m: EventSourceMapping, record: dict[str, Any]
    ) -> None:
        if self.destination_down:
            self.destination_down -= 1
            raise SourceUnavailable("queue unreachable")
        self.failures.append(record)


def seqs(event: dict[str, Any]) -> list[str]:
    return [r["kinesis"]["sequenceNumber"] for r in event["Records"]]


def datas(event: dict[str, Any]) -> list[str]:
    return [base64.b64decode(r["kinesis"]["data"]).decode() for r in event["Records"]]


def ok(payload: Any = None) -> Outcome:
    return Outcome("ok", b"" if payload is None else json.dumps(payload).encode())


def error() -> Outcome:
    return Outcome("function_error", b'{"errorMessage":"boom"}', "Unhandled")


async def run_until(
    m: EventSourceMapping,
    stream: FakeStream,
    invoker: FakeInvoker,
    done: Callable[[], bool],
    within_s: float = 5.0,
) -> tuple[MappingStats, list[str]]:
    stats = MappingStats()
    reports: list[str] = []
    task = asyncio.create_task(
        deliver_stream(m, stream, invoker, reports.append, stats, pacing=FAST)
    )
    try:
        deadline = time.monotonic() + within_s
        while not done():
            if task.done():
                task.result()
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return stats, reports


def test_batches_in_order_and_checkpoint_after_success() -> None:
    async def main() -> None:
        m = mapping(batch_size=3)
        stream = FakeStream(m)
        for i in range(7):
            stream.add(f"r{i}")

        async def handler(event: dict[str, Any]) -> Outcome:
            # nothing of this batch is checkpointed while the function runs
            assert not set(seqs(event)) & set(stream.checkpointed)
            return ok()

        invoker = FakeInvoker(handler)
        stats, reports = await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 7)
        got = [s for e in invoker.events for s in seqs(e)]
        assert got == [str(i) for i in range(1, 8)]
        assert all(len(e["Records"]) <= 3 for e in invoker.events)
        assert stats.records_received == 7
        assert stats.batches == len(invoker.events)
        assert reports[-1] == "OK"
        assert stats.lag == 0

    asyncio.run(main())


def test_event_is_kinesis_shaped() -> None:
    async def main() -> None:
        m = mapping(role_arn="arn:aws:iam::000000000000:role/r")
        stream = FakeStream(m)
        stream.add(b"\x00\x01 bytes", key="pk", arrived_at=1700000000.5)
        invoker = FakeInvoker(lambda e: _async(ok()))
        await run_until(m, stream, invoker, lambda: bool(stream.checkpointed))
        [record] = invoker.events[0]["Records"]
        # with the role now known to the record builder
        assert record["kinesis"] == {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": "pk",
            "sequenceNumber": "1",
            "data": base64.b64encode(b"\x00\x01 bytes").decode(),
            "approximateArrivalTimestamp": 1700000000.5,
        }
        assert record["eventSource"] == "lamina:nats"
        assert record["eventVersion"] == "1.0"
        assert record["eventID"] == "shardId-000000000000:1"
        assert record["eventName"] == "lamina:nats:record"
        assert record["awsRegion"] == "us-east-1"
        assert record["eventSourceARN"] == ARN

    asyncio.run(main())


def test_record_carries_the_role_when_known() -> None:
    m = mapping(role_arn="arn:aws:iam::000000000000:role/r")
    r = stream_events.stream_record(m, "s", "1", "k", b"x", 1.0, m.role_arn)
    assert r["invokeIdentityArn"] == "arn:aws:iam::000000000000:role/r"


async def _async(o: Outcome) -> Outcome:
    return o


def test_function_error_retries_then_skips_without_destination() -> None:
    async def main() -> None:
        m = mapping(batch_size=2, maximum_retry_attempts=2)
        stream = FakeStream(m)
        for i in range(4):
            stream.add(f"r{i}")

        async def handler(event: dict[str, Any]) -> Outcome:
            return error() if "1" in seqs(event) else ok()

        invoker = FakeInvoker(handler)
        stats, reports = await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 4)
        first = [e for e in invoker.events if seqs(e) == ["1", "2"]]
        assert len(first) == 3  # the first try and 2 retries
        assert seqs(invoker.events[3]) == ["3", "4"]  # the shard waited for them
        assert stats.function_errors == 3
        assert "PROBLEM: Function call failed" in reports
        assert invoker.failures == []

    asyncio.run(main())


def test_discarded_batch_goes_to_destination_as_lambda_failure_record() -> None:
    async def main() -> None:
        m = mapping(
            batch_size=3,
            maximum_retry_attempts=1,
            on_failure="arn:aws:sqs:us-east-1:000000000000:dlq",
        )
        stream = FakeStream(m)
        stream.add("a", arrived_at=1700000000.0)
        stream.add("b", arrived_at=1700000001.25)
        invoker = FakeInvoker(lambda e: _async(error()))
        invoker.destination_down = 2  # taken on the third try; not checkpointed before
        stats, _ = await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 2)
        [record] = invoker.failures
        assert record["requestContext"]["condition"] == "RetryAttemptsExhausted"
        assert record["requestContext"]["approximateInvokeCount"] == 2
        assert record["requestContext"]["functionArn"] == m.function_arn
        assert record["responseContext"] == {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        }
        assert record["version"] == "1.0"
        assert record["timestamp"].endswith("Z")
        assert record["NatsStreamBatchInfo"] == {
            "shardId": "shardId-000000000000",
            "startSequenceNumber": "1",
            "endSequenceNumber": "2",
            "approximateArrivalOfFirstRecord": "2023-11-14T22:13:20.000Z",
            "approximateArrivalOfLastRecord": "2023-11-14T22:13:21.250Z",
            "batchSize": 2,
            "streamArn": ARN,
        }
        assert stats.records_to_failure_destination == 2

    asyncio.run(main())


def test_bisect_isolates_the_bad_record_without_spending_retries() -> None:
    async def main() -> None:
        m = mapping(
            batch_size=4,
            bisect_on_error=True,
            maximum_retry_attempts=0,
            on_failure="arn:aws:sqs:us-east-1:000000000000:dlq",
        )
        stream = FakeStream(m)
        for i in range(4):
            stream.add("bad" if i == 2 else f"r{i}")

        async def handler(event: dict[str, Any]) -> Outcome:
            return error() if "bad" in datas(event) else ok()

        invoker = FakeInvoker(handler)
        await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 4)
        assert [seqs(e) for e in invoker.events] == [
            ["1", "2", "3", "4"],
            ["1", "2"],
            ["3", "4"],
            ["3"],
            ["4"],
        ]
        [record] = invoker.failures
        assert record["NatsStreamBatchInfo"]["startSequenceNumber"] == "3"
        assert record["NatsStreamBatchInfo"]["batchSize"] == 1

    asyncio.run(main())


def test_report_batch_item_failures_retries_from_the_lowest_failed() -> None:
    async def main() -> None:
        m = mapping(batch_size=5, report_batch_item_failures=True)
        stream = FakeStream(m)
        for i in range(5):
            stream.add(f"r{i}")
        calls = 0
        checkpointed_at_retry: list[str] = []

        async def handler(event: dict[str, Any]) -> Outcome:
            nonlocal calls
            calls += 1
            if calls == 1:
                return ok({"batchItemFailures": [{"itemIdentifier": "4"}, {"itemIdentifier": "3"}]})
            checkpointed_at_retry.extend(stream.checkpointed)
            return ok({"batchItemFailures": []})

        invoker = FakeInvoker(handler)
        await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 5)
        assert [seqs(e) for e in invoker.events] == [["1", "2", "3", "4", "5"], ["3", "4", "5"]]
        assert checkpointed_at_retry == ["1", "2"]  # checkpointed before the lowest failed

    asyncio.run(main())


@pytest.mark.parametrize(
    "response",
    [
        {"batchItemFailures": [{"itemIdentifier": ""}]},
        {"batchItemFailures": [{"itemIdentifier": None}]},
        {"batchItemFailures": [{"itemIdentifier": "nope"}]},
        {"batchItemFailures": [{"id": "1"}]},
    ],
)
def test_invalid_item_failures_fail_the_whole_batch(response: dict[str, Any]) -> None:
    async def main() -> None:
        m = mapping(batch_size=2, report_batch_item_failures=True, maximum_retry_attempts=1)
        stream = FakeStream(m)
        stream.add("a")
        stream.add("b")
        invoker = FakeInvoker(lambda e: _async(ok(response)))
        await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 2)
        assert [seqs(e) for e in invoker.events] == [["1", "2"], ["1", "2"]]

    asyncio.run(main())


def test_expired_records_are_discarded_before_invoke() -> None:
    async def main() -> None:
        m = mapping(maximum_record_age_s=60, on_failure="arn:aws:sqs:us-east-1:000000000000:dlq")
        stream = FakeStream(m)
        stream.add("old", arrived_at=time.time() - 120)
        stream.add("new")
        invoker = FakeInvoker(lambda e: _async(ok()))
        await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 2)
        assert [datas(e) for e in invoker.events] == [["new"]]
        [record] = invoker.failures
        assert record["requestContext"]["condition"] == "RecordAgeExceeded"
        assert record["requestContext"]["approximateInvokeCount"] == 0
        assert "functionError" not in record["responseContext"]

    asyncio.run(main())


def test_throttles_back_off_never_count_and_never_skip() -> None:
    async def main() -> None:
        m = mapping(maximum_retry_attempts=0)
        stream = FakeStream(m)
        stream.add("a")
        calls = 0

        async def handler(event: dict[str, Any]) -> Outcome:
            nonlocal calls
            calls += 1
            if calls <= 5:
                return Outcome("throttled")
            if calls == 6:
                return Outcome("unavailable", error_type="ResourceNotReady")
            return ok()

        invoker = FakeInvoker(handler)
        stats, reports = await run_until(m, stream, invoker, lambda: stream.checkpointed == ["1"])
        assert calls == 7  # no retry budget, yet not skipped: throttles are not attempts
        assert stats.throttles == 5
        assert stats.batches == 1
        assert any("cannot be invoked" in r for r in reports)

    asyncio.run(main())


def test_filtered_records_count_as_processed() -> None:
    async def main() -> None:
        m = mapping(filters=('{"data": {"kind": ["keep"]}}',))
        stream = FakeStream(m)
        stream.add('{"kind": "drop"}')
        stream.add('{"kind": "keep"}')
        stream.add("not json")
        invoker = FakeInvoker(lambda e: _async(ok()))
        stats, _ = await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 3)
        assert [seqs(e) for e in invoker.events] == [["2"]]
        assert stats.records_filtered == 2

    asyncio.run(main())


def test_payload_limit_splits_batches() -> None:
    async def main() -> None:
        m = mapping(batch_size=100)
        stream = FakeStream(m)
        for _ in range(3):
            stream.add(b"x" * (2 * 1024 * 1024))  # 2 MB each: 2.7 MB in base64
        invoker = FakeInvoker(lambda e: _async(ok()))
        await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 3)
        assert [seqs(e) for e in invoker.events] == [["1", "2"], ["3"]]
        assert all(len(json.dumps(e)) <= 6 * 1024 * 1024 for e in invoker.events)

    asyncio.run(main())


def test_batching_window_waits_for_a_fuller_batch() -> None:
    async def main() -> None:
        m = mapping(batch_size=10, batching_window_s=1)
        stream = FakeStream(m)
        stream.add("a")
        invoker = FakeInvoker(lambda e: _async(ok()))

        async def later() -> None:
            await asyncio.sleep(0.2)
            stream.add("b")

        adder = asyncio.create_task(later())
        await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 2)
        await adder
        assert [seqs(e) for e in invoker.events] == [["1", "2"]]

    asyncio.run(main())


def test_parallelization_keeps_each_key_in_order_and_never_concurrent() -> None:
    async def main() -> None:
        m = mapping(batch_size=2, parallelization_factor=4)
        stream = FakeStream(m)
        keys = [f"key{i % 6}" for i in range(60)]
        for n, k in enumerate(keys):
            stream.add(f"{k}:{n}", key=k)
        busy: set[str] = set()
        seen: dict[str, list[int]] = {}
        most = 0
        running = 0

        async def handler(event: dict[str, Any]) -> Outcome:
            nonlocal most, running
            batch_keys = {r["kinesis"]["partitionKey"] for r in event["Records"]}
            assert not batch_keys & busy, "one key in two invokes at once"
            busy.update(batch_keys)
            running += 1
            most = max(most, running)
            await asyncio.sleep(0.01)
            for d in datas(event):
                k, n = d.split(":")
                seen.setdefault(k, []).append(int(n))
            running -= 1
            busy.difference_update(batch_keys)
            return ok()

        invoker = FakeInvoker(handler)
        await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 60)
        assert most > 1
        assert most <= 4
        for numbers in seen.values():
            assert numbers == sorted(numbers)
        assert sum(len(v) for v in seen.values()) == 60

    asyncio.run(main())


def test_parallel_checkpoint_waits_for_the_slowest_lane() -> None:
    async def main() -> None:
        m = mapping(batch_size=1, parallelization_factor=2)
        stream = FakeStream(m)
        # two keys in two different lanes
        stream.add("slow", key="a")
        stream.add("fast", key="d")
        release = asyncio.Event()

        async def handler(event: dict[str, Any]) -> Outcome:
            if datas(event) == ["slow"]:
                await release.wait()
            return ok()

        invoker = FakeInvoker(handler)
        both_invoked = asyncio.Event()

        async def counting(event: dict[str, Any]) -> Outcome:
            if len(invoker.events) == 2:
                both_invoked.set()
            return await handler(event)

        invoker.handler = counting

        async def check() -> None:
            await both_invoked.wait()
            await asyncio.sleep(0.05)
            assert stream.checkpointed == []  # "fast" is done, but "slow" before it is not
            release.set()

        checker = asyncio.create_task(check())
        await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 2)
        await checker
        from zlib import crc32

        assert crc32(b"a") % 2 != crc32(b"d") % 2

    asyncio.run(main())


def test_tumbling_window_carries_state_and_ends_with_a_final_invoke() -> None:
    async def main() -> None:
        m = mapping(batch_size=2, tumbling_window_s=60)
        stream = FakeStream(m)
        base = (int(time.time()) // 60) * 60 - 120  # two windows, both over
        for i in range(3):
            stream.add(str(i + 1), key="a", arrived_at=base + 1 + i)
        stream.add("10", key="a", arrived_at=base + 61)

        async def handler(event: dict[str, Any]) -> Outcome:
            total = event["state"].get("sum", 0) + sum(int(d) for d in datas(event))
            return ok({"state": {"sum": total}})

        invoker = FakeInvoker(handler)
        await run_until(
            m, stream, invoker, lambda: len(stream.checkpointed) == 4 and len(invoker.events) >= 5
        )
        e = invoker.events
        assert [seqs(x) for x in e[:5]] == [["1", "2"], ["3"], [], ["4"], []]
        assert [x["state"] for x in e[:5]] == [{}, {"sum": 3}, {"sum": 6}, {}, {"sum": 10}]
        assert [x["isFinalInvokeForWindow"] for x in e[:5]] == [False, False, True, False, True]
        assert not any(x["isWindowTerminatedEarly"] for x in e)
        assert e[0]["window"] == {
            "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base)),
            "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(base + 60)),
        }
        assert e[0]["shardId"] == "shardId-000000000000"
        assert e[0]["eventSourceARN"] == ARN

    asyncio.run(main())


def test_window_records_are_checkpointed_only_after_the_final_invoke() -> None:
    async def main() -> None:
        m = mapping(batch_size=10, tumbling_window_s=3600)
        stream = FakeStream(m)
        stream.add("1")  # the window is open for up to an hour: no final invoke yet
        invoker = FakeInvoker(lambda e: _async(ok({"state": {"n": 1}})))
        await run_until(m, stream, invoker, lambda: len(invoker.events) == 1)
        await asyncio.sleep(0.05)
        assert stream.checkpointed == []

    asyncio.run(main())


def test_window_invoke_without_state_fails() -> None:
    async def main() -> None:
        m = mapping(tumbling_window_s=60, maximum_retry_attempts=1)
        stream = FakeStream(m)
        stream.add("1", arrived_at=time.time() - 120)
        invoker = FakeInvoker(lambda e: _async(ok({"no": "state"})))
        await run_until(
            m, stream, invoker, lambda: len(stream.checkpointed) == 1 and len(invoker.events) >= 3
        )
        assert [seqs(x) for x in invoker.events[:3]] == [["1"], ["1"], []]
        assert invoker.events[2]["isFinalInvokeForWindow"] is True

    asyncio.run(main())


def test_oversized_window_state_ends_the_window_early() -> None:
    async def main() -> None:
        m = mapping(batch_size=1, tumbling_window_s=3600)
        stream = FakeStream(m)
        stream.add("1")
        stream.add("2")
        big = "x" * (1024 * 1024 + 10)

        async def handler(event: dict[str, Any]) -> Outcome:
            return ok({"state": {"big": big} if event["Records"] else {}})

        invoker = FakeInvoker(handler)
        await run_until(m, stream, invoker, lambda: len(invoker.events) >= 4)
        e = invoker.events
        assert [seqs(x) for x in e[:4]] == [["1"], [], ["2"], []]
        assert e[1]["isFinalInvokeForWindow"] and e[1]["isWindowTerminatedEarly"]
        assert e[2]["state"] == {}  # the window goes on with a fresh state
        assert e[2]["window"] == e[0]["window"]

    asyncio.run(main())


def test_source_failure_ends_delivery_with_source_unavailable() -> None:
    async def main() -> None:
        m = mapping()
        stream = FakeStream(m)
        stream.fail_reads = True
        invoker = FakeInvoker(lambda e: _async(ok()))
        with pytest.raises(SourceUnavailable, match="the stream is gone"):
            await deliver_stream(m, stream, invoker, lambda r: None, MappingStats(), pacing=FAST)

    asyncio.run(main())


def test_iterator_age_is_the_age_of_the_last_record() -> None:
    async def main() -> None:
        m = mapping()
        stream = FakeStream(m)
        stream.add("a", arrived_at=time.time() - 30)
        invoker = FakeInvoker(lambda e: _async(ok()))
        stats, _ = await run_until(m, stream, invoker, lambda: bool(stream.checkpointed))
        assert 29 <= stats.backlog_age_s <= 35

    asyncio.run(main())


def test_reading_ahead_is_bounded() -> None:
    async def main() -> None:
        m = mapping(batch_size=2)
        stream = FakeStream(m)
        for i in range(50):
            stream.add(f"r{i}")
        release = asyncio.Event()
        positions: list[int] = []

        async def handler(event: dict[str, Any]) -> Outcome:
            if not release.is_set():
                await asyncio.sleep(0.05)  # the reader had time to run ahead
                positions.append(stream.position)
                release.set()
            return ok()

        invoker = FakeInvoker(handler)
        await run_until(m, stream, invoker, lambda: len(stream.checkpointed) == 50)
        assert positions == [4]  # a batch in flight and one more, not the whole stream

    asyncio.run(main())
