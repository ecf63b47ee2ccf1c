"""The node's memory capacity: what live environments hold of it never exceeds it.

A new environment first takes its MemorySize from the capacity, and so does an idle one about
to run again: a running function may grow up to its MemorySize. An idle environment is frozen
and cannot grow, so under pressure it is charged only what it really holds (its sandbox's
memory, a few MB for a small function, instead of its 128 MB or more): that is what lets a
node keep a thousand small functions warm. If there is still not enough, idle environments of
any function are stopped, least recently used first (provisioned ones are kept); if that is
still not enough, the request waits in a first-come, first-served queue until environments go
away, for at most `queue_timeout_s`, and is then refused with a clear throttling error (HTTP
429), never left hanging.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Iterable

from lamina.errors import TooManyRequestsError

#: the Reason a request refused for capacity carries (what SDKs already retry on)
NO_CAPACITY_REASON = "ConcurrentInvocationLimitExceeded"


class MemoryCapacity:
    def __init__(
        self,
        capacity_mb: int,
        queue_timeout_s: float,
        idle: Callable[[], Iterable[tuple[float, int, Callable[[], None]]]],
        shrink: Callable[[], int] = lambda: 0,
    ) -> None:
        """`idle()` lists the environments that may be stopped: (last used, MB held, stop
        it); `shrink()` charges idle environments what they really hold rather than their
        MemorySize and returns the MB that freed (tried before stopping any)."""
        self.capacity_mb = capacity_mb
        self.queue_timeout_s = queue_timeout_s
        self.used_mb = 0
        #: memory of environments stopped to make room, not yet gone
        self.stopping_mb = 0
        self._idle = idle
        self._shrink = shrink
        self._waiters: collections.deque[tuple[int, asyncio.Future[None]]] = collections.deque()

    async def take(self, memory_mb: int) -> None:
        """Reserve `memory_mb` for a new environment (give it back with `give_back`)."""
        if memory_mb > self.capacity_mb:
            raise TooManyRequestsError(
                f"The function's MemorySize ({memory_mb} MB) is more than this Lamina node's "
                f"memory capacity ({self.capacity_mb} MB).",
                Reason=NO_CAPACITY_REASON,
            )
        if not self._waiters and self._fits(memory_mb):
            self.used_mb += memory_mb
            return
        deadline = time.monotonic() + self.queue_timeout_s
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (memory_mb, future)
        self._waiters.append(waiter)
        granted = False
        try:
            while True:
                self._serve()
                if future.done():
                    granted = True
                    return  # `_serve` took the memory for us
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TooManyRequestsError(
                        "Lamina has no memory for another environment now (capacity "
                        f"{self.capacity_mb} MB, in use {self.used_mb} MB); try again later.",
                        Reason=NO_CAPACITY_REASON,
                    )
                try:
                    await asyncio.wait_for(asyncio.shield(future), min(left, 0.05))
                    granted = True
                    return
                except TimeoutError:
                    continue
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if not future.done():
                future.cancel()
            elif not granted and not future.cancelled():
                # Memory handed over just as this request was cancelled: give it back.
                self.give_back(memory_mb)

    def give_back(self, memory_mb: int, evicted: bool = False) -> None:
        """An environment is gone (`evicted`: stopped by `_fits` to make room)."""
        self.used_mb -= memory_mb
        if evicted:
            self.stopping_mb -= memory_mb
        self._serve()

    def _fits(self, memory_mb: int) -> bool:
        if self.used_mb + memory_mb <= self.capacity_mb:
            return True
        # Idle environments are charged what they really hold (each read once per idle
        # spell: the ones already charged so are skipped).
        self.used_mb -= self._shrink()
        if self.used_mb + memory_mb <= self.capacity_mb:
            return True
        # Stop idle environments, least recently used first, until what is on its way back
        # would be enough; the queue is served again as each one is gone.
        candidates = sorted(self._idle(), key=lambda item: item[0])
        for _, freed_mb, stop in candidates:
            if self.used_mb - self.stopping_mb + memory_mb <= self.capacity_mb:
                break
            stop()
            self.stopping_mb += freed_mb
        return False

    def _serve(self) -> None:
        """Hand memory to waiters in arrival order (the first that does not fit waits)."""
        while self._waiters:
            memory_mb, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if not self._fits(memory_mb):
                return
            self._waiters.popleft()
            self.used_mb += memory_mb
            future.set_result(None)
