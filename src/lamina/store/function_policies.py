"""Resource-based policies of functions, versions and aliases, in the metadata database (their
own table, beside the metadata store's).

A policy belongs to a function and a qualifier (`""` for the unqualified function, else a
version or an alias): the metadata store deletes it in the same transaction as the function,
version or alias (see `MetadataStore.add_dependent`). Blocking, like the metadata store;
`control/` runs these on its worker thread.
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Select,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection

from lamina.store import schema
from lamina.store.metadata import MetadataStore
from lamina.store.schema import aliases, function_versions, functions

function_policies = Table(
    "function_policies",
    schema.metadata,
    Column("function_name", String(64), primary_key=True),
    #: "" for the unqualified function, else a version number or an alias name
    Column("qualifier", String(128), primary_key=True),
    #: the policy document's JSON text, as GetPolicy returns it
    Column("policy", Text, nullable=False),
    Column("revision_id", String(64), nullable=False),
)

#: (function name, qualifier) -> (policy text, revision id)
StoredPolicies = dict[tuple[str, str], tuple[str, str]]


def _delete_of(conn: Connection, function_name: str, qualifier: str | None) -> None:
    query = delete(function_policies).where(function_policies.c.function_name == function_name)
    if qualifier is not None:
        query = query.where(function_policies.c.qualifier == qualifier)
    conn.execute(query)


class FunctionPolicyStore:
    """The `function_policies` table, in the metadata store's database."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._engine = metadata.engine
        metadata.add_dependent(_delete_of)

    def put(
        self,
        function_name: str,
        qualifier: str,
        policy: str | None,
        revision_id: str,
        *,
        expect_revision: str | None,
    ) -> bool:
        """Write (or, with `policy` None, delete) a policy if its revision is still
        `expect_revision` (None: there was none) and its function, version or alias still
        exists, all in one transaction; False otherwise."""
        c = function_policies.c
        where = (c.function_name == function_name, c.qualifier == qualifier)
        with self._engine.begin() as conn:
            if conn.execute(self._owner(function_name, qualifier)).first() is None:
                return False
            current = conn.execute(select(c.revision_id).where(*where)).first()
            if (current[0] if current else None) != expect_revision:
                return False
            if policy is None:
                conn.execute(delete(function_policies).where(*where))
            elif current is None:
                conn.execute(
                    insert(function_policies).values(
                        function_name=function_name,
                        qualifier=qualifier,
                        policy=policy,
                        revision_id=revision_id,
                    )
                )
            else:
                conn.execute(
                    update(function_policies)
                    .where(*where)
                    .values(policy=policy, revision_id=revision_id)
                )
            return True

    @staticmethod
    def _owner(function_name: str, qualifier: str) -> Select[tuple[str]]:
        if not qualifier:
            return select(functions.c.name).where(functions.c.name == function_name)
        if qualifier.isdigit():
            return select(function_versions.c.version).where(
                function_versions.c.function_name == function_name,
                function_versions.c.version == qualifier,
            )
        return select(aliases.c.name).where(
            aliases.c.function_name == function_name, aliases.c.name == qualifier
        )

    def all(self) -> StoredPolicies:
        with self._engine.begin() as conn:
            return {
                (r.function_name, r.qualifier): (r.policy, r.revision_id)
                for r in conn.execute(select(function_policies))
            }
