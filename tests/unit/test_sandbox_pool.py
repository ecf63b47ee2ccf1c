"""The pool of environments isolated ahead (`lamina.sandbox._pool`), with fake children."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from lamina.sandbox._pool import Demand, PreparedPool


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


@dataclass(eq=False)
class Child:
    number: int
    alive: bool = True
    released: bool = False


class Maker:
    """Makes children after `delay` s (or fails while `failing`), counting what is in flight."""

    def __init__(self, delay: float = 0.01) -> None:
        self.delay = delay
        self.made: list[Child] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.failing = False
        self.urgent = 0

    async def make(self, urgent: bool) -> Child:
        self.urgent += urgent
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if self.failing:
                raise OSError("cannot isolate")
            child = Child(len(self.made))
            self.made.append(child)
            return child
        finally:
            self.in_flight -= 1

    async def release(self, child: Child) -> None:
        child.released = True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pool(
    maker: Maker, base: int = 2, cap: int = 16, parallel: int = 4, clock: Clock | None = None
) -> PreparedPool[Child]:
    demand = Demand(window=60, clock=clock or Clock())
    return PreparedPool(
        "test", maker.make, maker.release, lambda c: c.alive, base, cap, parallel, demand
    )


async def settle(maker: Maker) -> None:
    """Until nothing is being made (and a little longer, for the callbacks)."""
    for _ in range(200):
        await asyncio.sleep(maker.delay)
        if maker.in_flight == 0:
            await asyncio.sleep(maker.delay)
            if maker.in_flight == 0:
                return
    raise AssertionError("the pool never settled")


def test_fills_to_its_base_and_hands_out_ready_children() -> None:
    async def test() -> None:
        maker = Maker()
        p = pool(maker)
        p.refill()
        await settle(maker)
        assert p.ready == 2
        assert maker.urgent == 0  # made for the pool: at a low priority
        child = await p.claim()
        assert child in maker.made and p.ready == 1
        # A claim that found a child ready makes nothing by itself: its owner refills once
        # its cold start is over.
        await asyncio.sleep(0.05)
        assert len(maker.made) == 2
        await p.close()

    run(test)


def test_a_claim_on_a_dry_pool_waits_for_the_next_child_made_and_only_one() -> None:
    async def test() -> None:
        maker = Maker(delay=0.05)
        p = pool(maker, base=1, cap=1)
        child = await p.claim()  # nothing ready: its request starts a child, and it gets it
        assert maker.made == [child]
        assert maker.urgent == 1  # a claim waits for it: at full priority
        assert not child.released
        await p.close()

    run(test)


def test_claims_waiting_are_served_in_order_by_children_made_in_parallel() -> None:
    async def test() -> None:
        maker = Maker(delay=0.05)
        p = pool(maker, base=2, cap=2, parallel=3)
        claims = [asyncio.ensure_future(p.claim()) for _ in range(6)]
        children = await asyncio.gather(*claims)
        assert len({c.number for c in children}) == 6
        assert maker.most_in_flight == 3
        await p.close()

    run(test)


def test_grows_with_the_demand_up_to_its_cap_and_shrinks_once_it_is_gone() -> None:
    async def test() -> None:
        maker, clock = Maker(), Clock()
        p = pool(maker, base=2, cap=5, clock=clock)
        p.refill()
        await settle(maker)
        assert p.target == 2
        for _ in range(8):  # a burst of cold starts within one second
            await p.claim()
        assert p.target == 5
        p.refill()
        await settle(maker)
        assert p.ready == 5
        clock.now += 61  # a quiet minute later
        assert p.target == 2
        p.refill()
        await settle(maker)
        assert p.ready == 2
        released = [c for c in maker.made if c.released]
        assert len(released) == 3
        await p.close()

    run(test)


def test_without_a_base_nothing_is_kept_ready() -> None:
    async def test() -> None:
        maker = Maker()
        p = pool(maker, base=0, cap=0)
        for _ in range(3):
            await p.claim()
        p.refill()
        await settle(maker)
        assert p.ready == 0 and len(maker.made) == 3
        await p.close()

    run(test)


def test_a_failure_reaches_the_waiting_claim_and_the_pool_recovers() -> None:
    async def test() -> None:
        maker = Maker()
        p = pool(maker, base=1, cap=1)
        maker.failing = True
        with pytest.raises(OSError, match="cannot isolate"):
            await p.claim()
        maker.failing = False
        child = await p.claim()
        assert child in maker.made
        await p.close()

    run(test)


def test_dead_children_are_released_not_handed_out() -> None:
    async def test() -> None:
        maker = Maker()
        p = pool(maker, base=2, cap=2)
        p.refill()
        await settle(maker)
        for child in maker.made:
            child.alive = False
        claimed = await p.claim()
        assert claimed.alive
        await asyncio.sleep(0.01)
        assert all(c.released for c in maker.made if not c.alive)
        await p.close()

    run(test)


def test_close_releases_every_child_and_fails_waiting_claims() -> None:
    async def test() -> None:
        maker = Maker(delay=0.2)
        p = pool(maker, base=2, cap=2, parallel=1)
        waiting = asyncio.ensure_future(p.claim())
        await asyncio.sleep(0.01)
        await p.close()
        with pytest.raises(OSError, match="closed"):
            await waiting
        assert maker.made and all(c.released for c in maker.made)

    run(test)


def test_demand_counts_the_busiest_second_of_its_window() -> None:
    clock = Clock()
    demand = Demand(window=10, clock=clock)
    for _ in range(3):
        demand.claimed()
    clock.now += 1
    demand.claimed()
    assert demand.peak() == 3
    clock.now += 9.5
    assert demand.peak() == 1
    clock.now += 1
    assert demand.peak() == 0


def test_every_waiting_claim_gets_its_own_answer_when_making_fails() -> None:
    async def test() -> None:
        maker = Maker()
        p = pool(maker, base=2, cap=2, parallel=2)
        maker.failing = True
        claims = [asyncio.ensure_future(p.claim()) for _ in range(5)]
        done = await asyncio.gather(*claims, return_exceptions=True)
        assert all(isinstance(d, OSError) for d in done), done
        maker.failing = False
        p.refill()
        await settle(maker)
        assert p.ready == 2
        await p.close()

    run(test)
