"""Stopping a node's background tasks (`cancel_and_wait`)."""

from __future__ import annotations

import asyncio
from typing import Any

#: seconds between cancellations of a task that goes on after one
RETRY_S = 0.5


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and wait until it has ended; raise what it raised, if not cancelled.

    The cancellation is repeated every `RETRY_S` while the task runs on: on Python 3.11,
    `asyncio.wait_for` returns its inner call's result instead of raising when a
    cancellation arrives just as that call completes, so a loop built on it can survive one
    cancellation, and awaiting it after a single `cancel()` would wait for good."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RETRY_S)
    if not task.cancelled():
        task.result()
