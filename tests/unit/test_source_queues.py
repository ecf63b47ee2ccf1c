"""The queue delivery rules (`events/sources/queues.py`) against a fake queue and a fake
invoker: acknowledgement only after success, release on failure, partial batch failures,
filters, throttles retried with the same batch, the batching window, the 6 MB payload cap,
scaling with the backlog, and what `LastProcessingResult` says."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.unit.source_fakes import FakeInvoker, FakeQueue, batch_failures, mapping

from lamina.events.sources import queues
from lamina.events.sources.api import MappingStats, Outcome, SourceUnavailable
from lamina.events.sources.queues import deliver_queue
from lamina.mappings import RESULT_NONE, RESULT_OK, EventSourceMapping, SourceKind


class Run:
    """deliver_queue running in the background of one test."""

    def __init__(
        self,
        m: EventSourceMapping,
        queue: FakeQueue,
        invoker: FakeInvoker,
        *,
        limit: int = 1000,
        stop: asyncio.Event | None = None,
    ) -> None:
        self.queue, self.invoker = queue, invoker
        self.stats = MappingStats()
        self.reports: list[str] = []
        self.task = asyncio.get_running_loop().create_task(
            deliver_queue(
                m, queue, invoker, self.reports.append, self.stats, limit=limit, stop=stop
            )
        )

    async def until(self, condition: Callable[[], bool], within: float = 5.0) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while not condition():
            if self.task.done():
                self.task.result()
                raise AssertionError("delivery ended")
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("condition not met in time")
            await asyncio.sleep(0.005)

    async def cancel(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


def test_a_batch_that_succeeds_is_acknowledged() -> None:
    async def go() -> None:
        queue = FakeQueue(["a", "b", "c"])
        invoker = FakeInvoker()
        r = Run(mapping(), queue, invoker)
        await r.until(lambda: len(queue.acked) == 3)
        await r.cancel()
        assert invoker.ids(0) == ["m1", "m2", "m3"]
        assert [rec["body"] for rec in invoker.events[0]["Records"]] == ["a", "b", "c"]
        assert queue.released == [] and queue.leased == {}
        assert r.stats.records_received == 3 and r.stats.batches == 1
        assert r.stats.function_errors == 0
        assert r.reports[0] == RESULT_OK

    run(go)


def test_a_failed_batch_is_released_whole_and_redelivered() -> None:
    async def go() -> None:
        queue = FakeQueue(["a", "b"])
        invoker = FakeInvoker(Outcome("function_error", b"{}", "Boom"), Outcome("ok", b"null"))
        r = Run(mapping(), queue, invoker)
        await r.until(lambda: len(queue.acked) == 2)
        await r.cancel()
        assert queue.released == ["m1", "m2"]
        assert invoker.ids(0) == invoker.ids(1) == ["m1", "m2"]
        assert r.stats.function_errors == 1 and r.stats.batches == 2

    run(go)


def test_partial_batch_failures_leave_exactly_the_failed_messages() -> None:
    async def go() -> None:
        queue = FakeQueue(["a", "b", "c", "d"])
        invoker = FakeInvoker(batch_failures("m2", "m4"), Outcome("ok", b"null"))
        r = Run(mapping(report_batch_item_failures=True), queue, invoker)
        await r.until(lambda: len(queue.acked) == 4)
        await r.cancel()
        assert queue.acked[:2] == ["m1", "m3"]
        assert queue.released == ["m2", "m4"]
        assert invoker.ids(1) == ["m2", "m4"]
        assert r.stats.function_errors == 0

    run(go)


@pytest.mark.parametrize(
    "payload",
    [
        b"not json",
        b'"a string"',
        b"[1]",
        b'{"batchItemFailures": [{"itemIdentifier": "nope"}]}',
        b'{"batchItemFailures": [{"itemIdentifier": ""}]}',
        b'{"batchItemFailures": [{"itemIdentifier": null}]}',
        b'{"batchItemFailures": [{"wrongKey": "m1"}]}',
    ],
)
def test_an_invalid_batch_item_failures_response_fails_the_whole_batch(payload: bytes) -> None:
    async def go() -> None:
        queue = FakeQueue(["a", "b"])
        invoker = FakeInvoker(Outcome("ok", payload), Outcome("ok", b"null"))
        r = Run(mapping(report_batch_item_failures=True), queue, invoker)
        await r.until(lambda: len(queue.acked) == 2)
        await r.cancel()
        assert queue.released == ["m1", "m2"]
        assert r.stats.function_errors == 1

    run(go)


@pytest.mark.parametrize(
    "payload",
    [b"", b"null", b"{}", b'{"batchItemFailures": []}', b'{"batchItemFailures": null}'],
)
def test_an_empty_or_null_response_means_every_message_succeeded(payload: bytes) -> None:
    async def go() -> None:
        queue = FakeQueue(["a", "b"])
        invoker = FakeInvoker(Outcome("ok", payload))
        r = Run(mapping(report_batch_item_failures=True), queue, invoker)
        await r.until(lambda: len(queue.acked) == 2)
        await r.cancel()
        assert queue.released == []

    run(go)


def test_without_report_batch_item_failures_the_response_is_not_read() -> None:
    async def go() -> None:
        queue = FakeQueue(["a", "b"])
        r = Run(mapping(), queue, FakeInvoker(batch_failures("m1")))
        await r.until(lambda: len(queue.acked) == 2)
        await r.cancel()
        assert queue.released == []

    run(go)


def test_filtered_messages_are_acknowledged_and_never_reach_the_function() -> None:
    async def go() -> None:
        bodies = [
            json.dumps({"kind": "order", "n": 1}),
            json.dumps({"kind": "noise"}),
            "plain text",
            json.dumps({"kind": "order", "n": 2}),
        ]
        queue = FakeQueue(bodies)
        invoker = FakeInvoker()
        m = mapping(filters=(json.dumps({"body": {"kind": ["order"]}}),))
        r = Run(m, queue, invoker)
        await r.until(lambda: len(queue.acked) == 4)
        await r.cancel()
        delivered = [rec["messageId"] for e in invoker.events for rec in e["Records"]]
        assert delivered == ["m1", "m4"]
        assert sorted(queue.acked) == ["m1", "m2", "m3", "m4"]
        assert r.stats.records_filtered == 2 and r.stats.records_received == 4

    run(go)


def test_a_filter_on_a_plain_text_payload() -> None:
    async def go() -> None:
        queue = FakeQueue(["keep me", "drop me"])
        invoker = FakeInvoker()
        m = mapping(filters=(json.dumps({"body": [{"prefix": "keep"}]}),))
        r = Run(m, queue, invoker)
        await r.until(lambda: len(queue.acked) == 2)
        await r.cancel()
        assert [rec["messageId"] for e in invoker.events for rec in e["Records"]] == ["m1"]

    run(go)


def test_a_throttled_batch_is_retried_as_it_is_and_never_released() -> None:
    async def go() -> None:
        queue = FakeQueue(["a", "b", "c"])
        invoker = FakeInvoker(
            Outcome("throttled"), Outcome("throttled"), Outcome("throttled"), Outcome("ok")
        )
        r = Run(mapping(), queue, invoker)
        await r.until(lambda: len(queue.acked) == 3)
        await r.cancel()
        assert len(invoker.events) == 4
        assert all(invoker.ids(i) == ["m1", "m2", "m3"] for i in range(4))
        assert queue.released == []
        assert r.stats.throttles == 3 and r.stats.function_errors == 0
        gaps = [b - a for a, b in zip(invoker.times, invoker.times[1:], strict=False)]
        # 0.1 s, then doubling
        assert gaps[0] >= 0.09 and gaps[1] >= 0.19 and gaps[2] >= 0.39

    run(go)


def test_a_function_that_cannot_run_is_a_problem_until_it_can() -> None:
    async def go() -> None:
        queue = FakeQueue(["a"])
        invoker = FakeInvoker(Outcome("unavailable", error_type="ResourceConflictException"))
        invoker.answers.append(Outcome("ok"))
        r = Run(mapping(), queue, invoker)
        await r.until(lambda: len(queue.acked) == 1)
        await r.cancel()
        assert r.reports[0].startswith("PROBLEM: ") and "ResourceConflict" in r.reports[0]
        assert r.reports[-1] == RESULT_OK
        assert queue.released == []

    run(go)


def test_without_a_window_the_batch_is_what_one_receive_brought() -> None:
    async def go() -> None:
        queue = FakeQueue(["a"])
        invoker = FakeInvoker()
        r = Run(mapping(batch_size=10), queue, invoker)
        await r.until(lambda: len(queue.acked) == 1)
        queue.put("b", "c")
        await r.until(lambda: len(queue.acked) == 3)
        await r.cancel()
        assert invoker.ids(0) == ["m1"]

    run(go)


def test_the_batching_window_gathers_messages_until_it_ends() -> None:
    async def go() -> None:
        queue = FakeQueue(["a"])
        invoker = FakeInvoker()
        r = Run(mapping(batch_size=10, batching_window_s=1), queue, invoker)
        await r.until(lambda: len(queue.receives) >= 1)
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(0.3)
        queue.put("b", "c")
        await r.until(lambda: len(queue.acked) == 3)
        took = asyncio.get_running_loop().time() - start
        await r.cancel()
        assert len(invoker.events) == 1 and invoker.ids(0) == ["m1", "m2", "m3"]
        assert 0.9 <= took < 2.0

    run(go)


def test_a_full_batch_does_not_wait_for_the_window() -> None:
    async def go() -> None:
        queue = FakeQueue()
        invoker = FakeInvoker()
        r = Run(mapping(batch_size=4, batching_window_s=30), queue, invoker)
        await asyncio.sleep(0.05)
        queue.put("a", "b")
        await asyncio.sleep(0.05)
        queue.put("c", "d", "e")
        await r.until(lambda: len(queue.acked) >= 4, within=2)
        await r.cancel()
        assert invoker.ids(0) == ["m1", "m2", "m3", "m4"]

    run(go)


def test_a_batch_stays_under_the_6_mb_payload_limit() -> None:
    async def go() -> None:
        big = "x" * (1024 * 1024)
        queue = FakeQueue([big] * 8)
        invoker = FakeInvoker()
        r = Run(mapping(batch_size=100, batching_window_s=1), queue, invoker)
        await r.until(lambda: len(queue.acked) == 8)
        await r.cancel()
        sizes = [len(json.dumps(e)) for e in invoker.events]
        assert all(s <= 6 * 1024 * 1024 for s in sizes)
        assert [len(e["Records"]) for e in invoker.events] == [5, 3]
        assert sorted(queue.acked, key=lambda i: int(i[1:])) == [f"m{i}" for i in range(1, 9)]

    run(go)


def test_pollers_scale_up_with_the_backlog_to_maximum_concurrency_and_back_down(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queues, "SCALE_EVERY_S", 0.05)

    async def go() -> None:
        queue = FakeQueue([str(i) for i in range(2000)])
        invoker = FakeInvoker(delay_s=0.05)
        r = Run(mapping(batch_size=1, maximum_concurrency=12), queue, invoker)
        await r.until(lambda: invoker.max_running >= 12, within=10)
        assert r.stats.pollers <= 12
        peak = invoker.max_running
        queue.ready.clear()  # the backlog is gone: pollers find nothing and retire
        await r.until(lambda: r.stats.pollers == 5, within=10)  # the floor with a maximum
        await asyncio.sleep(0.2)
        assert r.stats.pollers == 5
        await r.cancel()
        assert peak == 12

    run(go)


def test_without_maximum_concurrency_the_account_limit_bounds_the_pollers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(queues, "SCALE_EVERY_S", 0.05)

    async def go() -> None:
        queue = FakeQueue([str(i) for i in range(500)])
        invoker = FakeInvoker(delay_s=0.02)
        r = Run(mapping(batch_size=1), queue, invoker, limit=8)
        await r.until(lambda: invoker.max_running >= 8, within=10)
        await asyncio.sleep(0.3)
        queue.ready.clear()
        await r.until(lambda: r.stats.pollers == 2, within=10)  # the idle floor
        await r.cancel()
        assert invoker.max_running == 8

    run(go)


def test_a_rabbitmq_mapping_runs_one_batch_at_a_time_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Lambda: "for RabbitMQ, the number of concurrent execution environments is limited to 1
    for each Amazon MQ event source mapping"; `MaximumConcurrency` lifts it in Lamina."""
    monkeypatch.setattr(queues, "SCALE_EVERY_S", 0.05)

    async def go() -> None:
        for maximum, expected in ((None, 1), (3, 3)):
            queue = FakeQueue([str(i) for i in range(300)])
            invoker = FakeInvoker(delay_s=0.02)
            m = mapping(kind=SourceKind.RABBITMQ, batch_size=1, maximum_concurrency=maximum)
            r = Run(m, queue, invoker, limit=50)
            acked = queue.acked
            await r.until(lambda: len(acked) >= 40, within=10)  # noqa: B023 (awaited here)
            assert r.stats.pollers <= expected
            await r.cancel()
            assert invoker.max_running == expected

    run(go)


def test_a_throttle_shrinks_the_pollers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(queues, "SCALE_EVERY_S", 0.05)

    async def go() -> None:
        queue = FakeQueue([str(i) for i in range(3000)])
        capacity = 3

        def answer(event: dict[str, Any]) -> Outcome:
            return Outcome("throttled") if invoker.running > capacity else Outcome("ok")

        invoker = FakeInvoker(answer, delay_s=0.02)
        r = Run(mapping(batch_size=1, maximum_concurrency=50), queue, invoker)
        await r.until(lambda: r.stats.throttles > 0)
        await asyncio.sleep(0.5)
        assert r.stats.pollers <= 10  # not the 50 it would grow to
        await r.cancel()
        assert queue.released == []

    run(go)


def test_no_records_is_reported_once_when_nothing_comes() -> None:
    async def go() -> None:
        queue = FakeQueue()
        r = Run(mapping(), queue, FakeInvoker())
        await asyncio.sleep(1.3)
        assert r.reports == [RESULT_NONE]
        queue.put("a")
        await r.until(lambda: len(queue.acked) == 1)
        await asyncio.sleep(1.3)
        await r.cancel()
        assert r.reports == [RESULT_NONE, RESULT_OK, RESULT_NONE]

    run(go)


def test_a_source_failure_ends_delivery_with_source_unavailable() -> None:
    async def go() -> None:
        queue = FakeQueue(["a"])
        r = Run(mapping(), queue, FakeInvoker())
        await r.until(lambda: len(queue.acked) == 1)
        queue.fail_receive = "connection refused"
        with pytest.raises(SourceUnavailable, match="connection refused"):
            await asyncio.wait_for(r.task, 5)

    run(go)


def test_cancelled_mid_batch_nothing_is_acknowledged() -> None:
    async def go() -> None:
        queue = FakeQueue(["a", "b"])
        invoker = FakeInvoker()
        invoker.hold = asyncio.Event()
        r = Run(mapping(), queue, invoker)
        await r.until(lambda: invoker.running == 1)
        await r.cancel()
        assert queue.acked == [] and queue.released == []
        assert set(queue.leased) == {"m1", "m2"}  # the source's close() hands them back
        assert r.stats.pollers == 0

    run(go)


def test_stop_lets_the_batch_in_flight_finish_and_receives_nothing_more() -> None:
    async def go() -> None:
        queue = FakeQueue(["a", "b"])
        invoker = FakeInvoker()
        invoker.hold = asyncio.Event()
        stop = asyncio.Event()
        r = Run(mapping(), queue, invoker, stop=stop)
        await r.until(lambda: invoker.running == 1)
        stop.set()
        await asyncio.sleep(0.05)
        queue.put("c")
        invoker.hold.set()
        await asyncio.wait_for(r.task, 5)
        assert queue.acked == ["m1", "m2"]
        assert [m.id for m in queue.ready] == ["m3"]

    run(go)


def test_backlog_age_and_lag_are_measured() -> None:
    async def go() -> None:
        queue = FakeQueue()
        queue.put("old", sent_at=time.time() - 30)
        queue.backlog_value = 42
        r = Run(mapping(), queue, FakeInvoker())
        await r.until(lambda: len(queue.acked) == 1)
        await r.until(lambda: r.stats.lag == 42, within=3)
        await r.cancel()
        assert 29 <= r.stats.backlog_age_s < 40

    run(go)


def test_rabbitmq_gathers_for_half_a_second_until_a_window_is_set() -> None:
    async def go() -> None:
        queue = FakeQueue(["a"])
        invoker = FakeInvoker()
        m = mapping(kind=SourceKind.RABBITMQ, batch_size=100, batching_window_default=True)
        r = Run(m, queue, invoker)
        await r.until(lambda: len(queue.receives) >= 1)
        start = asyncio.get_running_loop().time()
        await asyncio.sleep(0.2)
        queue.put("b")
        await r.until(lambda: len(queue.acked) == 2)
        took = asyncio.get_running_loop().time() - start
        await r.cancel()
        assert len(invoker.events) == 1 and 0.4 <= took < 1.0

    run(go)


def test_with_a_window_trickling_messages_fill_one_batch_not_one_per_poller() -> None:
    async def go() -> None:
        queue = FakeQueue()
        invoker = FakeInvoker()
        r = Run(mapping(batch_size=10, batching_window_s=2, maximum_concurrency=5), queue, invoker)
        await r.until(lambda: r.stats.pollers == 5)
        for i in range(10):
            queue.put(f"m{i}")
            await asyncio.sleep(0.03)
        await r.until(lambda: len(queue.acked) == 10)
        await r.cancel()
        assert [len(e["Records"]) for e in invoker.events] == [10]

    run(go)
