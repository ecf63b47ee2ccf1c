"""Durable executions in the shared database: one row per execution, one per operation of its
checkpoint log, one per history event.

Operations and events are JSON documents in Lambda's wire spelling (timestamps as seconds
since the epoch), so the rules in `control.durable` read and answer them without a mapping
layer. Every change to an execution (its row, the operations a checkpoint touched, the
events it recorded) is written in one transaction, committed before the caller answers: an
acknowledged checkpoint survives `kill -9`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from lamina.store import schema

durable_executions = Table(
    "durable_executions",
    schema.metadata,
    Column("arn", String(1024), primary_key=True),
    Column("function_name", String(64), nullable=False),
    Column("version", String(16), nullable=False),
    Column("name", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("input", Text, nullable=False),
    Column("result", Text),
    Column("error", JSON),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    # when the execution times out (DurableConfig.ExecutionTimeout after its start)
    Column("deadline", DateTime(timezone=True), nullable=False),
    Column("retention_days", Integer, nullable=False),
    # the invocation now running (None: none runs) and its current checkpoint token
    Column("invocation", String(64)),
    Column("token", String(128)),
    # the earliest timer of the execution (a wait's end, a retry, a callback's timeout)
    Column("wake_at", DateTime(timezone=True)),
    # the next history event's id, and how many invocations failed in a row
    Column("next_event", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    # operations completed from outside since the running invocation read its state
    Column("updated_ops", JSON, nullable=False),
    # when the running invocation's claim lapses (its function's timeout has passed: the
    # node that ran it is gone), so that another node may invoke the execution again
    Column("claimed_until", DateTime(timezone=True)),
    # bumped by every write: a node writes only over the revision it read (no lost updates
    # between the nodes of a cluster)
    Column("revision", Integer, nullable=False),
    Index("ix_durable_executions_function_name", "function_name", "name", unique=True),
)

durable_operations = Table(
    "durable_operations",
    schema.metadata,
    Column("execution_arn", String(1024), primary_key=True),
    Column("op_id", String(64), primary_key=True),
    # the order operations were first checkpointed in (GetDurableExecutionState's order)
    Column("seq", Integer, nullable=False),
    Column("document", JSON, nullable=False),
)

durable_events = Table(
    "durable_events",
    schema.metadata,
    Column("execution_arn", String(1024), primary_key=True),
    Column("event_id", Integer, primary_key=True),
    Column("document", JSON, nullable=False),
)


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t  # SQLite hands naive ones back


@dataclass
class ExecutionRecord:
    """An execution: its row, and (when loaded) its operations in checkpoint order."""

    arn: str
    function_name: str
    version: str
    name: str
    status: str
    input: str
    started_at: datetime
    deadline: datetime
    retention_days: int
    result: str | None = None
    error: dict[str, Any] | None = None
    ended_at: datetime | None = None
    token: str | None = None
    invocation: str | None = None
    wake_at: datetime | None = None
    next_event: int = 1
    failures: int = 0
    updated_ops: list[str] = field(default_factory=list)
    claimed_until: datetime | None = None
    revision: int = 0
    #: op id -> (seq, document)
    operations: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "arn": self.arn,
            "function_name": self.function_name,
            "version": self.version,
            "name": self.name,
            "status": self.status,
            "input": self.input,
            "result": self.result,
            "error": self.error,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "deadline": self.deadline,
            "retention_days": self.retention_days,
            "token": self.token,
            "invocation": self.invocation,
            "wake_at": self.wake_at,
            "next_event": self.next_event,
            "failures": self.failures,
            "updated_ops": list(self.updated_ops),
            "claimed_until": self.claimed_until,
            "revision": self.revision,
        }


def _record(row: Any) -> ExecutionRecord:
    m = row._mapping
    return ExecutionRecord(
        arn=m["arn"],
        function_name=m["function_name"],
        version=m["version"],
        name=m["name"],
        status=m["status"],
        input=m["input"],
        result=m["result"],
        error=m["error"],
        started_at=_utc(m["started_at"]) or datetime.now(UTC),
        ended_at=_utc(m["ended_at"]),
        deadline=_utc(m["deadline"]) or datetime.now(UTC),
        retention_days=m["retention_days"],
        token=m["token"],
        invocation=m["invocation"],
        wake_at=_utc(m["wake_at"]),
        next_event=m["next_event"],
        failures=m["failures"],
        updated_ops=list(m["updated_ops"] or []),
        claimed_until=_utc(m["claimed_until"]),
        revision=m["revision"],
    )


class DurableStore:
    """The three durable tables (made by the migrations). Blocking: callers on the event loop
    run these in a thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create(self, record: ExecutionRecord, events: list[dict[str, Any]]) -> bool:
        """Insert a new execution with its first operations and events; False if the
        function already has an execution of that name (nothing written)."""
        with self._engine.begin() as conn:
            taken = conn.execute(
                select(durable_executions.c.arn).where(
                    durable_executions.c.function_name == record.function_name,
                    durable_executions.c.name == record.name,
                )
            ).first()
            if taken is not None:
                return False
            conn.execute(insert(durable_executions).values(**record.row()))
            self._write(conn, record, list(record.operations), events)
        return True

    def save(
        self,
        record: ExecutionRecord,
        changed_ops: list[str],
        events: list[dict[str, Any]],
    ) -> bool:
        """Write the execution's row, the operations named and the new events, at once, if
        the row is still at the revision `record` was read at (then `record` moves to the
        next). False if another writer came first (nothing written): read it again."""
        with self._engine.begin() as conn:
            row = record.row()
            del row["arn"]
            row["revision"] = record.revision + 1
            query = update(durable_executions).where(
                durable_executions.c.arn == record.arn,
                durable_executions.c.revision == record.revision,
            )
            if not conn.execute(query.values(**row)).rowcount:
                return False
            self._write(conn, record, changed_ops, events)
        record.revision += 1
        return True

    def _write(
        self,
        conn: Connection,
        record: ExecutionRecord,
        changed_ops: list[str],
        events: list[dict[str, Any]],
    ) -> None:
        for op_id in dict.fromkeys(changed_ops):
            seq, doc = record.operations[op_id]
            done = conn.execute(
                update(durable_operations)
                .where(
                    durable_operations.c.execution_arn == record.arn,
                    durable_operations.c.op_id == op_id,
                )
                .values(document=doc)
            ).rowcount
            if not done:
                conn.execute(
                    insert(durable_operations).values(
                        execution_arn=record.arn, op_id=op_id, seq=seq, document=doc
                    )
                )
        if events:
            conn.execute(
                insert(durable_events),
                [
                    {"execution_arn": record.arn, "event_id": e["EventId"], "document": e}
                    for e in events
                ],
            )

    def load(self, arn: str) -> ExecutionRecord | None:
        """The execution with its operations, or None."""
        with self._engine.begin() as conn:
            row = conn.execute(
                select(durable_executions).where(durable_executions.c.arn == arn)
            ).first()
            if row is None:
                return None
            record = _record(row)
            for op in conn.execute(
                select(
                    durable_operations.c.op_id,
                    durable_operations.c.seq,
                    durable_operations.c.document,
                )
                .where(durable_operations.c.execution_arn == arn)
                .order_by(durable_operations.c.seq)
            ):
                record.operations[op.op_id] = (op.seq, dict(op.document))
        return record

    def by_name(self, function_name: str, name: str) -> ExecutionRecord | None:
        with self._engine.begin() as conn:
            row = conn.execute(
                select(durable_executions).where(
                    durable_executions.c.function_name == function_name,
                    durable_executions.c.name == name,
                )
            ).first()
        return None if row is None else _record(row)

    def of_function(self, function_name: str) -> list[ExecutionRecord]:
        """The function's executions (rows only), oldest first."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(durable_executions)
                .where(durable_executions.c.function_name == function_name)
                .order_by(durable_executions.c.started_at, durable_executions.c.arn)
            ).all()
        return [_record(r) for r in rows]

    def running(self) -> list[ExecutionRecord]:
        """Every execution not ended (rows only): what a start-up re-arms (a paused one too:
        its timers still record their completions)."""
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(durable_executions).where(
                    durable_executions.c.status.in_(("RUNNING", "PAUSING", "PAUSED"))
                )
            ).all()
        return [_record(r) for r in rows]

    def due(self, now: datetime) -> list[str]:
        """Running executions whose timer is due and that no invocation holds, or whose
        invocation's claim has lapsed (also a PAUSING one's: it becomes PAUSED). A PAUSED
        execution is never due: nothing invokes it until it is resumed."""
        c = durable_executions.c
        lapsed = (c.token.is_not(None)) & (c.claimed_until < now)
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(c.arn).where(
                    (
                        (c.status == "RUNNING")
                        & (((c.token.is_(None)) & (c.wake_at <= now)) | lapsed)
                    )
                    | ((c.status == "PAUSING") & lapsed)
                )
            ).all()
        return [r.arn for r in rows]

    def events(self, arn: str) -> list[dict[str, Any]]:
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(durable_events.c.document)
                .where(durable_events.c.execution_arn == arn)
                .order_by(durable_events.c.event_id)
            ).all()
        return [dict(r.document) for r in rows]

    def delete_ended_before(self, now: datetime) -> int:
        """Delete ended executions whose retention has passed; how many went."""
        gone = 0
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(
                    durable_executions.c.arn,
                    durable_executions.c.ended_at,
                    durable_executions.c.retention_days,
                ).where(durable_executions.c.ended_at.is_not(None))
            ).all()
            for r in rows:
                ended = _utc(r.ended_at)
                if ended is None or (now - ended).total_seconds() < r.retention_days * 86400:
                    continue
                self._delete(conn, r.arn)
                gone += 1
        return gone

    def delete(self, arn: str) -> None:
        with self._engine.begin() as conn:
            self._delete(conn, arn)

    @staticmethod
    def _delete(conn: Connection, arn: str) -> None:
        conn.execute(delete(durable_events).where(durable_events.c.execution_arn == arn))
        conn.execute(delete(durable_operations).where(durable_operations.c.execution_arn == arn))
        conn.execute(delete(durable_executions).where(durable_executions.c.arn == arn))
