"""The schedule runner with a clock of the test's own: a tick fires once, across a restart
(a new service over the same database), missed ticks fire only within the grace, disabled
rules stay quiet, and the sped-up test clock stays continuous across restarts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from lamina.auth.policy import Policy, parse
from lamina.control.rules import RuleService, TargetInput
from lamina.events.async_queue import AsyncQueue
from lamina.events.bus import EventBus
from lamina.events.schedules import ScheduleClock, ScheduleRunner
from lamina.models import RuleState
from lamina.settings import Settings
from lamina.store.rules import RuleStore

T0 = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
ARN = "arn:aws:lambda:us-east-1:000000000000:function:fn"


class FakeQueue:
    def __init__(self) -> None:
        self.accepted: list[tuple[str, str | None, dict[str, Any]]] = []

    async def accept(
        self, name: str, qualifier: str | None, payload: bytes, rid: str, trace: str = ""
    ) -> None:
        self.accepted.append((name, qualifier, json.loads(payload)))


class EventsAllowed:
    """Every function's resource policy lets EventBridge invoke it."""

    policy = parse(
        {
            "Version": "2012-10-17",
            "Statement": {
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "lambda:InvokeFunction",
                "Resource": "*",
            },
        },
        resource_policy=True,
    )

    def policy_for(self, name: str, qualifier: str | None) -> Policy | None:
        return self.policy


class World:
    """A server's schedule parts over one data directory, with a settable real time."""

    def __init__(self, data: Path, rate: float = 1.0) -> None:
        self.data = data
        self.rate = rate
        self.real = T0
        self.queue = FakeQueue()

    def boot(self) -> tuple[RuleService, ScheduleRunner]:
        settings = Settings(data_dir=self.data)
        clock = ScheduleClock(self.rate, settings.test_clock_origin_path, real=lambda: self.real)
        rules = RuleService(settings, RuleStore.sqlite(settings.db_path), clock=clock.now)
        bus = EventBus(
            settings, rules, cast(AsyncQueue, self.queue), EventsAllowed(), clock=clock.time
        )
        return rules, ScheduleRunner(rules, bus, clock)

    def ticks(self) -> list[str]:
        return [event["time"] for _, _, event in self.queue.accepted]


def run(test: Callable[[World], Awaitable[None]], tmp_path: Path, rate: float = 1.0) -> None:
    asyncio.run(test(World(tmp_path, rate)))


async def scheduled_rule(rules: RuleService, expression: str, target: str = ARN) -> None:
    await rules.put_rule("every", schedule_expression=expression)
    failed = await rules.put_targets("every", None, [TargetInput(id="t", arn=target)])
    assert failed == []


def test_a_tick_fires_once_even_across_a_restart(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        rules, runner = w.boot()
        await scheduled_rule(rules, "rate(1 minute)")
        await runner.fire_due()
        assert w.ticks() == []  # the anchor (creation) is not a tick
        w.real += 60
        await runner.fire_due()
        await runner.fire_due()
        assert w.ticks() == ["2026-01-01T00:01:00Z"]
        name, qualifier, event = w.queue.accepted[0]
        assert (name, qualifier) == ("fn", None)
        assert event["detail-type"] == "Scheduled Event"
        assert event["source"] == "aws.events"
        assert event["resources"] == ["arn:aws:events:us-east-1:000000000000:rule/every"]
        assert event["detail"] == {}
        rules.close()

        # a restart at the same moment: the tick is recorded, so it does not fire again
        rules, runner = w.boot()
        await rules.load()
        await runner.fire_due()
        assert w.ticks() == ["2026-01-01T00:01:00Z"]
        w.real += 30
        await runner.fire_due()
        assert len(w.ticks()) == 1
        w.real += 30
        await runner.fire_due()
        assert w.ticks() == ["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]
        rules.close()

    run(test, tmp_path)


def test_missed_ticks_fire_once_within_the_grace_and_older_ones_are_skipped(
    tmp_path: Path,
) -> None:
    async def test(w: World) -> None:
        rules, runner = w.boot()
        await scheduled_rule(rules, "rate(1 minute)")
        rules.close()
        w.real += 10 * 60 + 30  # down for ten and a half minutes
        rules, runner = w.boot()
        await rules.load()
        await runner.fire_due()
        # only 00:10:00 is within 60 s of 00:10:30; 00:01-00:09 are skipped, not replayed
        assert w.ticks() == ["2026-01-01T00:10:00Z"]
        w.real += 30
        await runner.fire_due()
        assert w.ticks() == ["2026-01-01T00:10:00Z", "2026-01-01T00:11:00Z"]
        rules.close()

    run(test, tmp_path)


def test_disabled_rules_do_not_fire_and_enabling_restarts_the_rate(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        rules, runner = w.boot()
        await scheduled_rule(rules, "rate(5 minutes)")
        await rules.set_state("every", None, RuleState.DISABLED)
        w.real += 600
        await runner.fire_due()
        assert w.ticks() == []
        assert [p.next_fire for p in runner.plan()] == [None]
        w.real += 30
        await rules.set_state("every", None, RuleState.ENABLED)  # at 00:10:30
        (planned,) = runner.plan()
        assert planned.next_fire == datetime(2026, 1, 1, 0, 15, 30, tzinfo=UTC)
        w.real += 299
        await runner.fire_due()
        assert w.ticks() == []
        w.real += 1
        await runner.fire_due()
        assert w.ticks() == ["2026-01-01T00:15:30Z"]
        rules.close()

    run(test, tmp_path)


def test_cron_ticks_are_absolute_and_reach_a_qualified_target(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        w.real += 20  # created at 00:00:20
        rules, runner = w.boot()
        await scheduled_rule(rules, "cron(0/15 * * * ? *)", target=ARN + ":live")
        w.real += 15 * 60
        await runner.fire_due()
        assert w.ticks() == ["2026-01-01T00:15:00Z"]
        assert w.queue.accepted[0][:2] == ("fn", "live")
        rules.close()

    run(test, tmp_path)


def test_the_test_clock_runs_fast_and_continues_across_restarts(tmp_path: Path) -> None:
    async def test(w: World) -> None:
        rules, runner = w.boot()
        await scheduled_rule(rules, "rate(1 minute)")
        w.real += 1  # one real second is a minute at 60x
        await runner.fire_due()
        assert w.ticks() == ["2026-01-01T00:01:00Z"]
        rules.close()
        w.real += 0.5  # restarted half a second later: still the same sped-up time line
        rules, runner = w.boot()
        await rules.load()
        wait = await runner.fire_due()
        assert w.ticks() == ["2026-01-01T00:01:00Z"]
        assert 0.4 < wait < 0.6  # real seconds until 00:02:00
        w.real += 0.5
        await runner.fire_due()
        assert w.ticks() == ["2026-01-01T00:01:00Z", "2026-01-01T00:02:00Z"]
        rules.close()

    run(test, tmp_path, rate=60.0)
