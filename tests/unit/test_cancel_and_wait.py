"""`cluster.tasks.cancel_and_wait`: a background task is stopped even when it survives one
cancellation (as a loop around Python 3.11's `asyncio.wait_for` can)."""

from __future__ import annotations

import asyncio

import pytest

from lamina.cluster import tasks
from lamina.cluster.tasks import cancel_and_wait


def test_a_task_that_swallows_a_cancellation_is_cancelled_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tasks, "RETRY_S", 0.05)
    swallowed = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(1)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # the first one is lost, as wait_for may lose it

    async def main() -> asyncio.Task[None]:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait(task), 2)
        return task

    task = asyncio.run(main())
    assert swallowed == [True] and task.cancelled()


def test_what_the_task_raised_is_raised() -> None:
    async def failing() -> None:
        raise KeyError("boom")

    async def main() -> None:
        task = asyncio.create_task(failing())
        await asyncio.sleep(0)
        await cancel_and_wait(task)

    with pytest.raises(KeyError):
        asyncio.run(main())


def test_a_task_that_ends_when_cancelled_is_waited_for() -> None:
    ended = []

    async def polite() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            ended.append(True)

    async def main() -> None:
        task = asyncio.create_task(polite())
        await asyncio.sleep(0)
        await cancel_and_wait(task)
        assert task.cancelled()

    asyncio.run(main())
    assert ended == [True]
