"""Stacks deployed from templates: the `stacks` table (`lamina deploy --template`)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

from lamina.store.migrations import target_metadata

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    # The baseline creates tables from today's models: it may have made this one already.
    if "stacks" not in inspect(bind).get_table_names():
        target_metadata().tables["stacks"].create(bind)


def downgrade() -> None:
    raise NotImplementedError("Lamina's schema is not downgraded: restore a backup instead")
