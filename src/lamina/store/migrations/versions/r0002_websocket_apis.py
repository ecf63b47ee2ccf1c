"""WebSocket APIs: the `websocket_apis` table (one JSON document per API)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

from lamina.store.migrations import target_metadata

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    # The baseline creates tables from today's models: it may have made this one already.
    if "websocket_apis" not in inspect(bind).get_table_names():
        target_metadata().tables["websocket_apis"].create(bind)


def downgrade() -> None:
    raise NotImplementedError("Lamina's schema is not downgraded: restore a backup instead")
