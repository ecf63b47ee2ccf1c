"""The node's memory capacity (`lamina.scheduler.capacity.MemoryCapacity`), without a server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from lamina.errors import TooManyRequestsError
from lamina.scheduler.capacity import MemoryCapacity


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), 10))


def test_takes_gives_back_and_refuses_after_the_queue_timeout() -> None:
    async def test() -> None:
        capacity = MemoryCapacity(256, 0.2, lambda: [])
        await capacity.take(128)
        await capacity.take(128)
        assert capacity.used_mb == 256
        with pytest.raises(TooManyRequestsError):
            await capacity.take(128)
        capacity.give_back(128)
        await capacity.take(128)
        assert capacity.used_mb == 256
        with pytest.raises(TooManyRequestsError):
            await capacity.take(512)  # more than the node has: at once

    run(test)


def test_waiters_are_served_in_arrival_order() -> None:
    async def test() -> None:
        capacity = MemoryCapacity(128, 5, lambda: [])
        await capacity.take(128)
        order: list[str] = []

        async def wait(name: str) -> None:
            await capacity.take(128)
            order.append(name)

        first = asyncio.create_task(wait("first"))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(wait("second"))
        await asyncio.sleep(0.01)
        capacity.give_back(128)
        await asyncio.sleep(0.1)
        assert order == ["first"]
        capacity.give_back(128)
        await asyncio.gather(first, second)
        assert order == ["first", "second"]

    run(test)


def test_idle_environments_are_stopped_lru_first_and_no_more_than_needed() -> None:
    async def test() -> None:
        stopped: list[str] = []
        idle = [
            (3.0, 128, lambda: stopped.append("newest")),
            (1.0, 128, lambda: stopped.append("oldest")),
        ]
        capacity = MemoryCapacity(256, 5, lambda: [i for i in idle if i[2] not in done])
        done: list[object] = []
        await capacity.take(128)
        await capacity.take(128)
        waiting = asyncio.create_task(capacity.take(128))
        await asyncio.sleep(0.12)  # several polls: still one stopped, not both
        assert stopped == ["oldest"]
        capacity.give_back(128, evicted=True)  # the stopped one is gone
        await waiting
        assert capacity.used_mb == 256 and capacity.stopping_mb == 0

    run(test)


def test_a_cancelled_waiter_keeps_nothing() -> None:
    async def test() -> None:
        capacity = MemoryCapacity(128, 5, lambda: [])
        await capacity.take(128)
        waiting = asyncio.create_task(capacity.take(128))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        capacity.give_back(128)
        assert capacity.used_mb == 0
        await capacity.take(128)  # the queue is not stuck behind the cancelled one

    run(test)
