"""The access keys' table: rows of `auth.keys.KeyStore`, which keeps every key in memory.

On a single machine the table is in the data directory's `auth.db` (a file of its own, as it
always was; `KeyStore` creates the table there). In a cluster it is in the shared database
(created by the migrations), so that a key made on one node signs requests to every node.
A secret is stored sealed, bound to its key id. Blocking: the key store runs writes off the
event loop.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from lamina.store import schema

access_keys = Table(
    "access_keys",
    schema.metadata,
    Column("access_key_id", String(128), primary_key=True),
    Column("sealed_secret", LargeBinary, nullable=False),
    Column("name", Text, nullable=False),
    Column("admin", Boolean, nullable=False, default=False),
    #: the attached policy documents, a JSON list
    Column("policies", Text, nullable=False, default="[]"),
    #: seconds since the epoch
    Column("created", Float, nullable=False),
)


@dataclass(frozen=True)
class AccessKeyRow:
    access_key_id: str
    sealed_secret: bytes
    name: str
    admin: bool
    policies: list[Any]
    created: float


class AccessKeyRows:
    """The `access_keys` table on `engine`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def all(self) -> list[AccessKeyRow]:
        with self._engine.begin() as conn:
            return [
                AccessKeyRow(
                    r.access_key_id,
                    bytes(r.sealed_secret),
                    r.name,
                    bool(r.admin),
                    json.loads(r.policies),
                    r.created,
                )
                for r in conn.execute(select(access_keys))
            ]

    def insert(self, row: AccessKeyRow) -> bool:
        """False if a key with its id exists (made by another node meanwhile, in a cluster)."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    insert(access_keys).values(
                        access_key_id=row.access_key_id,
                        sealed_secret=row.sealed_secret,
                        name=row.name,
                        admin=row.admin,
                        policies=json.dumps(row.policies),
                        created=row.created,
                    )
                )
        except IntegrityError:
            return False
        return True

    def delete(self, access_key_id: str) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(access_keys).where(access_keys.c.access_key_id == access_key_id))

    def set_policies(self, access_key_id: str, policies: list[Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(access_keys)
                .where(access_keys.c.access_key_id == access_key_id)
                .values(policies=json.dumps(policies))
            )
