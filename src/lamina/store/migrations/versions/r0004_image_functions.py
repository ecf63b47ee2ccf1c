"""Container-image functions: `function_versions.image` (a PackageType Image function's
image URI, resolved digest, image config and ImageConfig overrides)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

from lamina.store.migrations import target_metadata

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    metadata = target_metadata()
    # The baseline creates tables from today's models: it may have made the column already.
    columns = {c["name"] for c in inspect(bind).get_columns("function_versions")}
    if "image" not in columns:
        op.add_column("function_versions", metadata.tables["function_versions"].c.image._copy())


def downgrade() -> None:
    raise NotImplementedError("Lamina's schema is not downgraded: restore a backup instead")
