"""Baseline: every table of the SQL stores, created where missing, and the columns added to
`functions` and `function_versions` before migrations existed.

On an empty database this makes the whole schema. On a data directory made by an earlier
Lamina (no `alembic_version`: each store created its tables when it opened, and the metadata
store added the columns below by hand) it adds whatever that version lacked and keeps every
row.
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import inspect

from lamina.store.migrations import target_metadata

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

#: columns added to tables after their first release, before migrations existed
_LATE_COLUMNS = {
    "functions": ("next_version", "reserved_concurrency"),
    "function_versions": (
        "dead_letter_target",
        "logging_config",
        "kms_key_arn",
        "vpc_config",
        "signed_by",
        "tracing_mode",
        "environment_given",
    ),
}


def upgrade() -> None:
    bind = op.get_bind()
    metadata = target_metadata()
    metadata.create_all(bind, checkfirst=True)
    for table, columns in _LATE_COLUMNS.items():
        _add_missing(table, columns)


def _add_missing(table: str, columns: tuple[str, ...]) -> None:
    """Add the model's `columns` that `table` lacks (each nullable or with a default, so
    that tables with rows take them)."""
    have = {c["name"] for c in inspect(op.get_bind()).get_columns(table)}
    model = target_metadata().tables[table]
    for name in columns:
        if name not in have:
            op.add_column(table, model.c[name]._copy())


def downgrade() -> None:
    raise NotImplementedError("Lamina's schema is not downgraded: restore a backup instead")
