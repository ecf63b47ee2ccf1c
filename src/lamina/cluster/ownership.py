"""Which node runs which job: each of a set of jobs (an event-source mapping's pollers, a
schedule's ticks) runs on one live node at a time, the one holding the job's lease (`Leases`).

Who should run a job is its rendezvous owner among the live nodes (`rendezvous`: the highest
blake2b weight of node and key), so every node computes the same split without talking to the
others, and a node joining or leaving moves only its own share. Who does run it is whoever
holds the lease: the directory's view may differ between nodes for a heartbeat or two, the
lease never lets two run at once. An `Ownership` keeps this node's share in step:

- a job not held here is acquired when this node is its rightful owner; or, as a rescue, when
  nobody has run it for `ttl_s` (its lease is free: its holder died, or its rightful owner
  does not take it). A failed rescue is tried again after another `ttl_s`, so a key a live
  node holds costs each other node one lease read per `ttl_s`, not one per pass.
- a job held here is handed over when another live node is its rightful owner and the live
  set changed since this node took it: stopped here first (`stopped`), then released; the new
  owner takes it at its next look (within `ttl_s / 3`). Never two at once, a gap of at most
  `ttl_s / 3`. A job rescued from a rightful owner that did not take it stays where it is
  until the live set changes, rather than moving back and forth.
- a lease lost (`Leases.on_lost`: not renewed in time, or taken by another node after it
  expired) stops the job at once (it is not this node's from that moment; `stopped` runs in a
  task of its own).

This is looked at every `ttl_s / 3` and whenever the live set changes (the directory's view is
in memory: it is checked every `LIVE_CHECK_S`). With `LocalLeases` and no directory there is
one node and nothing to look at: every job is this node's as soon as it is wanted, with no
background task.

`started(key)` and `stopped(key)` report what happens in the background (a job taken or given
up by a pass, a lost lease); `want` and `drop`, the user's own requests, answer for themselves.
The callbacks run outside the per-key locks, but a hand-over waits for `stopped` before it
releases the lease: it must return once the job no longer runs here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from lamina.cluster.api import Leases, NodeDirectory
from lamina.cluster.hashing import owner as rendezvous

log = logging.getLogger(__name__)

#: how often the directory's view of the live nodes is compared with the last one (seconds)
LIVE_CHECK_S = 0.25
#: acquisitions and hand-overs of one pass run at most this many at once
_PARALLEL = 16

JobEvent = Callable[[str], Awaitable[None]]


class Ownership:
    """This node's share of a set of jobs, by key; see the module's docstring."""

    def __init__(
        self,
        leases: Leases,
        directory: NodeDirectory | None = None,
        *,
        started: JobEvent,
        stopped: JobEvent,
        what: str = "jobs",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._leases = leases
        self._directory = directory
        self._started = started
        self._stopped = stopped
        self._what = what
        self._clock = clock
        self._self = directory.self_name if directory is not None else ""
        self._ttl = leases.ttl_s
        self._wanted: set[str] = set()
        #: the keys held here, each with the live set it was taken with
        self._owned: dict[str, frozenset[str]] = {}
        #: keys being stopped, handed over or lost (no longer owned; not to be taken again
        #: before they have stopped)
        self._leaving: set[str] = set()
        #: when a key nobody is seen to run may be taken as a rescue
        self._rescue_at: dict[str, float] = {}
        #: jobs run here as a rescue (not this node's by hashing), since when
        self._rescued: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._nodes = self._live()
        self._task: asyncio.Task[None] | None = None
        self._parallel = asyncio.Semaphore(_PARALLEL)
        #: the problem last logged per key (one warning per distinct problem, not per try)
        self._logged: dict[str, str] = {}
        self._closing = False
        #: jobs of lost leases being stopped
        self._lost_stops: set[asyncio.Task[None]] = set()
        leases.on_lost(self._lost)

    # -- the user's side -------------------------------------------------------------------

    def start(self) -> None:
        """Look again in the background (not needed with one node and local leases)."""
        if self._directory is None and not math.isfinite(self._ttl):
            return
        self._nodes = self._live()
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop looking and release every lease held (the user has stopped its jobs), so
        that other nodes take them at once rather than after `ttl_s`."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self._lost_stops, return_exceptions=True)
        owned = list(self._owned)
        self._owned.clear()
        await asyncio.gather(*(self._release(key) for key in owned))

    def owns(self, key: str) -> bool:
        """Whether the job runs here now."""
        return key in self._owned

    def wanted(self) -> frozenset[str]:
        return frozenset(self._wanted)

    async def want(self, key: str) -> bool:
        """Add `key` to the jobs (taking it now if this node is its rightful owner); whether
        it runs here. A key already wanted is answered from memory."""
        if key in self._wanted:
            return key in self._owned
        self._wanted.add(key)
        self._rescue_at[key] = self._clock() + self._ttl
        nodes = self._live()
        if rendezvous(key, nodes) == self._self:
            await self._take(key, nodes, rescue=False, report=False)
        return key in self._owned

    async def drop(self, key: str) -> None:
        """Remove `key` from the jobs, releasing its lease if held (the user has stopped it)."""
        self._wanted.discard(key)
        self._rescue_at.pop(key, None)
        self._rescued.pop(key, None)
        self._logged.pop(key, None)
        lock = self._lock(key)
        async with lock:
            if self._owned.pop(key, None) is not None:
                await self._release(key)
        if key not in self._wanted and not lock.locked():
            self._locks.pop(key, None)

    async def evaluate(self) -> None:
        """One look at every job: take, hand over or rescue as the module's docstring says.
        The background task calls it; tests call it to step."""
        now = self._clock()
        nodes = self._live()
        if nodes != self._nodes:
            self._nodes = nodes
            # The jobs' new rightful owners get their chance before anyone rescues them.
            for key in self._rescue_at:
                self._rescue_at[key] = max(self._rescue_at[key], now + self._ttl)
        work: list[Coroutine[Any, Any, None]] = []
        for key in sorted(self._wanted):
            if key in self._leaving:
                continue
            rightful = rendezvous(key, nodes) == self._self
            taken_with = self._owned.get(key)
            if taken_with is not None:
                # A rescue stays put while the live nodes stay the same (no bouncing), but
                # not for good: its rightful owner may have been busy stopping it when the
                # live nodes last changed (a node that rejoined after a partition).
                given_back = now - self._rescued.get(key, now) >= 2 * self._ttl
                if not rightful and (taken_with != nodes or given_back):
                    work.append(self._hand_over(key))
            elif rightful:
                work.append(self._take(key, nodes, rescue=False))
            elif now >= self._rescue_at.get(key, now):
                work.append(self._take(key, nodes, rescue=True))
        await asyncio.gather(*(self._bounded(w) for w in work))

    # -- moves -------------------------------------------------------------------------------

    async def _take(
        self, key: str, nodes: frozenset[str], *, rescue: bool, report: bool = True
    ) -> None:
        async with self._lock(key):
            if (
                self._closing
                or key not in self._wanted
                or key in self._owned
                or key in self._leaving
            ):
                return
            if not await self._acquire(key):
                if rescue:
                    self._rescue_at[key] = self._clock() + self._ttl
                return
            self._owned[key] = nodes
            self._rescue_at.pop(key, None)
            if rescue:
                self._rescued[key] = self._clock()
            else:
                self._rescued.pop(key, None)
        if rescue:
            log.info("%s: %s had no live holder: running it here", self._what, key)
        if report:
            await self._report(self._started, key)

    async def _hand_over(self, key: str) -> None:
        async with self._lock(key):
            if self._owned.pop(key, None) is None:
                return
            self._rescued.pop(key, None)
            self._leaving.add(key)
        try:
            await self._report(self._stopped, key)
        finally:
            async with self._lock(key):
                self._leaving.discard(key)
                await self._release(key)
                self._waiting(key)
        log.info("%s: %s handed over to %s", self._what, key, rendezvous(key, self._nodes) or "?")

    async def _lost(self, key: str) -> None:
        """`Leases.on_lost`: the job stops here at once (keys of other users are ignored).
        Not owned from this moment; the stopping runs in a task of its own, so that a job
        that takes its time to stop does not hold up the lease service's renewals."""
        if self._owned.pop(key, None) is None:
            return
        self._rescued.pop(key, None)
        self._leaving.add(key)  # not taken again before it has stopped
        log.warning("%s: the lease of %s was lost: stopping it here", self._what, key)
        task = asyncio.get_running_loop().create_task(self._stop_lost(key))
        self._lost_stops.add(task)
        task.add_done_callback(self._lost_stops.discard)

    async def _stop_lost(self, key: str) -> None:
        try:
            await self._report(self._stopped, key)
        finally:
            self._leaving.discard(key)
            self._waiting(key)

    def _waiting(self, key: str) -> None:
        if key in self._wanted:
            self._rescue_at[key] = self._clock() + self._ttl

    # -- the lease service -------------------------------------------------------------------

    async def _acquire(self, key: str) -> bool:
        try:
            got = await self._leases.acquire(key)
        except Exception as e:  # whatever the lease service raises: this key waits
            self._problem(key, f"cannot take the lease of {key}: {e}")
            return False
        self._logged.pop(key, None)
        return got

    async def _release(self, key: str) -> None:
        try:
            await self._leases.release(key)
        except Exception as e:  # it expires by itself within ttl_s
            self._problem(key, f"cannot release the lease of {key} (it expires by itself): {e}")

    def _problem(self, key: str, what: str) -> None:
        if self._logged.get(key) != what:
            log.warning("%s: %s", self._what, what)
            self._logged[key] = what

    # -- helpers -----------------------------------------------------------------------------

    def _live(self) -> frozenset[str]:
        """The live nodes' names, this one always among them: the leases, not the
        directory's view of this node, decide whether it may run a job."""
        if self._directory is None:
            return frozenset({self._self})
        return frozenset(n.name for n in self._directory.live()) | {self._self}

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    async def _bounded(self, work: Awaitable[None]) -> None:
        async with self._parallel:
            await work

    async def _report(self, callback: JobEvent, key: str) -> None:
        try:
            await callback(key)
        except Exception:  # a bug of the user's must not stop the others' jobs moving
            log.exception("%s: reporting %s failed", self._what, key)

    async def _loop(self) -> None:
        period = self._ttl / 3
        check = LIVE_CHECK_S if self._directory is not None else period
        next_pass = self._clock() + period
        while True:
            await asyncio.sleep(max(0.0, min(check, next_pass - self._clock())))
            if self._live() == self._nodes and self._clock() < next_pass:
                continue
            try:
                await self.evaluate()
            except Exception:  # a bug of ours must not end the looking
                log.exception("%s: looking at the jobs failed", self._what)
            next_pass = self._clock() + period
