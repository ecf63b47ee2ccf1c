"""Small per-function settings kept in tables of their own beside the metadata store's:
runtime management (PutRuntimeManagementConfig, per `$LATEST` or version) and recursive loop
detection (PutFunctionRecursionConfig, per function).

A function's rows go in the same transaction as the function, a version's with the version
(see `MetadataStore.add_dependent`). Blocking, like the metadata store; `control/` runs these
on its worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, String, Table, Text, delete, insert, select
from sqlalchemy.engine import Connection

from lamina.store import schema
from lamina.store.metadata import MetadataStore
from lamina.store.schema import function_versions, functions

runtime_management = Table(
    "runtime_management",
    schema.metadata,
    Column("function_name", String(64), primary_key=True),
    # `$LATEST` or a version number
    Column("qualifier", String(16), primary_key=True),
    Column("update_runtime_on", String(16), nullable=False),
    # the pinned runtime version (Manual only)
    Column("runtime_version_arn", Text, nullable=True),
)

recursion = Table(
    "recursion_configs",
    schema.metadata,
    Column("function_name", String(64), primary_key=True),
    Column("recursive_loop", String(16), nullable=False),
)


@dataclass(frozen=True)
class RuntimeManagementRow:
    function_name: str
    qualifier: str
    update_runtime_on: str
    runtime_version_arn: str | None


def _delete_of(conn: Connection, function_name: str, qualifier: str | None) -> None:
    query = delete(runtime_management).where(runtime_management.c.function_name == function_name)
    if qualifier is not None:
        query = query.where(runtime_management.c.qualifier == qualifier)
    conn.execute(query)
    if qualifier is None:
        conn.execute(delete(recursion).where(recursion.c.function_name == function_name))


class FunctionSettingsStore:
    """The `runtime_management` and `recursion_configs` tables."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._engine = metadata.engine
        metadata.add_dependent(_delete_of)

    def put_runtime_management(self, row: RuntimeManagementRow) -> bool:
        """Replace the setting of one `$LATEST` or version; False if that version is gone
        (checked in the same transaction, so that no row outlives it)."""
        with self._engine.begin() as conn:
            exists = conn.execute(
                select(function_versions.c.version).where(
                    function_versions.c.function_name == row.function_name,
                    function_versions.c.version == row.qualifier,
                )
            ).first()
            if exists is None:
                return False
            _delete_of_one(conn, row.function_name, row.qualifier)
            conn.execute(
                insert(runtime_management).values(
                    function_name=row.function_name,
                    qualifier=row.qualifier,
                    update_runtime_on=row.update_runtime_on,
                    runtime_version_arn=row.runtime_version_arn,
                )
            )
            return True

    def all_runtime_management(self) -> list[RuntimeManagementRow]:
        with self._engine.begin() as conn:
            return [
                RuntimeManagementRow(
                    function_name=m["function_name"],
                    qualifier=m["qualifier"],
                    update_runtime_on=m["update_runtime_on"],
                    runtime_version_arn=m["runtime_version_arn"],
                )
                for m in (r._mapping for r in conn.execute(select(runtime_management)))
            ]

    def put_recursion(self, function_name: str, recursive_loop: str) -> bool:
        """Set a function's RecursiveLoop; False if the function is gone."""
        with self._engine.begin() as conn:
            exists = conn.execute(
                select(functions.c.name).where(functions.c.name == function_name)
            ).first()
            if exists is None:
                return False
            conn.execute(delete(recursion).where(recursion.c.function_name == function_name))
            conn.execute(
                insert(recursion).values(function_name=function_name, recursive_loop=recursive_loop)
            )
            return True

    def all_recursion(self) -> dict[str, str]:
        with self._engine.begin() as conn:
            return {r.function_name: r.recursive_loop for r in conn.execute(select(recursion))}


def _delete_of_one(conn: Connection, function_name: str, qualifier: str) -> None:
    conn.execute(
        delete(runtime_management).where(
            runtime_management.c.function_name == function_name,
            runtime_management.c.qualifier == qualifier,
        )
    )
