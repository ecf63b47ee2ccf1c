"""HTTP routes in the shared database, for cluster mode: every node serves the same routes.

On one machine the route file is the store (`events/http_routes.py`); in a cluster each node
has a data directory of its own, so the routes live here, as the file's document (stage,
apiId, routes) in one row, and the file is only what seeds an empty database. One row keeps
a change whole, and its revision makes two nodes' changes meet in order: a write names the
revision it read and fails if another node wrote first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Integer, Table, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from lamina.store import schema

http_routes = Table(
    "http_routes",
    schema.metadata,
    # one row: the document as the route file holds it
    Column("id", Integer, primary_key=True),
    Column("document", JSON, nullable=False),
    Column("revision", Integer, nullable=False),
)

_ROW = 1


class RouteStore:
    """The `http_routes` table (one row), in the metadata store's database."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine  # the table is made by the migrations (`store.migrations`)

    def read(self) -> tuple[dict[str, Any], int] | None:
        """The routes document and its revision; None if no node stored one yet."""
        with self._engine.begin() as conn:
            row = conn.execute(
                select(http_routes.c.document, http_routes.c.revision).where(
                    http_routes.c.id == _ROW
                )
            ).first()
        return None if row is None else (dict(row.document), int(row.revision))

    def write(self, document: dict[str, Any], expect_revision: int | None) -> int | None:
        """Store `document` if the stored revision is still `expect_revision` (None: if none
        is stored yet); the new revision, or None if another node wrote first."""
        with self._engine.begin() as conn:
            if expect_revision is None:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(http_routes).values(id=_ROW, document=document, revision=1)
                        )
                except IntegrityError:
                    return None
                return 1
            changed = conn.execute(
                update(http_routes)
                .where(http_routes.c.id == _ROW, http_routes.c.revision == expect_revision)
                .values(document=document, revision=expect_revision + 1)
            ).rowcount
        return expect_revision + 1 if changed else None
