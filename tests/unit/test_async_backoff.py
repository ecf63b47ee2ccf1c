"""The async queue's back-off after attempts that could not run or settle (a throttle, a
store that did not answer): it doubles once per pause, so a full window of attempts failing
together (a NATS server lost under load) pauses the lane for the first back-off, not for a
window's worth of doublings."""

from __future__ import annotations

import asyncio
from typing import Any

from lamina.events.async_queue import AsyncQueue, _Lane
from lamina.observability import Metrics
from lamina.settings import Settings
from lamina.store.event_queue import QueuedEvent


class _Store:
    """All the queue asks of its store here: to be closed."""

    async def close(self) -> None:
        pass


def test_attempts_failing_together_pause_the_lane_once() -> None:
    async def main() -> None:
        now = [1000.0]
        none: Any = None
        queue = AsyncQueue(
            Settings(retry_base_delay_s=60.0), _Store(), none, none, Metrics(), lambda: now[0]
        )
        lane = _Lane("f", 10)
        queue._lanes["f"] = lane
        events = [QueuedEvent(f"e{i}", "f", None, b"{}", now[0]) for i in range(10)]
        try:
            for event in events:
                queue._requeue_later(lane, event)
            assert (lane.backoff, lane.paused_until) == (1.0, 1001.0)
            assert len(lane.ready) == 10
            # Failing again after the pause: the next back-off is twice the last.
            now[0] = 1001.5
            queue._requeue_later(lane, events[0])
            assert (lane.backoff, lane.paused_until) == (2.0, 1003.5)
        finally:
            await queue.close()

    asyncio.run(main())
