"""A pool of environments isolated ahead of need, sized by the demand it sees.

The namespace backend keeps, per zygote, children already isolated (namespaces, root,
cgroups, network) that a cold start claims in a fraction of a millisecond; making one costs
tens of milliseconds of kernel work (most of it waiting: RCU grace periods when a process
joins a v1 cgroup or drops the host's mounts). This module owns one such pool and nothing
about sandboxes: what a child is, how one is made and released are given to it.

Size: at rest the pool holds `base` children (`--warm-pool`). Each claim is counted per second;
while claims came in during the last `DEMAND_WINDOW_S` seconds, the pool holds as many as the
busiest of those seconds saw (at most `cap`), so that a burst of cold starts like a recent one
finds environments ready, not a pool refilling one at a time. When the demand is gone, the
surplus is released (it costs a few MiB each, and a cgroup and a network namespace).

Making: up to `parallel` children are made at once for the pool. Their cost is mostly waiting
in the kernel, which overlaps, so a burst refills several times faster than one at a time,
even on two cores; they are made at a low CPU priority (`make(urgent=False)`), so that on a
small machine the cold starts drawing on the pool are not slowed by its refill. A claim that
finds the pool empty waits for the next child made, and has one made at full priority for it.

When: a claim that took a ready child does not refill at once (the refill would take the CPU
from that very cold start on a small machine); its owner calls `refill()` once the cold start
is over. A claim left waiting starts making at once.

One task owns nothing here: every change of state happens in plain synchronous steps on the
event loop, between awaits, as in the scheduler.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

#: how long a second of busy claims keeps the pool large
DEMAND_WINDOW_S = 60
#: children made at once
PARALLEL = 4
#: failures in a row after which the pool stops refilling until the next claim
MAX_FAILURES = 3
_RETRY_S = 0.5


class Demand:
    """Claims per second over the last `window` seconds; `peak` is the busiest second's."""

    def __init__(
        self, window: int = DEMAND_WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window = window
        self._clock = clock
        self._seconds: collections.OrderedDict[int, int] = collections.OrderedDict()

    def claimed(self) -> None:
        second = int(self._clock())
        self._seconds[second] = self._seconds.get(second, 0) + 1
        self._forget(second)

    def peak(self) -> int:
        self._forget(int(self._clock()))
        return max(self._seconds.values(), default=0)

    def _forget(self, now: int) -> None:
        while self._seconds:
            oldest = next(iter(self._seconds))
            if oldest > now - self.window:
                return
            del self._seconds[oldest]


class PreparedPool(Generic[T]):
    """Children made ahead by `make(urgent)`, handed out by `claim()`.

    `make(urgent)`: a new child; `urgent` when a claim is waiting for it, else it is made for
    the pool and may be made at a lower CPU priority (its isolation is then done in the CPU
    time cold starts leave). It may raise OSError (or a subclass): a claim waiting for a
    child gets the error. `alive(child)`: whether a pooled child can still be claimed (a dead
    one is released); `release(child)`: free a child no one will claim.
    """

    def __init__(
        self,
        name: str,
        make: Callable[[bool], Awaitable[T]],
        release: Callable[[T], Awaitable[None]],
        alive: Callable[[T], bool],
        base: int,
        cap: int,
        parallel: int = PARALLEL,
        demand: Demand | None = None,
    ) -> None:
        self.name = name
        self._make = make
        self._release = release
        self._alive = alive
        self.base = max(base, 0)
        self.cap = max(cap, self.base)
        self._parallel = max(parallel, 1)
        self.demand = demand or Demand()
        self._ready: list[T] = []
        self._waiters: collections.deque[asyncio.Future[T]] = collections.deque()
        self._making = 0
        #: of those being made, the ones made at full priority for a waiting claim
        self._urgent = 0
        self._failures = 0
        #: refilling the pool itself (not only making children for waiting claims)
        self._filling = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._trim: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def ready(self) -> int:
        return len(self._ready)

    @property
    def making(self) -> int:
        return self._making

    @property
    def target(self) -> int:
        """How many children the pool keeps ready now."""
        if self.base <= 0:
            return 0  # no pool (`--warm-pool 0`): children are made for claims only
        return min(max(self.base, self.demand.peak()), self.cap)

    async def claim(self) -> T:
        """A ready child, or the next one made. Does not refill (see `refill`)."""
        if self._closed:
            raise OSError("the sandbox pool is closed")
        self.demand.claimed()
        self._schedule_trim()
        while self._ready:
            child = self._ready.pop()
            if self._alive(child):
                return child
            self._background(self._release(child))
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._failures = 0
        self._step()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self._put(future.result())  # handed over as the claim was cancelled
            raise
        finally:
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)

    def refill(self) -> None:
        """Make children up to the target (and for waiting claims), up to `parallel` at once."""
        self._failures = min(self._failures, MAX_FAILURES - 1)
        self._filling = True
        self._step()

    def _step(self) -> None:
        if self._closed:
            return
        waiting = sum(1 for w in self._waiters if not w.done())
        if self._failures >= MAX_FAILURES and not waiting:
            return
        target = self.target
        # A child for each claim waiting, made at full priority (even beside children made
        # for the pool at a low one: the first done goes to the claim, the other is kept).
        while self._urgent < waiting and self._urgent < self._parallel:
            self._start(urgent=True)
        if self._filling:
            wanted = target - len(self._ready) - (self._making - self._urgent)
            while wanted > 0 and self._making < self._parallel:
                wanted -= 1
                self._start(urgent=False)
        if len(self._ready) >= target:
            self._filling = False
        for _ in range(len(self._ready) - target):
            self._background(self._release(self._ready.pop(0)))  # the oldest first

    def _start(self, urgent: bool) -> None:
        self._making += 1
        self._urgent += urgent
        self._background(self._make_one(urgent))

    async def _make_one(self, urgent: bool) -> None:
        try:
            child = await self._make(urgent)
        except Exception as e:
            self._failed(e)
            return
        finally:
            self._making -= 1
            self._urgent -= urgent
        self._failures = 0
        self._put(child)
        self._step()

    def _put(self, child: T) -> None:
        """A child to hand to the oldest waiting claim, else to keep."""
        if self._closed:
            self._background(self._release(child))
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(child)
                return
        self._ready.append(child)

    def _failed(self, error: Exception) -> None:
        if self._closed:
            return  # (waiting claims were failed by `close`)
        self._failures += 1
        log.warning("sandbox pool for %s: %s", self.name, error)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)
                break
        if self._retry is not None:
            self._retry.cancel()
        loop = asyncio.get_running_loop()
        if self._waiters:
            # Each claim still waiting has its own child made (and its own error, if any).
            self._retry = loop.call_later(0, self._step)
        elif self._failures < MAX_FAILURES:
            self._retry = loop.call_later(_RETRY_S * self._failures, self._step)

    def _schedule_trim(self) -> None:
        """Once the demand window has passed without claims, give the surplus back."""
        if self._trim is not None:
            self._trim.cancel()
        loop = asyncio.get_running_loop()
        self._trim = loop.call_later(self.demand.window + 1, self.refill)

    def _background(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sandbox pool for %s: %s", self.name, task.exception())

    async def close(self) -> None:
        """Release every child, fail waiting claims; making stops."""
        self._closed = True
        for handle in (self._trim, self._retry):
            if handle is not None:
                handle.cancel()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(OSError("the sandbox pool is closed"))
        ready, self._ready = self._ready, []
        await asyncio.gather(*(self._release(c) for c in ready), return_exceptions=True)
        # Children under way are released by `_put` as they arrive.
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
