"""Code signing: configurations, which function uses which, and the signing profiles Lamina
trusts, in the metadata database (tables of their own, beside the metadata store's).

A function's link to its configuration is deleted in the same transaction as the function
(`MetadataStore.add_dependent`). Blocking, like the metadata store; `control/` runs these on
its worker thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, String, Table, Text, delete, select
from sqlalchemy.engine import Connection

from lamina.models import CodeSigningConfig, TrustedSigner
from lamina.store import schema
from lamina.store.metadata import MetadataStore
from lamina.store.schema import functions

code_signing_configs = Table(
    "code_signing_configs",
    schema.metadata,
    Column("id", String(32), primary_key=True),
    Column("arn", Text, nullable=False),
    Column("description", Text, nullable=False),
    # SigningProfileVersionArns, in the order given
    Column("allowed_profiles", JSON, nullable=False),
    Column("policy", String(8), nullable=False),
    Column("tags", JSON, nullable=False),
    Column("last_modified", DateTime(timezone=True), nullable=False),
)

function_code_signing = Table(
    "function_code_signing",
    schema.metadata,
    Column("function_name", String(64), primary_key=True),
    Column("config_id", String(32), nullable=False, index=True),
)

trusted_signers = Table(
    "trusted_signers",
    schema.metadata,
    Column("profile_arn", Text, primary_key=True),
    Column("public_key_pem", Text, nullable=False),
    Column("added", DateTime(timezone=True), nullable=False),
    Column("revoked", DateTime(timezone=True), nullable=True),
)


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t  # SQLite hands naive ones back


def _config_values(c: CodeSigningConfig) -> dict[str, Any]:
    return {
        "id": c.id,
        "arn": c.arn,
        "description": c.description,
        "allowed_profiles": list(c.allowed_profiles),
        "policy": c.policy,
        "tags": dict(c.tags),
        "last_modified": c.last_modified,
    }


def _delete_of(conn: Connection, function_name: str, qualifier: str | None) -> None:
    if qualifier is None:  # the function itself is being deleted
        conn.execute(
            delete(function_code_signing).where(
                function_code_signing.c.function_name == function_name
            )
        )


class CodeSigningStore:
    """The code signing tables, in the metadata store's database."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._engine = metadata.engine
        metadata.add_dependent(_delete_of)

    # -- configurations --------------------------------------------------------------

    def put_config(self, config: CodeSigningConfig) -> None:
        """Insert the configuration, or replace the one with its id."""
        with self._engine.begin() as conn:
            conn.execute(delete(code_signing_configs).where(code_signing_configs.c.id == config.id))
            conn.execute(code_signing_configs.insert().values(**_config_values(config)))

    def delete_config(self, config_id: str) -> bool:
        """Delete a configuration no function uses; False if a function uses it (checked in
        the same transaction, so that no function is left naming a deleted one)."""
        with self._engine.begin() as conn:
            used = conn.execute(
                select(function_code_signing.c.function_name).where(
                    function_code_signing.c.config_id == config_id
                )
            ).first()
            if used is not None:
                return False
            conn.execute(delete(code_signing_configs).where(code_signing_configs.c.id == config_id))
            return True

    def configs(self) -> list[CodeSigningConfig]:
        with self._engine.begin() as conn:
            return [
                CodeSigningConfig(
                    id=m["id"],
                    arn=m["arn"],
                    description=m["description"],
                    allowed_profiles=tuple(m["allowed_profiles"]),
                    policy=m["policy"],
                    last_modified=_utc(m["last_modified"]) or datetime.now(UTC),
                    tags=dict(m["tags"]),
                )
                for m in (r._mapping for r in conn.execute(select(code_signing_configs)))
            ]

    # -- functions -------------------------------------------------------------------

    def link(self, function_name: str, config_id: str) -> bool:
        """Have the function use the configuration; False if the function or the
        configuration is gone (checked in the same transaction)."""
        with self._engine.begin() as conn:
            if (
                conn.execute(
                    select(functions.c.name).where(functions.c.name == function_name)
                ).first()
                is None
                or conn.execute(
                    select(code_signing_configs.c.id).where(code_signing_configs.c.id == config_id)
                ).first()
                is None
            ):
                return False
            conn.execute(
                delete(function_code_signing).where(
                    function_code_signing.c.function_name == function_name
                )
            )
            conn.execute(
                function_code_signing.insert().values(
                    function_name=function_name, config_id=config_id
                )
            )
            return True

    def unlink(self, function_name: str) -> None:
        with self._engine.begin() as conn:
            _delete_of(conn, function_name, None)

    def links(self) -> dict[str, str]:
        """Function name -> the id of the configuration it uses."""
        with self._engine.begin() as conn:
            return {
                r.function_name: r.config_id for r in conn.execute(select(function_code_signing))
            }

    # -- trusted signers -------------------------------------------------------------

    def put_signer(self, signer: TrustedSigner) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                delete(trusted_signers).where(trusted_signers.c.profile_arn == signer.profile_arn)
            )
            conn.execute(
                trusted_signers.insert().values(
                    profile_arn=signer.profile_arn,
                    public_key_pem=signer.public_key_pem,
                    added=signer.added,
                    revoked=signer.revoked,
                )
            )

    def delete_signer(self, profile_arn: str) -> bool:
        with self._engine.begin() as conn:
            return bool(
                conn.execute(
                    delete(trusted_signers).where(trusted_signers.c.profile_arn == profile_arn)
                ).rowcount
            )

    def signers(self) -> list[TrustedSigner]:
        with self._engine.begin() as conn:
            return [
                TrustedSigner(
                    profile_arn=m["profile_arn"],
                    public_key_pem=m["public_key_pem"],
                    added=_utc(m["added"]) or datetime.now(UTC),
                    revoked=_utc(m["revoked"]),
                )
                for m in (r._mapping for r in conn.execute(select(trusted_signers)))
            ]
