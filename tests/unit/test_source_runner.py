"""The mapping runner (`events/sources/manager.py`) against a fake control, fake queues and a
fake invoker: states settle, role and connection problems are reported and retried, an outage
is survived, updates restart the poller, disable and delete stop it, shutdown acknowledges
nothing unfinished, and the counters reach `/metrics`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tests.unit.source_fakes import FakeControl, FakeInvoker, FakeQueue, mapping

from lamina.events.sources import manager
from lamina.events.sources.api import MappingStats
from lamina.events.sources.manager import SourceRunner
from lamina.mappings import (
    RESULT_OK,
    Connection,
    EventSourceMapping,
    MappingState,
    SourceKind,
)
from lamina.observability import Metrics
from lamina.settings import Settings


class World:
    """A runner over a fake control; every source it builds is a FakeQueue fed from `feed`."""

    def __init__(self, *mappings: EventSourceMapping, grace_s: int = 5) -> None:
        self.control = FakeControl(*mappings)
        self.invoker = FakeInvoker()
        self.sources: list[FakeQueue] = []
        self.feed: list[str] = []
        self.fail_open: str | None = None
        self.metrics = Metrics()
        self.runner = SourceRunner(
            Settings(shutdown_grace_s=grace_s),
            self.control,
            self.invoker,
            {SourceKind.SQS: self.make},
            self.metrics,
        )

    def make(self, m: EventSourceMapping, connection: Connection) -> FakeQueue:
        queue = FakeQueue(self.feed)
        self.feed = []
        queue.mapping = m  # type: ignore[attr-defined]
        if self.fail_open is not None:
            why = self.fail_open

            async def fail() -> None:
                from lamina.events.sources.api import SourceUnavailable

                raise SourceUnavailable(why)

            queue.open = fail  # type: ignore[method-assign]
        self.sources.append(queue)
        return queue

    @property
    def source(self) -> FakeQueue:
        return self.sources[-1]

    def state(self, uuid: str = "u-1") -> MappingState | None:
        m = self.control.get(uuid)
        return m.state if m is not None else None


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 30))


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(manager, "ROLE_RETRY_S", 0.05)
    monkeypatch.setattr(manager, "REOPEN_FIRST_S", 0.05)
    monkeypatch.setattr(manager, "REOPEN_MAX_S", 0.2)


def test_a_new_mapping_settles_enabled_and_delivers() -> None:
    async def go() -> None:
        w = World(mapping(state=MappingState.CREATING))
        w.feed = ["a", "b"]
        await w.runner.start()
        await until(lambda: len(w.sources) == 1 and len(w.source.acked) == 2)
        assert w.state() is MappingState.ENABLED
        assert w.control.settled == [("u-1", MappingState.ENABLED)]
        assert w.source.opened == 1
        assert w.control.results()[-1] == RESULT_OK
        stats = w.runner.stats("u-1")
        assert stats is not None and stats.records_received == 2 and stats.batches == 1
        await w.runner.close()
        assert w.source.closed == 1

    run(go)


def test_mappings_stored_before_start_run_and_disabled_ones_do_not() -> None:
    async def go() -> None:
        w = World(mapping(uuid="on"), mapping(uuid="off", state=MappingState.DISABLED))
        await w.runner.start()
        await until(lambda: len(w.sources) == 1)
        await asyncio.sleep(0.1)
        assert [s.mapping.uuid for s in w.sources] == ["on"]  # type: ignore[attr-defined]
        assert w.runner.stats("off") is None
        await w.runner.close()

    run(go)


def test_a_role_without_the_permission_is_a_problem_and_nothing_is_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        w = World(mapping(state=MappingState.CREATING))
        why = "the function's execution role does not allow sqs:ReceiveMessage on q"
        w.control.role_problems["u-1"] = why
        with caplog.at_level(logging.WARNING):
            await w.runner.start()
            await until(lambda: len(w.control.results()) >= 3)  # retried
        assert w.sources == []
        assert w.control.results()[0] == f"PROBLEM: {why}"
        assert w.state() is MappingState.ENABLED  # as on Lambda: Enabled, with the problem
        assert sum(why in r.getMessage() for r in caplog.records) == 1  # logged once
        w.feed = ["a"]
        del w.control.role_problems["u-1"]
        await until(lambda: len(w.sources) == 1 and w.source.acked == ["m1"])
        await w.runner.close()

    run(go)


def test_a_permission_taken_away_stops_a_running_mapping_until_it_is_given_back() -> None:
    async def go() -> None:
        w = World(mapping())
        w.feed = ["a"]
        await w.runner.start()
        await until(lambda: len(w.sources) == 1 and w.source.acked == ["m1"])
        w.control.role_problems["u-1"] = "no sqs:ReceiveMessage"
        await until(lambda: w.source.closed == 1)
        assert w.control.results()[-1] == "PROBLEM: no sqs:ReceiveMessage"
        w.source.put("b")
        await asyncio.sleep(0.2)
        assert len(w.invoker.events) == 1 and len(w.sources) == 1
        del w.control.role_problems["u-1"]
        await until(lambda: len(w.sources) == 2 and w.source.opened == 1)
        await w.runner.close()

    run(go)


def test_a_connection_that_cannot_be_resolved_is_a_problem() -> None:
    async def go() -> None:
        w = World(mapping())
        w.control.missing["u-1"] = "broker b1 is not registered"
        await w.runner.start()
        await until(lambda: bool(w.control.results()))
        assert w.control.results()[0] == "PROBLEM: broker b1 is not registered"
        del w.control.missing["u-1"]
        w.feed = ["a"]
        await until(lambda: len(w.sources) == 1 and w.source.acked == ["m1"])
        assert w.control.results()[-1] == RESULT_OK
        await w.runner.close()

    run(go)


def test_an_outage_is_reported_and_the_mapping_resumes_by_itself(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def go() -> None:
        w = World(mapping())
        w.feed = ["a"]
        with caplog.at_level(logging.WARNING):
            await w.runner.start()
            await until(lambda: len(w.sources) == 1 and w.source.acked == ["m1"])
            w.fail_open = "cannot connect to 127.0.0.1:5672: connection refused"
            w.source.fail_receive = "connection lost"
            await until(lambda: len(w.sources) >= 4)  # reopened, and reopened again
            results = w.control.results()
            assert "PROBLEM: connection lost" in results
            assert results[-1] == f"PROBLEM: {w.fail_open}"
            assert all(s.closed == 1 for s in w.sources[:-1])
            w.fail_open = None
            w.feed = ["b"]
            await until(lambda: w.source.acked == ["m1"] and w.source.opened == 1)
        assert w.control.results()[-1] == RESULT_OK
        messages = [r.getMessage() for r in caplog.records]
        assert sum("connection refused" in m for m in messages) == 1  # not once per retry
        assert any("resuming" in m for m in messages)
        await w.runner.close()

    run(go)


def test_an_update_restarts_the_poller_with_the_new_settings() -> None:
    async def go() -> None:
        w = World(mapping(batch_size=1))
        w.feed = ["a", "b"]
        await w.runner.start()
        await until(lambda: len(w.sources) == 1 and len(w.source.acked) == 2)
        first = w.source
        w.feed = ["c", "d", "e"]
        w.control.change("u-1", state=MappingState.UPDATING, batch_size=3)
        await until(lambda: len(w.sources) == 2 and len(w.source.acked) == 3)
        assert first.closed == 1
        assert w.source.mapping.batch_size == 3  # type: ignore[attr-defined]
        assert len(w.invoker.events[-1]["Records"]) == 3
        assert w.state() is MappingState.ENABLED
        await w.runner.close()

    run(go)


def test_an_update_that_changes_nothing_only_settles() -> None:
    async def go() -> None:
        w = World(mapping())
        await w.runner.start()
        await until(lambda: len(w.sources) == 1 and w.source.opened == 1)
        w.control.change("u-1", state=MappingState.UPDATING, last_modified=99.0)
        await until(lambda: w.state() is MappingState.ENABLED)
        await w.runner.wait_idle()
        assert len(w.sources) == 1
        await w.runner.close()

    run(go)


def test_an_update_lets_the_batch_in_flight_finish_first() -> None:
    async def go() -> None:
        w = World(mapping())
        w.feed = ["a"]
        w.invoker.hold = asyncio.Event()
        await w.runner.start()
        await until(lambda: w.invoker.running == 1)
        first = w.source
        w.control.change("u-1", state=MappingState.UPDATING, batch_size=5)
        await asyncio.sleep(0.1)
        assert len(w.sources) == 1  # waiting for the batch
        w.invoker.hold.set()
        await until(lambda: len(w.sources) == 2)
        assert first.acked == ["m1"]
        await w.runner.close()

    run(go)


def test_disabling_stops_the_poller_and_settles_disabled() -> None:
    async def go() -> None:
        w = World(mapping())
        await w.runner.start()
        await until(lambda: len(w.sources) == 1 and w.source.opened == 1)
        w.control.change("u-1", state=MappingState.DISABLING)
        await until(lambda: w.state() is MappingState.DISABLED)
        assert w.source.closed == 1
        w.source.put("late")
        await asyncio.sleep(0.1)
        assert w.invoker.events == []
        w.control.change("u-1", state=MappingState.ENABLING)
        await until(lambda: len(w.sources) == 2 and w.state() is MappingState.ENABLED)
        await w.runner.close()

    run(go)


def test_deleting_stops_the_poller_and_removes_the_mapping() -> None:
    async def go() -> None:
        w = World(mapping())
        w.feed = ["a"]
        await w.runner.start()
        await until(lambda: len(w.sources) == 1 and w.source.acked == ["m1"])
        w.metrics.render()
        w.control.change("u-1", state=MappingState.DELETING)
        await until(lambda: w.control.removed == ["u-1"])
        assert w.source.closed == 1
        assert w.runner.stats("u-1") is None
        assert b'uuid="u-1"' not in w.metrics.render()
        await w.runner.close()

    run(go)


def test_shutdown_acknowledges_nothing_unfinished() -> None:
    async def go() -> None:
        w = World(mapping(), grace_s=60)
        w.feed = ["a", "b"]
        w.invoker.hold = asyncio.Event()
        await w.runner.start()
        await until(lambda: w.invoker.running == 1)
        await asyncio.wait_for(w.runner.close(), 2)  # at once, not after the grace
        assert w.source.acked == [] and w.source.closed == 1
        assert [m.id for m in w.source.ready] == ["m1", "m2"]  # handed back

    run(go)


def test_the_counters_reach_metrics() -> None:
    async def go() -> None:
        w = World(mapping(filters=('{"body": ["keep"]}',)))
        w.feed = ["keep", "drop", "keep"]
        await w.runner.start()
        await until(lambda: len(w.sources) == 1 and len(w.source.acked) == 3)
        w.metrics.render()
        labels = {"uuid": "u-1", "function": "fn", "kind": "sqs"}

        def value(name: str, **more: str) -> float | None:
            return w.metrics.registry.get_sample_value(name, {**labels, **more})

        assert value("lamina_event_source_records_total", outcome="received") == 3
        assert value("lamina_event_source_records_total", outcome="filtered") == 1
        assert value("lamina_event_source_batches_total") == 1
        assert value("lamina_event_source_function_errors_total") == 0
        assert value("lamina_event_source_pollers") == 5
        w.metrics.render()  # counted once, not again at each scrape
        assert value("lamina_event_source_records_total", outcome="received") == 3
        await w.runner.close()

    run(go)


def test_a_stream_mapping_opens_at_its_starting_position_and_runs_the_stream_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[Any] = []

    async def deliver_stream(
        m: EventSourceMapping, source: Any, invoker: Any, report: Any, stats: MappingStats
    ) -> None:
        calls.append(("deliver", m.uuid))
        report(RESULT_OK)
        await asyncio.Event().wait()

    monkeypatch.setattr(manager, "deliver_stream", deliver_stream)

    class Stream:
        shard_id = "0"

        def __init__(self, m: EventSourceMapping, c: Connection) -> None:
            self.closed = 0

        async def open(self, position: str, timestamp: float | None) -> None:
            calls.append(("open", position, timestamp))

        async def close(self) -> None:
            self.closed += 1

    async def go() -> None:
        m = mapping(
            kind=SourceKind.NATS,
            state=MappingState.CREATING,
            starting_position="AT_TIMESTAMP",
            starting_timestamp=1700000000.0,
        )
        w = World(m)
        w.runner._factories[SourceKind.NATS] = Stream
        await w.runner.start()
        await until(lambda: ("deliver", "u-1") in calls)
        assert calls[0] == ("open", "AT_TIMESTAMP", 1700000000.0)
        assert w.state() is MappingState.ENABLED
        w.control.change("u-1", state=MappingState.DISABLING)  # a stream stops at once
        await asyncio.wait_for(w.runner.wait_idle(), 2)
        assert w.state() is MappingState.DISABLED
        await w.runner.close()

    run(go)


def test_a_kind_without_a_factory_is_a_problem() -> None:
    async def go() -> None:
        w = World(mapping(kind=SourceKind.REDIS, state=MappingState.CREATING))
        await w.runner.start()
        await until(lambda: bool(w.control.results()))
        assert w.control.results()[0].startswith("PROBLEM: redis")
        assert w.state() is MappingState.ENABLED
        await w.runner.close()

    run(go)
