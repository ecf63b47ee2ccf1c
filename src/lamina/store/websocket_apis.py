"""WebSocket APIs (API Gateway v2, `ProtocolType: WEBSOCKET`) in the shared database.

One row per API: its settings, routes, integrations and stages as one JSON document, so a
change to an API is one row written whole (nothing half-written), and every node of a cluster
reads the same APIs from the same database. Live connections are not stored: a connection
lives on the node that holds its socket (`control.websocket_apis`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, String, Table, delete, insert, select, update
from sqlalchemy.engine import Engine

from lamina.store import schema

websocket_apis = Table(
    "websocket_apis",
    schema.metadata,
    Column("api_id", String(16), primary_key=True),
    Column("document", JSON, nullable=False),
)


class WebSocketApiStore:
    """The `websocket_apis` table (made by the migrations, `store.migrations`). Blocking:
    callers on the event loop run these in a thread."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, api_id: str) -> dict[str, Any] | None:
        with self._engine.begin() as conn:
            row = conn.execute(
                select(websocket_apis.c.document).where(websocket_apis.c.api_id == api_id)
            ).first()
        return None if row is None else dict(row.document)

    def all(self) -> list[dict[str, Any]]:
        with self._engine.begin() as conn:
            rows = conn.execute(
                select(websocket_apis.c.document).order_by(websocket_apis.c.api_id)
            ).all()
        return [dict(r.document) for r in rows]

    def insert(self, api_id: str, document: dict[str, Any]) -> None:
        with self._engine.begin() as conn:
            conn.execute(insert(websocket_apis).values(api_id=api_id, document=document))

    def replace(self, api_id: str, document: dict[str, Any]) -> bool:
        """Store `document` for an existing API; False if the API is gone."""
        with self._engine.begin() as conn:
            changed = conn.execute(
                update(websocket_apis)
                .where(websocket_apis.c.api_id == api_id)
                .values(document=document)
            ).rowcount
        return bool(changed)

    def delete(self, api_id: str) -> bool:
        with self._engine.begin() as conn:
            gone = conn.execute(
                delete(websocket_apis).where(websocket_apis.c.api_id == api_id)
            ).rowcount
        return bool(gone)
