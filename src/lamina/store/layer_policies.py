"""Resource-based policies of layer versions (AddLayerVersionPermission and friends), in the
metadata database (their own table). A policy is deleted in the same transaction as its
layer version (see `MetadataStore.add_layer_dependent`). Blocking, like the metadata store;
`control/` runs these on its worker thread.
"""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, Table, Text, delete, insert, select
from sqlalchemy.engine import Connection

from lamina.store import schema
from lamina.store.metadata import MetadataStore
from lamina.store.schema import layer_versions

layer_version_policies = Table(
    "layer_version_policies",
    schema.metadata,
    Column("layer_name", String(140), primary_key=True),
    Column("version", Integer, primary_key=True),
    #: the policy document's JSON text, as GetLayerVersionPolicy returns it
    Column("policy", Text, nullable=False),
    Column("revision_id", String(64), nullable=False),
)

#: (layer name, version) -> (policy text, revision id)
StoredLayerPolicies = dict[tuple[str, int], tuple[str, str]]


def _delete_of(conn: Connection, layer_name: str, version: int) -> None:
    c = layer_version_policies.c
    conn.execute(
        delete(layer_version_policies).where(c.layer_name == layer_name, c.version == version)
    )


class LayerPolicyStore:
    """The `layer_version_policies` table, in the metadata store's database."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._engine = metadata.engine
        metadata.add_layer_dependent(_delete_of)

    def put(
        self,
        layer_name: str,
        version: int,
        policy: str | None,
        revision_id: str,
        *,
        expect_revision: str | None,
    ) -> bool:
        """Write (or, with `policy` None, delete) a version's policy if its revision is still
        `expect_revision` (None: there was none) and the layer version still exists, in one
        transaction; False otherwise."""
        c = layer_version_policies.c
        where = (c.layer_name == layer_name, c.version == version)
        with self._engine.begin() as conn:
            exists = conn.execute(
                select(layer_versions.c.version).where(
                    layer_versions.c.layer_name == layer_name,
                    layer_versions.c.version == version,
                )
            ).first()
            if exists is None:
                return False
            current = conn.execute(select(c.revision_id).where(*where)).first()
            if (current[0] if current else None) != expect_revision:
                return False
            conn.execute(delete(layer_version_policies).where(*where))
            if policy is not None:
                conn.execute(
                    insert(layer_version_policies).values(
                        layer_name=layer_name,
                        version=version,
                        policy=policy,
                        revision_id=revision_id,
                    )
                )
            return True

    def all(self) -> StoredLayerPolicies:
        with self._engine.begin() as conn:
            return {
                (r.layer_name, r.version): (r.policy, r.revision_id)
                for r in conn.execute(select(layer_version_policies))
            }
