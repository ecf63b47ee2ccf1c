"""Execution roles defined in Lamina, in the metadata database (their own table, beside the
metadata store's).

A role does not belong to a function: deleting one leaves the functions that name it as they
are (IAM lets a role in use be deleted too). Blocking, like the metadata store; `control/`
runs these on its worker thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, String, Table, Text, delete, select
from sqlalchemy.engine import Connection

from lamina.models import Role
from lamina.store import schema
from lamina.store.metadata import MetadataStore

roles = Table(
    "roles",
    schema.metadata,
    # IAM role names are unique without regard to case: the key is the lower-cased name, so
    # that the database refuses `Admin` beside `admin` whatever the service above checks.
    Column("name_key", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("path", String(512), nullable=False),
    Column("arn", Text, nullable=False),
    Column("description", Text, nullable=False),
    # the policy documents as a JSON list, in the order given
    Column("policies", JSON, nullable=False),
    Column("created", DateTime(timezone=True), nullable=False),
)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t  # SQLite hands naive ones back


def _values(role: Role) -> dict[str, Any]:
    return {
        "name_key": role.name.lower(),
        "name": role.name,
        "path": role.path,
        "arn": role.arn,
        "description": role.description,
        "policies": [dict(p) for p in role.policies],
        "created": role.created,
    }


def _role(m: Any) -> Role:
    return Role(
        name=m["name"],
        path=m["path"],
        arn=m["arn"],
        description=m["description"],
        policies=tuple(dict(p) for p in m["policies"]),
        created=_utc(m["created"]),
    )


class RoleStore:
    """The `roles` table, in the metadata store's database."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._engine = metadata.engine

    def put(self, role: Role) -> None:
        """Insert the role, or replace the one with its name (compared without case)."""
        with self._engine.begin() as conn:
            _delete(conn, role.name)
            conn.execute(roles.insert().values(**_values(role)))

    def delete(self, name: str) -> bool:
        """Delete the role `name` (without regard to case); False if there was none."""
        with self._engine.begin() as conn:
            return _delete(conn, name)

    def all(self) -> list[Role]:
        with self._engine.begin() as conn:
            return [_role(r._mapping) for r in conn.execute(select(roles))]


def _delete(conn: Connection, name: str) -> bool:
    return bool(conn.execute(delete(roles).where(roles.c.name_key == name.lower())).rowcount)
