"""The usage table: what each function version used per UTC day (`observability.metering`
accumulates it in memory and writes it here in batches).

On a single machine the table is in the data directory's `usage.db` (a file of its own, as
it always was; the meter creates the table there). In a cluster it is in the shared database
(created by the migrations), every node adding to the same rows, so `lamina usage` sums the
cluster. Writes are additive upserts: batches from any node may land in any order.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, String, Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from lamina.store import schema

usage = Table(
    "usage",
    schema.metadata,
    Column("function", String(64), primary_key=True),
    Column("version", String(16), primary_key=True),
    #: YYYY-MM-DD, UTC
    Column("day", String(10), primary_key=True),
    # 64-bit: a day's MB-milliseconds of a busy function pass 2^31 within minutes
    Column("requests", BigInteger, nullable=False),
    Column("billed_ms", BigInteger, nullable=False),
    Column("mb_ms", BigInteger, nullable=False),
)

#: (function, version, day, requests, billed_ms, mb_ms)
UsageRow = tuple[str, str, str, int, int, int]


class UsageRows:
    """The `usage` table on `engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def add(self, rows: list[UsageRow]) -> None:
        """Add each row's counts to its (function, version, day), in one transaction."""
        if not rows:
            return
        # In key order: two nodes adding to the same rows lock them in the same order, so
        # their batches wait for each other instead of deadlocking.
        values = [
            {"function": f, "version": v, "day": d, "requests": r, "billed_ms": b, "mb_ms": m}
            for f, v, d, r, b, m in sorted(rows)
        ]
        with self._engine.begin() as conn:
            conn.execute(_upsert(conn), values)

    def query(self, since_day: str | None, function: str | None) -> list[UsageRow]:
        query = select(usage).order_by(usage.c.function, usage.c.version, usage.c.day)
        if since_day is not None:
            query = query.where(usage.c.day >= since_day)
        if function is not None:
            query = query.where(usage.c.function == function)
        with self._engine.begin() as conn:
            return [
                (r.function, r.version, r.day, int(r.requests), int(r.billed_ms), int(r.mb_ms))
                for r in conn.execute(query)
            ]


def _upsert(conn: Connection) -> postgresql.Insert | sqlite.Insert:
    """INSERT ... ON CONFLICT DO UPDATE adding to the counts, in the back end's dialect."""
    pg = conn.dialect.name == "postgresql"
    stmt: postgresql.Insert | sqlite.Insert = (
        postgresql.insert(usage) if pg else sqlite.insert(usage)
    )
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[usage.c.function, usage.c.version, usage.c.day],
        set_={
            "requests": usage.c.requests + new.requests,
            "billed_ms": usage.c.billed_ms + new.billed_ms,
            "mb_ms": usage.c.mb_ms + new.mb_ms,
        },
    )
