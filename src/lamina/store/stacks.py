"""Stacks deployed from templates (`lamina deploy --template`), in the metadata database.

One row per stack: what the CLI provisioned for it (each resource's physical id, attributes,
resolved properties and status), its parameters and outputs. The CLI does the provisioning
through the public APIs; the server only remembers the result, so that the next deploy knows
what to update and what to delete. Blocking, like the other stores; `control/stacks.py` runs
these on the control worker thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, String, Table, Text, delete, select
from sqlalchemy.engine import Engine

from lamina.models import Stack
from lamina.store import schema

stacks = Table(
    "stacks",
    schema.metadata,
    Column("name", String(128), primary_key=True),
    Column("template_path", Text, nullable=False),
    Column("parameters", JSON, nullable=False),
    # logical id -> {type, physical_ref, attributes, properties_digest, properties, status}
    Column("resources", JSON, nullable=False),
    Column("outputs", JSON, nullable=False),
    Column("status", String(64), nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("updated", DateTime(timezone=True), nullable=False),
)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t  # SQLite hands naive ones back


def _stack(m: Any) -> Stack:
    return Stack(
        name=m["name"],
        template_path=m["template_path"],
        parameters=dict(m["parameters"]),
        resources=dict(m["resources"]),
        outputs=dict(m["outputs"]),
        status=m["status"],
        created=_utc(m["created"]),
        updated=_utc(m["updated"]),
    )


class StackStore:
    """The `stacks` table."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, stack: Stack) -> None:
        """Insert the stack, or replace the one of its name."""
        with self._engine.begin() as conn:
            conn.execute(delete(stacks).where(stacks.c.name == stack.name))
            conn.execute(
                stacks.insert().values(
                    name=stack.name,
                    template_path=stack.template_path,
                    parameters=stack.parameters,
                    resources=stack.resources,
                    outputs=stack.outputs,
                    status=stack.status,
                    created=stack.created,
                    updated=stack.updated,
                )
            )

    def get(self, name: str) -> Stack | None:
        with self._engine.begin() as conn:
            row = conn.execute(select(stacks).where(stacks.c.name == name)).first()
        return None if row is None else _stack(row._mapping)

    def delete(self, name: str) -> bool:
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(stacks).where(stacks.c.name == name)).rowcount)

    def all(self) -> list[Stack]:
        with self._engine.begin() as conn:
            rows = conn.execute(select(stacks).order_by(stacks.c.name)).all()
        return [_stack(r._mapping) for r in rows]
