"""Leases on NATS JetStream KV (`Leases`): one holder at a time for a named job.

The bucket `<prefix>_leases` keeps each entry `ttl_s` after its last put (the bucket's
max_age), so a lease whose holder died is free `ttl_s` after its last renewal. `acquire` is
`create` (refused while the key exists) or, when the present value is this holder's, an
`update` on its revision. Held keys are renewed every `ttl_s / 3` with an `update` on the
revision last written: a mismatch means another holder took the key after it expired.

A partitioned holder must stop acting before anyone else can take the lease: its entry
expires `ttl_s` after the last renewal the server accepted, so the holder drops a key (and
calls `on_lost`) when it could not renew it for 5/6 of `ttl_s` (a failing renewal is retried
sooner than the usual `ttl_s / 3`), i.e. before the server lets the entry expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import nats.js.errors
from nats.js.kv import KeyValue

from lamina.cluster.api import LeaseLost
from lamina.cluster.nats import NATS_ERRORS, NatsLink, kv_key
from lamina.cluster.tasks import cancel_and_wait

log = logging.getLogger(__name__)


@dataclass
class _Held:
    revision: int
    #: monotonic time the last accepted write was sent
    renewed_at: float


class NatsLeases:
    """`Leases` on the KV bucket `<prefix>_leases`; `start` before use, `close` at shutdown
    (releases every held key)."""

    def __init__(self, link: NatsLink, holder: str, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._link = link
        self._holder = holder
        self._value = holder.encode()
        self._kv: KeyValue | None = None
        self._held: dict[str, _Held] = {}
        self._callbacks: list[LeaseLost] = []
        self._renewer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def _interval(self) -> float:
        return self.ttl_s / 3

    async def start(self) -> None:
        self._kv = await self._link.key_value("leases", ttl_s=self.ttl_s)
        self._renewer = asyncio.create_task(self._renew_forever())

    async def close(self) -> None:
        if self._renewer is not None:
            await cancel_and_wait(self._renewer)
            self._renewer = None
        for key in list(self._held):
            await self.release(key)

    @property
    def kv(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("NatsLeases.start() was not called")
        return self._kv

    # --- Leases ----------------------------------------------------------------------------

    async def acquire(self, key: str) -> bool:
        async with self._lock:
            if key in self._held:
                return True
            name = kv_key(key)
            sent = time.monotonic()
            revision: int | None
            try:
                revision = await asyncio.wait_for(self.kv.create(name, self._value), self._interval)
            except nats.js.errors.KeyWrongLastSequenceError:
                revision = await self._take_back(name)
                if revision is None:
                    return False
            except NATS_ERRORS as err:
                log.warning("cannot acquire lease %s: %s", key, str(err) or type(err).__name__)
                return False
            self._held[key] = _Held(revision, sent)
            return True

    async def _take_back(self, name: str) -> int | None:
        """The key exists: update it if its value is this holder's (a lease of ours from
        before a restart); its new revision, or None if another holder has it."""
        try:
            entry = await asyncio.wait_for(self.kv.get(name), self._interval)
            if entry.value != self._value or entry.revision is None:
                return None
            return await asyncio.wait_for(
                self.kv.update(name, self._value, last=entry.revision), self._interval
            )
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.NotFoundError):
            return None
        except NATS_ERRORS:
            return None

    async def release(self, key: str) -> None:
        async with self._lock:
            held = self._held.pop(key, None)
            if held is None:
                return
            with contextlib.suppress(*NATS_ERRORS):
                await asyncio.wait_for(
                    self.kv.delete(kv_key(key), last=held.revision), self._interval
                )

    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    def on_lost(self, callback: LeaseLost) -> None:
        self._callbacks.append(callback)

    # --- renewal ---------------------------------------------------------------------------

    @property
    def _give_up_after(self) -> float:
        """Seconds after its last accepted renewal that a key is dropped: short of `ttl_s`
        by a margin for the event loop's and the clocks' lag."""
        return self.ttl_s * 5 / 6

    async def _renew_forever(self) -> None:
        wait = self._interval
        while True:
            await asyncio.sleep(wait)
            try:
                wait = await self._renew_all()
            except Exception:
                log.exception("lease renewal failed")
                wait = self._interval

    async def _renew_all(self) -> float:
        """Renew every held key; the seconds until the next round (sooner than the
        interval while a renewal fails: a failing key is retried until its give-up time)."""
        async with self._lock:
            keys = list(self._held)
            results = await asyncio.gather(*(self._renew(key) for key in keys))
            lost = [key for key, kept in zip(keys, results, strict=True) if not kept]
            for key in lost:
                self._held.pop(key, None)
            now = time.monotonic()
            failing = [
                h.renewed_at + self._give_up_after - now
                for h in self._held.values()
                if now - h.renewed_at > self._interval
            ]
        for key in lost:
            self._report_lost(key)
        if not failing:
            return self._interval
        return max(0.05, min(self._interval / 2, *failing))

    async def _renew(self, key: str) -> bool:
        """Renew one held key; False if it is lost (taken, or unrenewable until its give-up
        time)."""
        held = self._held[key]
        sent = time.monotonic()
        left = held.renewed_at + self._give_up_after - sent
        try:
            held.revision = await asyncio.wait_for(
                self.kv.update(kv_key(key), self._value, last=held.revision),
                max(0.05, min(self._interval, left)),
            )
            held.renewed_at = sent
            return True
        except nats.js.errors.KeyWrongLastSequenceError:
            # an update that timed out here may still have been written: then the entry is
            # ours at a revision we never heard of
            revision = await self._take_back(kv_key(key))
            if revision is None:
                log.warning("lease %s was taken by another holder", key)
                return False
            held.revision, held.renewed_at = revision, sent
            return True
        except NATS_ERRORS as err:
            if time.monotonic() < held.renewed_at + self._give_up_after - 0.01:
                return True
            log.warning(
                "lease %s lost: not renewed for %.1f s (%s)",
                key,
                time.monotonic() - held.renewed_at,
                str(err) or type(err).__name__,
            )
            return False

    def _report_lost(self, key: str) -> None:
        for callback in list(self._callbacks):
            task = asyncio.create_task(self._call(callback, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _call(callback: LeaseLost, key: str) -> None:
        try:
            await callback(key)
        except Exception:
            log.exception("a lease-lost callback failed for %s", key)
