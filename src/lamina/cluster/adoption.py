"""Adoption: the queued async events of a node that died run on another node.

Every node watches `NodeDirectory.live()` and the node names that have events stored
(`JetStreamEventStore.nodes_with_events`, read at start, whenever the live nodes change and
every few TTLs). A node with events that has been missing from the live ones for longer than
the TTL is adopted by one live node: the rendezvous owner of its name among the live nodes
(highest random weight, `cluster.hashing`), so that every node agrees who it is without
talking, and a dead node's events all go to one place.

The adopter moves each event: it creates `<me>.<id>` with the event's value, then deletes
`<dead>.<id>` on the condition that it is still the revision it read (compare-and-set). Two
adopters racing (their views of the live nodes differ for a moment) both create a copy, but
only one delete succeeds: the loser removes its copy and runs nothing. A node that is not
dead after all (cut off, then back) and finished or retried the event meanwhile wins the same
way. Only the winner hands the event to its `AsyncQueue`. A crash between the create and the
delete leaves two copies: both run (at least once, as everywhere in the async queue).

A node waits a TTL before adopting even what it finds at its own start: its directory may not
have heard every live node's heartbeat yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import nats.errors
import nats.js.errors

from lamina.cluster.api import NodeDirectory
from lamina.cluster.async_store import (
    JetStreamEventStore,
    decode,
    is_wrong_last_sequence,
    nats_errors,
)
from lamina.cluster.hashing import owner
from lamina.cluster.tasks import cancel_and_wait
from lamina.store.event_queue import QueuedEvent

log = logging.getLogger(__name__)

#: events moved at once (their values are held in memory while they move)
_BATCH = 256
#: the stored node names are read again at least every this many TTLs
_RESCAN_TTLS = 6


class Adopting(Protocol):
    def adopt(self, events: Sequence[QueuedEvent]) -> None:
        """Take up events moved to this node (`AsyncQueue.adopt`)."""


class EventAdoption:
    """Moves the events of dead nodes to this one when it is their rendezvous owner."""

    def __init__(
        self,
        store: JetStreamEventStore,
        directory: NodeDirectory,
        ttl_s: float,
        interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._directory = directory
        self._ttl_s = ttl_s
        self._interval_s = interval_s if interval_s is not None else min(1.0, ttl_s / 3)
        self._clock = clock
        self._queue: Adopting | None = None
        #: nodes with events stored, other than this one
        self._known: set[str] = set()
        #: since when (clock) each known node has been missing from the live ones
        self._missing: dict[str, float] = {}
        self._live: frozenset[str] = frozenset()
        self._next_scan = 0.0
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    async def start(self, queue: Adopting) -> None:
        """Look at what is stored now, then keep checking in the background until `close`."""
        self._queue = queue
        await self._check_logged()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None

    async def check(self) -> None:
        """One round: adopt the nodes missing for longer than the TTL that this node owns."""
        now = self._clock()
        me = self._directory.self_name
        live = frozenset(n.name for n in self._directory.live())
        if me not in live:
            return  # this node may be the one cut off: it adopts nothing
        if live != self._live or now >= self._next_scan:
            self._known |= await self._store.nodes_with_events() - {me}
            self._live = live
            self._next_scan = now + _RESCAN_TTLS * self._ttl_s
        for name in self._known - live:
            self._missing.setdefault(name, now)
        for name in list(self._missing):
            if name in live:
                del self._missing[name]
            elif now - self._missing[name] >= self._ttl_s:
                if owner(name, live) == me:
                    await self.adopt(name)
                del self._missing[name]
                self._known.discard(name)

    async def adopt(self, dead: str) -> int:
        """Move every event of node `dead` here and hand the moved ones to the queue; how
        many were moved (by this node: not those another adopter took)."""
        moved = 0
        batch: list[tuple[str, bytes, int]] = []
        async for entry in self._store.entries(dead):
            batch.append(entry)
            if len(batch) >= _BATCH:
                moved += await self._move(dead, batch)
                batch = []
        if batch:
            moved += await self._move(dead, batch)
        if moved:
            log.warning("adopted %d queued async event(s) of node %s", moved, dead)
        return moved

    async def _move(self, dead: str, batch: list[tuple[str, bytes, int]]) -> int:
        results = await asyncio.gather(
            *(self._move_one(dead, *entry) for entry in batch), return_exceptions=True
        )
        # Every event moved is handed over, even when others failed to move: it is stored
        # under this node's name now, and nobody else would run it.
        events = [e for e in results if isinstance(e, QueuedEvent)]
        if events and self._queue is not None:
            self._queue.adopt(events)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return len(events)

    async def _move_one(
        self, dead: str, event_id: str, value: bytes, revision: int
    ) -> QueuedEvent | None:
        kv = await self._store.kv()
        mine = self._store.key(event_id)
        created = True
        with nats_errors(f"cannot adopt event {event_id} of node {dead}"):
            try:
                await kv.create(mine, value)
            except nats.js.errors.Error as e:
                if not is_wrong_last_sequence(e):
                    raise
                created = False  # already ours (a move of ours that stopped half way)
            try:
                await kv.delete(self._store.key(event_id, dead), last=revision)
            except nats.js.errors.Error as e:
                if not is_wrong_last_sequence(e):
                    raise
                # Another adopter took it, or its node changed it: not ours to run.
                if created:
                    await self._store.purge(mine)
                return None
        # Its delete marker: a failure here leaves a marker (skipped by every reader), and
        # the event is ours all the same.
        with contextlib.suppress(OSError):
            await self._store.purge(self._store.key(event_id, dead))
        return decode(event_id, value) if created else None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            await self._check_logged()

    async def _check_logged(self) -> None:
        """`check`, saying once (not every round) that NATS cannot be reached."""
        try:
            await self.check()
        except (OSError, nats.errors.Error) as e:
            if not self._failing:
                log.warning("cannot adopt the events of dead nodes (trying again): %s", e)
            self._failing = True
        else:
            self._failing = False
