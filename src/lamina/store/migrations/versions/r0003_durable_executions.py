"""Durable executions: the `durable_executions`, `durable_operations` and `durable_events`
tables, and `function_versions.durable_config` (DurableConfig)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

from lamina.store.migrations import target_metadata

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TABLES = ("durable_executions", "durable_operations", "durable_events")


def upgrade() -> None:
    bind = op.get_bind()
    metadata = target_metadata()
    # The baseline creates tables from today's models: it may have made these already.
    have = set(inspect(bind).get_table_names())
    for name in _TABLES:
        if name not in have:
            metadata.tables[name].create(bind)
    columns = {c["name"] for c in inspect(bind).get_columns("function_versions")}
    if "durable_config" not in columns:
        op.add_column(
            "function_versions", metadata.tables["function_versions"].c.durable_config._copy()
        )


def downgrade() -> None:
    raise NotImplementedError("Lamina's schema is not downgraded: restore a backup instead")
