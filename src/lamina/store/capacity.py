"""Capacity providers, the function versions attached to them, and function scaling configs,
in tables of their own in the metadata database.

A function's attachments and scaling configs go in the same transaction as the function (or
version), see `MetadataStore.add_dependent`. Blocking; `control/` runs these on its worker.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    String,
    Table,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import Connection

from lamina.store import schema
from lamina.store.metadata import MetadataStore
from lamina.store.schema import function_versions

capacity_providers = Table(
    "capacity_providers",
    schema.metadata,
    Column("name", String(140), primary_key=True),
    # the provider's members as the API names them (VpcConfig, PermissionsConfig, ...)
    Column("spec", JSON, nullable=False),
    Column("last_modified", DateTime(timezone=True), nullable=False),
)

# CapacityProviderConfig of a function's `$LATEST` or version (copied when published)
function_capacity = Table(
    "function_capacity",
    schema.metadata,
    Column("function_name", String(64), primary_key=True),
    Column("version", String(16), primary_key=True),
    Column("provider", String(140), nullable=False, index=True),
    Column("config", JSON, nullable=False),
)

# PutFunctionScalingConfig, per published version
function_scaling = Table(
    "function_scaling",
    schema.metadata,
    Column("function_name", String(64), primary_key=True),
    Column("version", String(16), primary_key=True),
    Column("min_environments", Integer, nullable=True),
    Column("max_environments", Integer, nullable=True),
)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _delete_of(conn: Connection, function_name: str, qualifier: str | None) -> None:
    for table in (function_capacity, function_scaling):
        query = delete(table).where(table.c.function_name == function_name)
        if qualifier is not None:
            query = query.where(table.c.version == qualifier)
        conn.execute(query)


class CapacityStore:
    """The capacity tables."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._engine = metadata.engine
        metadata.add_dependent(_delete_of)

    # -- providers -----------------------------------------------------------------

    def put_provider(self, name: str, spec: dict[str, Any], at: datetime, *, create: bool) -> bool:
        """Insert (`create`) or replace a provider; False if it exists (create) or not."""
        with self._engine.begin() as conn:
            exists = conn.execute(
                select(capacity_providers.c.name).where(capacity_providers.c.name == name)
            ).first()
            if (exists is not None) == create:
                return False
            if exists is not None:
                conn.execute(delete(capacity_providers).where(capacity_providers.c.name == name))
            conn.execute(insert(capacity_providers).values(name=name, spec=spec, last_modified=at))
            return True

    def delete_provider(self, name: str) -> str | None:
        """Delete a provider that no function version uses: None if done, else why not
        ("missing" or "in use")."""
        with self._engine.begin() as conn:
            used = conn.execute(
                select(function_capacity.c.function_name).where(
                    function_capacity.c.provider == name
                )
            ).first()
            if used is not None:
                return "in use"
            deleted = conn.execute(
                delete(capacity_providers).where(capacity_providers.c.name == name)
            ).rowcount
            return None if deleted else "missing"

    def providers(self) -> list[tuple[str, dict[str, Any], datetime]]:
        with self._engine.begin() as conn:
            rows = conn.execute(select(capacity_providers).order_by(capacity_providers.c.name))
            return [(r.name, dict(r.spec), _utc(r.last_modified)) for r in rows]

    # -- attachments -----------------------------------------------------------------

    def attach(self, function_name: str, version: str, config: dict[str, Any] | None) -> bool:
        """Set (None: remove) a version's CapacityProviderConfig; False if the version or
        the provider is gone."""
        with self._engine.begin() as conn:
            if not _version_exists(conn, function_name, version):
                return False
            conn.execute(
                delete(function_capacity).where(
                    function_capacity.c.function_name == function_name,
                    function_capacity.c.version == version,
                )
            )
            if config is None:
                return True
            provider = config["provider"]
            if (
                conn.execute(
                    select(capacity_providers.c.name).where(capacity_providers.c.name == provider)
                ).first()
                is None
            ):
                return False
            conn.execute(
                insert(function_capacity).values(
                    function_name=function_name, version=version, provider=provider, config=config
                )
            )
            return True

    def attachments(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self._engine.begin() as conn:
            return [
                (r.function_name, r.version, dict(r.config))
                for r in conn.execute(select(function_capacity))
            ]

    # -- scaling -------------------------------------------------------------------

    def put_scaling(
        self, function_name: str, version: str, low: int | None, high: int | None
    ) -> bool:
        with self._engine.begin() as conn:
            if not _version_exists(conn, function_name, version):
                return False
            conn.execute(
                delete(function_scaling).where(
                    function_scaling.c.function_name == function_name,
                    function_scaling.c.version == version,
                )
            )
            conn.execute(
                insert(function_scaling).values(
                    function_name=function_name,
                    version=version,
                    min_environments=low,
                    max_environments=high,
                )
            )
            return True

    def scaling(self) -> list[tuple[str, str, int | None, int | None]]:
        with self._engine.begin() as conn:
            return [
                (r.function_name, r.version, r.min_environments, r.max_environments)
                for r in conn.execute(select(function_scaling))
            ]


def _version_exists(conn: Connection, function_name: str, version: str) -> bool:
    found = conn.execute(
        select(function_versions.c.version).where(
            function_versions.c.function_name == function_name,
            function_versions.c.version == version,
        )
    ).first()
    return found is not None
