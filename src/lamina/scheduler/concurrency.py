"""Lambda's concurrency accounting: an account limit, and reserved concurrency per function.

A function with reserved concurrency N runs at most N invocations at once, out of its own
share; every other function shares what is left of the account limit (the unreserved pool).
An invocation over its limit is refused at once with HTTP 429 and Lambda's `Reason`, never
queued. Counting happens on the event loop only (no locks), and `hold()` releases on every
path, so the counts return to zero whatever the invocations did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Protocol

from lamina.errors import TooManyRequestsError

RESERVED_EXCEEDED = "ReservedFunctionConcurrentInvocationLimitExceeded"
ACCOUNT_EXCEEDED = "ConcurrentInvocationLimitExceeded"


class ConcurrencyControl(Protocol):
    """What the scheduler asks of concurrency accounting: this module's `Concurrency` on a
    single machine, `cluster.concurrency.ClusterConcurrency` across a cluster. A lease is
    taken in two steps so that the single machine's stays free of awaits:

        held = control.try_hold(name) or await control.hold_async(name)
        with held as lease: ...

    `try_hold` decides without I/O: the lease (to be entered at once), None if only the
    cluster can tell, or TooManyRequestsError (429). `hold_async` asks the cluster, and
    gives the lease or raises TooManyRequestsError."""

    @property
    def account_limit(self) -> int: ...

    @property
    def unreserved_limit(self) -> int: ...

    def set_reserved(self, function_name: str, limit: int | None) -> None: ...

    def running(self, function_name: str | None = None) -> int: ...

    def try_hold(self, function_name: str) -> AbstractContextManager[Lease] | None: ...

    async def hold_async(self, function_name: str) -> AbstractContextManager[Lease]: ...


class Concurrency:
    def __init__(self, account_limit: int) -> None:
        self.account_limit = account_limit
        self._reserved: dict[str, int] = {}
        self._running: dict[str, int] = {}
        self._unreserved_running = 0

    @property
    def unreserved_limit(self) -> int:
        return self.account_limit - sum(self._reserved.values())

    def set_reserved(self, function_name: str, limit: int | None) -> None:
        """Set (or, with None, remove) a function's reserved concurrency."""
        if limit is None:
            self._reserved.pop(function_name, None)
        else:
            self._reserved[function_name] = limit

    def running(self, function_name: str | None = None) -> int:
        """Invocations running now: of one function, or in all."""
        if function_name is not None:
            return self._running.get(function_name, 0)
        return sum(self._running.values())

    @contextmanager
    def hold(self, function_name: str) -> Iterator[Lease]:
        """A lease on one concurrent execution of the function, for the block's duration
        (or longer: `Lease.extend_until`); TooManyRequestsError (429) if there is none."""
        reserved = self._reserved.get(function_name)
        running = self._running.get(function_name, 0)
        if reserved is not None:
            if running >= reserved:
                raise TooManyRequestsError("Rate Exceeded.", Reason=RESERVED_EXCEEDED)
        elif self._unreserved_running >= self.unreserved_limit:
            raise TooManyRequestsError("Rate Exceeded.", Reason=ACCOUNT_EXCEEDED)
        # The pool the lease came from, fixed now: a reservation changed meanwhile must not
        # make the release count against the other pool.
        from_unreserved = reserved is None
        self._running[function_name] = running + 1
        if from_unreserved:
            self._unreserved_running += 1

        def release() -> None:
            left = self._running[function_name] - 1
            if left:
                self._running[function_name] = left
            else:
                del self._running[function_name]
            if from_unreserved:
                self._unreserved_running -= 1

        lease = Lease()
        try:
            yield lease
        finally:
            if lease.until is not None and not lease.until.done():
                lease.until.add_done_callback(lambda _: release())
            else:
                release()

    #: `hold` itself: on one machine every lease is decided without I/O
    try_hold = hold

    async def hold_async(self, function_name: str) -> AbstractContextManager[Lease]:
        return self.hold(function_name)


class Lease:
    """One concurrent execution held by `Concurrency.hold`."""

    def __init__(self) -> None:
        self.until: asyncio.Future[None] | None = None

    def extend_until(self, done: asyncio.Future[None]) -> None:
        """Keep the execution counted after the block, until `done` (an environment whose
        extensions still work on the invocation is still busy, as Lambda counts it)."""
        self.until = done
