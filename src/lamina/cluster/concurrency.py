"""Account and reserved concurrency across a cluster: every node counts its own invocations
as `scheduler.concurrency.Concurrency` does, within GRANTS of slots it holds in the shared
database (`store.concurrency_grants`), so that all nodes together never run more than a
limit allows.

The pools are Lambda's: "account-unreserved" (the account limit less every reservation) and
"reserved:<function>". An invocation takes a slot of its node's grant without I/O (the hot
path stays what it is on one machine); only when the grant is used up does the node ask the
database for more, growing it by half (at least one slot) as far as the other nodes' grants
leave room. Why PostgreSQL rather than NATS KV: the reserved limits already live in that
database, a row lock orders two nodes' grants without a retry loop of compare-and-set, and
expiry runs on one clock (the database's).

Every `heartbeat_s` a node renews its grants and gives back the slots it did not use since
the last renewal, so another node can take them. A node refused a slot is recorded as
wanting one (for `ttl_s`); while some node wants slots of a pool, the nodes sharing it take
no new lease beyond their fair share (the limit over the nodes holding or wanting slots),
so a busy node that re-takes every slot it frees cannot starve the others.

A grant lasts `ttl_s` after its last renewal: a dead node's slots come back within
`ttl_s`. A node counts its own grants as expired `ttl_s` after it SENT the renewal (never
later than the database does), so a node that cannot reach the database runs within what
it holds until then, and refuses (429) after: it can run fewer invocations than the limit,
never more.

Limits are what this node was told (`set_reserved`, fed by the change feed). A lowered
limit takes effect as invocations finish: a node whose pool's grants add up to more than
the limit takes no new lease beyond its fair share, and gives back what it stops using.
Provisioned concurrency needs nothing of its own here: as on one machine, an invocation
that runs on a provisioned environment holds a slot of its function's pool like any other.
What a cluster still lacks for it is placement (which nodes start a version's N provisioned
environments, and who starts them again when a node dies) and routing invocations to them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import TypeVar

from lamina.cluster.api import ClusterConfigError
from lamina.cluster.tasks import cancel_and_wait
from lamina.errors import TooManyRequestsError
from lamina.scheduler.concurrency import ACCOUNT_EXCEEDED, RESERVED_EXCEEDED, Lease
from lamina.settings import Settings
from lamina.store.concurrency_grants import GrantStore, GrantStoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

UNRESERVED_POOL = "account-unreserved"
#: seconds a node refuses at once, without asking again, after the database had no slot
#: for a pool (or could not be reached): at the limit, every refused invocation would
#: otherwise be a round trip
_FULL_S = 0.1
_DOWN_S = 1.0


def reserved_pool(function_name: str) -> str:
    return f"reserved:{function_name}"


@dataclass
class _Pool:
    """This node's share of one pool. A new lease needs `used < granted`; the database
    grants this node at least `max(used, granted)` (`granted` is raised only after the
    database raised it, and lowered before the database is told)."""

    key: str
    reason: str
    granted: int = 0
    used: int = 0
    #: while another node wants slots of the pool (or the nodes hold more than its limit):
    #: this node's fair share of it, beyond which it takes no new lease (None: neither)
    fair: int | None = None
    #: the most slots used at once since the last renewal: what the node keeps
    peak: int = 0
    #: `time.monotonic()` at which this node stops trusting its grant
    valid_until: float = 0.0
    #: `time.monotonic()` until which the database is known to have no slot to add
    full_until: float = 0.0


class ClusterConcurrency:
    """The scheduler's `ConcurrencyControl` on a node of a cluster (see the module doc)."""

    def __init__(
        self,
        account_limit: int,
        store: GrantStore,
        node: str,
        *,
        ttl_s: float,
        heartbeat_s: float,
    ) -> None:
        self.account_limit = account_limit
        self._store = store
        self._node = node
        self._ttl_s = ttl_s
        self._heartbeat_s = heartbeat_s
        self._reserved: dict[str, int] = {}
        self._unreserved_limit = account_limit
        self._running: dict[str, int] = {}
        self._unreserved = _Pool(UNRESERVED_POOL, ACCOUNT_EXCEEDED)
        self._pools: dict[str, _Pool] = {UNRESERVED_POOL: self._unreserved}
        # One store call at a time, and its result applied before the next starts: a grant
        # raised and one lowered in flight together could leave `granted` above the
        # database's.
        self._lock = asyncio.Lock()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="lamina-grants")
        self._renewer: asyncio.Task[None] | None = None
        self._down_until = 0.0
        self._closed = False

    @property
    def unreserved_limit(self) -> int:
        return self._unreserved_limit

    def set_reserved(self, function_name: str, limit: int | None) -> None:
        """Set (or, with None, remove) a function's reserved concurrency."""
        if limit is None:
            self._reserved.pop(function_name, None)
        else:
            self._reserved[function_name] = limit
        self._unreserved_limit = self.account_limit - sum(self._reserved.values())

    def running(self, function_name: str | None = None) -> int:
        """Invocations running now on this node: of one function, or in all."""
        if function_name is not None:
            return self._running.get(function_name, 0)
        return sum(self._running.values())

    def granted(self, pool: str) -> int:
        """The slots of `pool` this node may hold leases of now."""
        found = self._pools.get(pool)
        return found.granted if found is not None else 0

    @classmethod
    def for_node(cls, settings: Settings) -> ClusterConcurrency | None:
        """A cluster node's (None on a single machine: `Concurrency` counts there)."""
        cluster = settings.cluster
        if cluster is None:
            return None
        return cls(
            settings.concurrency_limit,
            GrantStore(cluster.database_url),
            cluster.node_name,
            ttl_s=cluster.ttl_s,
            heartbeat_s=cluster.heartbeat_s,
        )

    async def start(self) -> None:
        """Create the tables if missing, then renew grants every `heartbeat_s` until `close`.
        Raises `ClusterConfigError` if the database cannot be reached."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._store.create_all)
        except GrantStoreUnavailable as e:
            raise ClusterConfigError(str(e)) from e
        self._renewer = asyncio.get_running_loop().create_task(self._renew_forever())

    async def close(self, *, give_back: bool = True) -> None:
        """Stop renewing and give every grant back at once; with `give_back=False` the
        grants are left to expire, as a node that died leaves them. A second call does
        nothing."""
        if self._closed:
            return
        self._closed = True
        if self._renewer is not None:
            await cancel_and_wait(self._renewer)
            self._renewer = None
        if give_back:
            async with self._lock:
                for pool in self._pools.values():
                    pool.granted = 0
                loop = asyncio.get_running_loop()
                try:
                    await asyncio.wait_for(
                        loop.run_in_executor(self._executor, self._store.give_back, self._node),
                        self._ttl_s / 2,
                    )
                except GrantStoreUnavailable as e:
                    log.warning("concurrency grants left to expire: %s", e)
                except TimeoutError:
                    log.warning(
                        "concurrency grants left to expire: the database did not answer "
                        "within %g s",
                        self._ttl_s / 2,
                    )
        await asyncio.to_thread(self._executor.shutdown)
        self._store.dispose()

    # -- leases ---------------------------------------------------------------------------

    def try_hold(self, function_name: str) -> AbstractContextManager[Lease] | None:
        """A lease from this node's grant (no I/O); None if the grant is used up or
        expired (ask `hold_async`); TooManyRequestsError if the limit itself is reached."""
        reserved = self._reserved.get(function_name)
        if reserved is not None:
            if self._running.get(function_name, 0) >= reserved:
                raise TooManyRequestsError("Rate Exceeded.", Reason=RESERVED_EXCEEDED)
            pool = self._pools.get(reserved_pool(function_name))
            if pool is None:
                return None
        else:
            pool = self._unreserved
            if pool.used >= self._unreserved_limit:
                raise TooManyRequestsError("Rate Exceeded.", Reason=ACCOUNT_EXCEEDED)
        if pool.used >= pool.granted or time.monotonic() >= pool.valid_until:
            return None
        return self._take(function_name, pool)

    async def hold_async(self, function_name: str) -> AbstractContextManager[Lease]:
        """A lease, growing this node's grant from the database if it must;
        TooManyRequestsError (429) if the cluster has no slot to spare (or the database
        cannot be reached and this node's grant is used up)."""
        async with self._lock:
            held = self.try_hold(function_name)
            if held is not None:
                return held
            reserved = self._reserved.get(function_name)
            if reserved is None:
                pool, limit = self._unreserved, self._unreserved_limit
            else:
                key = reserved_pool(function_name)
                pool = self._pools.get(key) or self._pools.setdefault(
                    key, _Pool(key, RESERVED_EXCEEDED)
                )
                limit = reserved
            now = time.monotonic()
            if (
                now < pool.full_until
                or now < self._down_until
                or (pool.fair is not None and pool.used >= pool.fair)
            ):
                raise TooManyRequestsError("Rate Exceeded.", Reason=pool.reason)
            need = pool.used + 1
            want = min(max(need, pool.granted + max(1, pool.granted // 2)), limit)
            if pool.fair is not None:
                want = min(want, pool.fair)
            try:
                granted = await self._call(
                    self._store.take, pool.key, self._node, need, want, limit, self._ttl_s
                )
            except GrantStoreUnavailable as e:
                self._down_until = time.monotonic() + _DOWN_S
                log.warning("%s: refusing invocations beyond this node's grants", e)
                raise TooManyRequestsError("Rate Exceeded.", Reason=pool.reason) from e
            # What the database grants may be more than `want` (slots this node still
            # uses beyond its fair share): new leases stay within `want`.
            pool.granted = min(granted, max(want, pool.granted))
            pool.valid_until = now + self._ttl_s
            if pool.used >= pool.granted:
                pool.full_until = time.monotonic() + _FULL_S
                raise TooManyRequestsError("Rate Exceeded.", Reason=pool.reason)
            return self._take(function_name, pool)

    def _take(self, function_name: str, pool: _Pool) -> _Held:
        pool.used += 1
        if pool.used > pool.peak:
            pool.peak = pool.used
        self._running[function_name] = self._running.get(function_name, 0) + 1
        return _Held(self, function_name, pool)

    def _release(self, function_name: str, pool: _Pool) -> None:
        pool.used -= 1
        pool.full_until = 0.0
        left = self._running[function_name] - 1
        if left:
            self._running[function_name] = left
        else:
            del self._running[function_name]

    # -- renewal --------------------------------------------------------------------------

    async def renew(self) -> None:
        """Renew this node's grants and give back the slots unused since the last renewal.
        Raises `GrantStoreUnavailable` (the grants then run out at their expiry)."""
        async with self._lock:
            keep: dict[str, int] = {}
            for pool in self._pools.values():
                pool.granted = min(pool.granted, max(pool.used, pool.peak))
                if pool.fair is not None:
                    pool.granted = min(pool.granted, pool.fair)
                pool.peak = pool.used
                keep[pool.key] = max(pool.used, pool.granted)
            sent = time.monotonic()
            renewed = await self._call(self._store.renew, self._node, keep, self._ttl_s)
            for key, pool in list(self._pools.items()):
                held = renewed.get(key)
                if held is None:
                    pool.granted, pool.fair = 0, None
                    if pool.used == 0 and pool is not self._unreserved:
                        del self._pools[key]
                    continue
                pool.granted = min(pool.granted, held.slots)
                pool.valid_until = sent + self._ttl_s
                limit = self._limit(key)
                contended = held.wanted or held.total > limit
                pool.fair = max(1, limit // held.sharing) if contended and limit else None
                if pool.fair is not None:
                    pool.granted = min(pool.granted, pool.fair)

    def _limit(self, pool: str) -> int:
        if pool == UNRESERVED_POOL:
            return self._unreserved_limit
        return self._reserved.get(pool.removeprefix("reserved:"), 0)

    async def _renew_forever(self) -> None:
        # Ends when the node closes, not only when cancelled: on Python 3.11 a cancellation
        # that arrives as the store call inside `asyncio.wait_for` completes is swallowed
        # (the call's result is returned instead), and `close()`, awaiting this task, would
        # then wait for good while it went on renewing (or, closed, refusing) forever.
        while not self.is_closed():
            await asyncio.sleep(self._heartbeat_s)
            if self.is_closed():
                return
            try:
                await self.renew()
            except GrantStoreUnavailable as e:
                if not self.is_closed():
                    log.warning("%s: concurrency grants not renewed", e)

    def is_closed(self) -> bool:
        """Whether `close()` was called (a method: it changes across an await)."""
        return self._closed

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        """`fn(*args)` on the store's thread; GrantStoreUnavailable if it takes longer than
        half a TTL (a database that stopped answering must not hold invocations up: this
        node then refuses beyond its grants, as if it could not reach it)."""
        if self._closed:
            raise GrantStoreUnavailable("this node is leaving the cluster")
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, lambda: fn(*args)), self._ttl_s / 2
            )
        except TimeoutError as e:
            raise GrantStoreUnavailable(
                f"the database did not answer within {self._ttl_s / 2:g} s"
            ) from e


class _Held:
    """The context manager of one lease: releases its slot when the block ends, or when
    the lease's `until` is done if it was extended."""

    __slots__ = ("_control", "_function_name", "_lease", "_pool")

    def __init__(self, control: ClusterConcurrency, function_name: str, pool: _Pool) -> None:
        self._control = control
        self._function_name = function_name
        self._pool = pool

    def __enter__(self) -> Lease:
        self._lease = Lease()
        return self._lease

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        until = self._lease.until
        if until is not None and not until.done():
            until.add_done_callback(lambda _: self._release())
        else:
            self._release()

    def _release(self) -> None:
        self._control._release(self._function_name, self._pool)
