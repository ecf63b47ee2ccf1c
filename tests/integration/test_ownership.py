"""Two nodes' runners over one SQLite data file (and one RabbitMQ), as a cluster's would be over
one database: a schedule's tick is claimed once when two runners race for every tick, and
across a hand-over to another node while the partitioned ex-owner still fires; a RabbitMQ
mapping is polled by one node only, and moves to the other when its owner stops.

The leases are the shared fakes of `tests/unit/lease_fakes.py`; the database, the claims and
the broker are real."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from tests._rabbit import URL, declare, private_vhost, publish
from tests.unit.lease_fakes import FakeDirectory, LeaseBoard
from tests.unit.source_fakes import FakeControl, FakeInvoker, mapping
from tests.unit.test_schedule_runner import EventsAllowed, FakeQueue

from lamina.cluster.api import Leases, NodeDirectory
from lamina.cluster.local import LocalLeases
from lamina.cluster.ownership import rendezvous
from lamina.control.rules import RuleService, TargetInput
from lamina.events.async_queue import AsyncQueue
from lamina.events.bus import EventBus
from lamina.events.schedules import ScheduleClock, ScheduleRunner
from lamina.events.sources.manager import SourceRunner, mapping_key
from lamina.events.sources.rabbitmq import RabbitSource
from lamina.mappings import Connection, EventSourceMapping, SourceKind
from lamina.observability import Metrics
from lamina.settings import Settings
from lamina.store.rules import RuleStore

pytestmark = pytest.mark.control_plane

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
FN = "arn:aws:lambda:us-east-1:000000000000:function:fn"


def run(test: Callable[[], Awaitable[None]], within: float = 60) -> None:
    asyncio.run(asyncio.wait_for(test(), within))


# -- schedules ---------------------------------------------------------------------------------


class Nodes:
    """Rule services and schedule runners of several nodes on one data directory's database,
    with one settable real time and one queue that records every tick queued."""

    def __init__(self, data: Path, rate: float = 1.0) -> None:
        self.settings = Settings(data_dir=data)
        self.rate = rate
        self.real = T0
        self.queue = FakeQueue()
        self.services: list[RuleService] = []

    def node(
        self, leases: Leases | None = None, directory: NodeDirectory | None = None
    ) -> tuple[RuleService, ScheduleRunner]:
        clock = ScheduleClock(self.rate, real=lambda: self.real)
        rules = RuleService(self.settings, RuleStore.sqlite(self.settings.db_path), clock=clock.now)
        bus = EventBus(
            self.settings,
            rules,
            cast(AsyncQueue, self.queue),
            EventsAllowed(),
            clock=clock.time,
        )
        self.services.append(rules)
        return rules, ScheduleRunner(rules, bus, clock, leases=leases, directory=directory)

    def ticks(self) -> list[str]:
        return [event["time"] for _, _, event in self.queue.accepted]

    def close(self) -> None:
        for rules in self.services:
            rules.close()


def minutes(first: int, last: int) -> list[str]:
    return [f"2026-01-01T{m // 60:02d}:{m % 60:02d}:00Z" for m in range(first, last + 1)]


async def every_minute(rules: RuleService) -> None:
    await rules.put_rule("every", schedule_expression="rate(1 minute)")
    assert await rules.put_targets("every", None, [TargetInput(id="t", arn=FN)]) == []


def test_two_runners_racing_for_every_tick_claim_each_once(tmp_path: Path) -> None:
    """Both nodes believe they own the rule (each its own local leases), as a partitioned
    ex-owner and its successor may: the database's claim lets one of them fire each tick."""

    async def go() -> None:
        nodes = Nodes(tmp_path, rate=60.0)  # a minute is a real second
        a_rules, a = nodes.node(LocalLeases())
        b_rules, b = nodes.node(LocalLeases())
        await every_minute(a_rules)
        await b_rules.load()  # b knows the rule, and never hears of a's ticks but by its claims
        for _ in range(150):
            nodes.real += 1
            waits = await asyncio.gather(a.fire_due(), b.fire_due())
            # the loser of a claim, too, waits for the next tick (a real second), not longer
            assert all(0.9 < w <= 1.0 for w in waits), waits
        assert nodes.ticks() == minutes(1, 150)  # each minute once: none twice, none lost
        assert a.fired + b.fired == 150
        nodes.close()

    run(go)


def test_a_schedule_moves_to_the_other_node_and_no_tick_fires_twice_meanwhile(
    tmp_path: Path,
) -> None:
    async def go() -> None:
        nodes = Nodes(tmp_path)
        board = LeaseBoard(ttl_s=3.0)
        view = {"a", "b"}
        runners = {}
        for name in ("a", "b"):
            rules, runner = nodes.node(board.leases(name), FakeDirectory(name, view))
            runners[name] = (rules, runner)
        await every_minute(runners["a"][0])
        await runners["b"][0].load()
        owner = rendezvous("rule/default/every", view)
        assert owner is not None
        other = "b" if owner == "a" else "a"
        first, second = runners[owner][1], runners[other][1]

        async def minute() -> None:
            nodes.real += 60
            await asyncio.gather(first.fire_due(), second.fire_due())

        for _ in range(5):
            await minute()
        assert nodes.ticks() == minutes(1, 5)
        assert (first.fired, second.fired) == (5, 0)  # the other node only follows

        # The owner is cut off: its lease expires and the other takes it, but the owner has
        # not yet been told (its failing renewal has not run): both fire for a while.
        board.cut_off(owner)
        view.discard(owner)
        board.now += 3.5
        await second._jobs.evaluate()
        rule = runners[owner][0].get("every")
        assert second.owns(rule) and first.owns(rule)
        for _ in range(5):
            await minute()
        await board.expire()  # now the ex-owner knows
        assert not first.owns(rule)
        for _ in range(5):
            await minute()
        assert nodes.ticks() == minutes(1, 15)  # none twice, none lost across the hand-over
        assert first.fired + second.fired == 15 and second.fired >= 5
        nodes.close()

    run(go)


# -- event-source mappings ---------------------------------------------------------------------


class RabbitControl(FakeControl):
    """The fake control, but the mappings' connection is the test's RabbitMQ virtual host."""

    def __init__(self, vhost: str, *mappings: EventSourceMapping) -> None:
        super().__init__(*mappings)
        self.vhost = vhost

    def connection(self, mapping: EventSourceMapping) -> Connection:
        return Connection(SourceKind.RABBITMQ, URL, virtual_host=self.vhost)


class Poller:
    """One node's mapping runner, with its own invoker and a count of the sources it built."""

    def __init__(
        self, name: str, control: RabbitControl, board: LeaseBoard, view: set[str]
    ) -> None:
        self.name = name
        self.invoker = FakeInvoker()
        self.opened = 0
        self.runner = SourceRunner(
            Settings(shutdown_grace_s=5),
            control,
            self.invoker,
            {SourceKind.RABBITMQ: self.make},
            Metrics(),
            leases=board.leases(name),
            directory=FakeDirectory(name, view),
        )

    def make(self, m: EventSourceMapping, connection: Connection) -> Any:
        self.opened += 1
        return RabbitSource(m, connection)

    def bodies(self) -> list[str]:
        return [
            base64.b64decode(message["data"]).decode()
            for event in self.invoker.events
            for messages in event["rmqMessagesByQueue"].values()
            for message in messages
        ]


async def until(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not in {within} s"
        await asyncio.sleep(0.05)


def test_a_rabbitmq_mapping_is_polled_by_one_node_and_moves_when_it_stops() -> None:
    with private_vhost("lamina-own") as vhost:

        async def go() -> None:
            await declare(vhost, "jobs")
            m = dataclasses.replace(
                mapping(uuid="m-1"),
                kind=SourceKind.RABBITMQ,
                source_arn="arn:aws:mq:us-east-1:000000000000:broker:b:b-1",
                queues=("jobs",),
                batch_size=10,
            )
            control = RabbitControl(vhost, m)
            board = LeaseBoard(ttl_s=1.5, clock=time.monotonic)
            view = {"a", "b"}
            pollers = {name: Poller(name, control, board, view) for name in view}
            owner_name = rendezvous(mapping_key("m-1"), view)
            assert owner_name is not None
            owner = pollers[owner_name]
            other = pollers["b" if owner_name == "a" else "a"]
            for p in pollers.values():
                await p.runner.start()

            first = [json.dumps({"n": i}) for i in range(40)]
            await publish(vhost, "jobs", [b.encode() for b in first])
            await until(lambda: sorted(owner.bodies()) == sorted(first), "the owner got all")
            assert other.bodies() == [] and other.opened == 0  # never even connected
            assert board.holder(mapping_key("m-1")) == owner_name

            # The owner stops (its node shuts down): the other takes the mapping over.
            await owner.runner.close()
            view.discard(owner_name)
            await until(lambda: other.opened == 1, "the other node opened the queue")
            second = [json.dumps({"n": i}) for i in range(40, 80)]
            await publish(vhost, "jobs", [b.encode() for b in second])
            await until(lambda: sorted(other.bodies()) == sorted(second), "the other got all")
            delivered = Counter(owner.bodies() + other.bodies())
            assert set(delivered) == set(first + second)
            assert max(delivered.values()) == 1  # nothing was delivered to both
            await other.runner.close()
            assert board.holders == {}

        run(go)
