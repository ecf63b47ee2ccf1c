"""CloudWatch: metric data at 1-minute resolution (`metric_data`), metric alarms and their
history (`alarms`, `alarm_history`)."""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

from lamina.store.migrations import target_metadata

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    # The baseline creates tables from today's models: it may have made this one already.
    have = set(inspect(bind).get_table_names())
    for table in ("metric_data", "alarms", "alarm_history"):
        if table not in have:
            target_metadata().tables[table].create(bind)


def downgrade() -> None:
    raise NotImplementedError("Lamina's schema is not downgraded: restore a backup instead")
