"""Concurrency grants in the cluster's PostgreSQL database: how many slots of each pool
("account-unreserved", "reserved:<function>") each node may use, until when.

The sum of the live grants of a pool never passes the limit the granting node was given:
every change to a pool's grants runs in a transaction that first locks the pool's row
(`SELECT ... FOR UPDATE` on `concurrency_pools`), so two nodes' grants are decided one
after the other. Expiry is the database's clock (`now()`), never a node's, so nodes with
skewed clocks agree on it. A grant that expired is deleted by the next grant of its pool
(which locks it first), so a late renewal cannot revive slots that were already given away.

Every method is blocking (SQLAlchemy Core on psycopg): `cluster.concurrency` runs them on a
thread of its own. The tables are made by the migrations, like every other store's.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    String,
    Table,
    create_engine,
    delete,
    func,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError
from sqlalchemy.pool import QueuePool

from lamina.store import schema

#: one row per pool ever granted from: the lock that orders its grants
concurrency_pools = Table(
    "concurrency_pools",
    schema.metadata,
    Column("pool", String(200), primary_key=True),
)

concurrency_grants = Table(
    "concurrency_grants",
    schema.metadata,
    Column("pool", String(200), primary_key=True),
    Column("node", String(200), primary_key=True),
    Column("slots", Integer, nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


#: a node that asked for a slot of a pool and got none, until when it still wants one: the
#: nodes holding the pool's slots then keep no more than a fair share of it
concurrency_wants = Table(
    "concurrency_wants",
    schema.metadata,
    Column("pool", String(200), primary_key=True),
    Column("node", String(200), primary_key=True),
    Column("until", DateTime(timezone=True), nullable=False),
)


#: made by the migrations with every other table; `create_all` makes them where a database
#: predates them
_TABLES = [concurrency_pools, concurrency_grants, concurrency_wants]


@dataclass(frozen=True)
class Held:
    """A node's grant of one pool after a renewal."""

    slots: int
    #: nodes that hold slots of the pool or want some, this one included
    sharing: int
    #: whether another node wants slots it did not get
    wanted: bool
    #: the slots all nodes hold of the pool (more than its limit after the limit was lowered)
    total: int


#: the advisory lock id under which `create_all` runs ("laminacg" in ASCII)
_CREATE_LOCK = 0x6C616D696E616367


class GrantStoreUnavailable(Exception):
    """The database did not answer, or failed the change; the message says where and why."""


def engine_url(url: str) -> str:
    """A `postgresql://` URL with psycopg (version 3) as SQLAlchemy's driver."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class GrantStore:
    """The grants table of one database, for one node at a time per call."""

    def __init__(
        self, url: str, *, connect_timeout_s: int = 2, statement_timeout_s: float = 5.0
    ) -> None:
        # A statement that waits longer (on a row lock a stuck transaction holds, on a
        # database that stopped answering) fails rather than holding this node's store
        # thread, and with it the node's shutdown, for good: callers give up after half a
        # TTL anyway, and a failed call counts as the database being unreachable.
        self._engine: Engine = create_engine(
            engine_url(url),
            poolclass=QueuePool,
            pool_size=1,
            max_overflow=1,
            pool_pre_ping=True,
            connect_args={
                "connect_timeout": connect_timeout_s,
                "options": f"-c statement_timeout={int(statement_timeout_s * 1000)}",
            },
        )
        u = self._engine.url
        self._where = f"{u.host}:{u.port or 5432}/{u.database}"

    def create_all(self) -> None:
        """Create the tables if missing. Nodes starting together take turns (PostgreSQL's
        CREATE TABLE IF NOT EXISTS is not safe against a concurrent one)."""
        with self._guard(), self._engine.begin() as c:
            c.execute(select(func.pg_advisory_xact_lock(_CREATE_LOCK)))
            schema.metadata.create_all(c, tables=_TABLES)

    def take(self, pool: str, node: str, need: int, want: int, limit: int, ttl_s: float) -> int:
        """Raise `node`'s grant of `pool` towards `want` slots, as far as `limit` minus the
        other nodes' live grants allows (never lowering it), and renew it for `ttl_s`.
        If that is less than `need`, `node` is recorded as wanting slots for `ttl_s`.
        Returns the grant now held (0: none)."""
        with self._guard(), self._engine.begin() as c:
            c.execute(insert(concurrency_pools).values(pool=pool).on_conflict_do_nothing())
            _lock_pools(c, [pool])
            g = concurrency_grants
            c.execute(delete(g).where(g.c.pool == pool, g.c.expires_at <= func.now()))
            rows = c.execute(select(g.c.node, g.c.slots).where(g.c.pool == pool)).all()
            own = sum(int(n) for holder, n in rows if holder == node)
            others = sum(int(n) for holder, n in rows if holder != node)
            slots = max(own, min(want, limit - others))
            expires = func.now() + timedelta(seconds=ttl_s)
            w = concurrency_wants
            if slots < need:
                c.execute(
                    insert(w)
                    .values(pool=pool, node=node, until=expires)
                    .on_conflict_do_update(
                        index_elements=[w.c.pool, w.c.node], set_={"until": expires}
                    )
                )
            else:
                c.execute(delete(w).where(w.c.pool == pool, w.c.node == node))
            if slots <= 0:
                return 0
            c.execute(
                insert(g)
                .values(pool=pool, node=node, slots=slots, expires_at=expires)
                .on_conflict_do_update(
                    index_elements=[g.c.pool, g.c.node],
                    set_={"slots": slots, "expires_at": expires},
                )
            )
            return slots

    def renew(self, node: str, slots: Mapping[str, int], ttl_s: float) -> dict[str, Held]:
        """Lower `node`'s grants to `slots` (a pool not named, or at 0, is given back) and
        renew the rest for `ttl_s`; a grant that expired stays expired. Returns the grants
        `node` holds now, with who else shares their pools."""
        g = concurrency_grants
        expires = func.now() + timedelta(seconds=ttl_s)
        with self._guard(), self._engine.begin() as c:
            keep = [pool for pool, n in slots.items() if n > 0]
            mine = c.execute(select(g.c.pool).where(g.c.node == node)).scalars().all()
            _lock_pools(c, {*mine, *keep})
            c.execute(delete(g).where(g.c.node == node, g.c.pool.not_in(keep)))
            for pool in keep:
                c.execute(
                    update(g)
                    .where(g.c.pool == pool, g.c.node == node, g.c.expires_at > func.now())
                    .values(slots=func.least(g.c.slots, slots[pool]), expires_at=expires)
                )
            held = dict(
                c.execute(
                    select(g.c.pool, g.c.slots).where(g.c.node == node, g.c.expires_at > func.now())
                ).all()
            )
            w = concurrency_wants
            c.execute(delete(w).where(w.c.pool.in_(held), w.c.until <= func.now()))
            holders = c.execute(
                select(g.c.pool, g.c.node, g.c.slots).where(
                    g.c.pool.in_(held), g.c.slots > 0, g.c.expires_at > func.now()
                )
            ).all()
            wanting = c.execute(select(w.c.pool, w.c.node).where(w.c.pool.in_(held))).all()
        sharing: dict[str, set[str]] = {pool: {node} for pool in held}
        total = dict.fromkeys(held, 0)
        for pool, holder, n in holders:
            sharing[pool].add(holder)
            total[pool] += int(n)
        for pool, other in wanting:
            sharing[pool].add(other)
        wanted = {pool for pool, other in wanting if other != node}
        return {
            pool: Held(int(n), len(sharing[pool]), pool in wanted, total[pool])
            for pool, n in held.items()
        }

    def give_back(self, node: str) -> None:
        """Forget every grant of `node` (it is leaving)."""
        g = concurrency_grants
        with self._guard(), self._engine.begin() as c:
            _lock_pools(c, c.execute(select(g.c.pool).where(g.c.node == node)).scalars().all())
            c.execute(delete(g).where(g.c.node == node))
            c.execute(delete(concurrency_wants).where(concurrency_wants.c.node == node))

    def grants(self, pool: str) -> dict[str, int]:
        """The live grants of `pool`, by node (for `lamina nodes` and tests)."""
        g = concurrency_grants
        with self._guard(), self._engine.connect() as c:
            rows = c.execute(
                select(g.c.node, g.c.slots).where(g.c.pool == pool, g.c.expires_at > func.now())
            ).all()
        return {node: n for node, n in rows}

    def dispose(self) -> None:
        self._engine.dispose()

    def _guard(self) -> _Guard:
        return _Guard(self._where)


def _lock_pools(c: Connection, pools: Collection[str]) -> None:
    """Lock the rows of `pools`, in their order. Every change to a pool's grants is made
    holding its row, and every transaction takes its rows in one order: two nodes' grants
    are decided one after the other, and transactions never wait on each other in a
    circle (a deadlock PostgreSQL would break by failing one of them)."""
    if pools:
        p = concurrency_pools
        c.execute(select(p.c.pool).where(p.c.pool.in_(pools)).order_by(p.c.pool).with_for_update())


class _Guard:
    """Turns the driver's errors into `GrantStoreUnavailable` naming the database."""

    def __init__(self, where: str) -> None:
        self._where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if isinstance(error, SQLAlchemyError):
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
            what = (
                "cannot reach the database"
                if isinstance(error, (OperationalError, InterfaceError))
                else "the database refused a change of concurrency grants"
            )
            raise GrantStoreUnavailable(f"{what} at {self._where}: {reason}") from error
