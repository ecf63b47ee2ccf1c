"""How many invocations of one function version's durable executions the runner lets run at
once (`events.durable._Slots`): every warm environment, plus a bounded number of cold starts."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

from lamina.events.durable import PREWARM_AHEAD_S, DurableRunner, _Slots, _version_of

ARN = "arn:aws:lambda:us-east-1:123456789012:function:wf:$LATEST/durable-execution/run"


async def _hold(slots: _Slots, running: list[int], peak: list[int], release: asyncio.Event) -> None:
    async with slots:
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        await release.wait()
        running[0] -= 1


def test_at_most_extra_beyond_the_ready_environments_run_at_once() -> None:
    async def scenario() -> None:
        ready = [0]
        slots = _Slots(2, lambda: ready[0])
        running, peak = [0], [0]
        release = asyncio.Event()
        tasks = [asyncio.create_task(_hold(slots, running, peak, release)) for _ in range(10)]
        await asyncio.sleep(0.01)
        assert running[0] == 2  # no environment past its init: two cold starts at a time
        ready[0] = 5  # five environments finished their init: seen at the next entry
        tasks.append(asyncio.create_task(_hold(slots, running, peak, release)))
        await asyncio.sleep(0.01)
        assert running[0] == 7
        release.set()
        await asyncio.gather(*tasks)
        assert peak[0] == 7 and running[0] == 0

    asyncio.run(scenario())


def test_waiters_go_in_turn_and_a_cancelled_one_gives_its_turn_away() -> None:
    async def scenario() -> None:
        slots = _Slots(1, lambda: 0)
        order: list[int] = []
        gate = asyncio.Event()

        async def one(i: int) -> None:
            async with slots:
                order.append(i)
                await gate.wait()

        first = asyncio.create_task(one(0))
        await asyncio.sleep(0)
        waiting = [asyncio.create_task(one(i)) for i in (1, 2, 3)]
        await asyncio.sleep(0.01)
        waiting[0].cancel()
        gate.set()
        await asyncio.gather(first, waiting[1], waiting[2])
        assert order == [0, 2, 3]

    asyncio.run(scenario())


def test_the_version_is_read_from_the_execution_arn() -> None:
    arn = (
        "arn:aws:lambda:us-east-1:123456789012:function:wf:$LATEST"
        "/durable-execution/run-1/0f0e0d0c-aaaa"
    )
    assert _version_of(arn) == ("wf", "$LATEST")
    assert _version_of(arn.replace("$LATEST", "7")) == ("wf", "7")


class _Executions:
    def __init__(self) -> None:
        self.on_ended: list[Any] = []
        self.on_ready: Any = None
        self.on_chained: Any = None


class _Functions:
    def version(self, name: str, version: str) -> object:
        return object()


class _Scheduler:
    def __init__(self, ready: int) -> None:
        self._ready = ready
        self.asked: list[int] = []
        self.release = asyncio.Event()

    def ready(self, name: str, version: str) -> int:
        return self._ready

    async def prewarm(self, config: object, count: int) -> int:
        self.asked.append(count)
        await self.release.wait()
        return count


def _runner(scheduler: _Scheduler) -> DurableRunner:
    return DurableRunner(
        cast(Any, _Executions()),
        cast(Any, _Functions()),
        cast(Any, scheduler),
        invocations_in_flight=8,
    )


def test_environments_start_ahead_of_a_burst_of_timers_at_most_the_bound_at_once() -> None:
    async def scenario() -> None:
        scheduler = _Scheduler(ready=3)
        runner = _runner(scheduler)
        soon, later = time.time() + PREWARM_AHEAD_S / 2, time.time() + 10 * PREWARM_AHEAD_S
        for i in range(100):
            runner._arm(f"{ARN}-{i}", soon)
        runner._arm(ARN.replace(":wf:", ":other:"), later)  # too far ahead: nothing for it
        runner._prewarm_due()
        await asyncio.sleep(0)
        assert scheduler.asked == [8]  # 97 more due than ready: the bound, not 97
        runner._prewarm_due()  # still starting: not asked again meanwhile
        scheduler.release.set()
        await asyncio.sleep(0.01)
        assert scheduler.asked == [8]
        await runner.close()

    asyncio.run(scenario())


def test_no_environment_starts_ahead_when_the_ready_ones_suffice() -> None:
    async def scenario() -> None:
        scheduler = _Scheduler(ready=5)
        runner = _runner(scheduler)
        for i in range(5):
            runner._arm(f"{ARN}-{i}", time.time() + 1)
        runner._prewarm_due()
        await asyncio.sleep(0)
        assert scheduler.asked == []
        await runner.close()

    asyncio.run(scenario())


def test_environments_starting_ahead_never_stop_the_queue() -> None:
    async def scenario() -> None:
        runner = _runner(_Scheduler(ready=0))
        runner._prewarming[("wf", "$LATEST")] = 8  # eight starting ahead, none ready yet

        async def one() -> None:
            async with runner._slot(f"{ARN}-1"):
                pass

        await asyncio.wait_for(one(), 1.0)  # the bound still lets invocations through
        await runner.close()

    asyncio.run(scenario())
