"""SnapStart: `function_versions.snap_start` (SnapStart.ApplyOn of a function version)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

from lamina.store.migrations import target_metadata

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    metadata = target_metadata()
    # The baseline creates tables from today's models: it may have made the column already.
    columns = {c["name"] for c in inspect(bind).get_columns("function_versions")}
    if "snap_start" not in columns:
        op.add_column(
            "function_versions", metadata.tables["function_versions"].c.snap_start._copy()
        )


def downgrade() -> None:
    raise NotImplementedError("Lamina's schema is not downgraded: restore a backup instead")
