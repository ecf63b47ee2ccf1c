"""Alembic's environment: run the revisions on the connection the caller gave (see
`lamina.store.migrations.config`), in the caller's transaction."""

from __future__ import annotations

from alembic import context

from lamina.store.migrations import target_metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Lamina's migrations run through `lamina db upgrade`, on a connection")
context.configure(connection=connection, target_metadata=target_metadata())
with context.begin_transaction():
    context.run_migrations()
