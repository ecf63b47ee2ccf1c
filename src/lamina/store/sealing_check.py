"""The check that a node seals with its cluster's key.

Every node of a cluster must seal and unseal with the same key (`store.sealed`: the
`secret.key` of its data directory), or one node could not read what another wrote (access
keys' secrets, functions' environment variables, brokers' URLs). The first node to start
writes a known value sealed under its key into the shared database; every node after it must
be able to open that value, or it refuses to start: it would otherwise join and fail later,
request by request.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Integer, LargeBinary, Table, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from lamina.cluster.api import ClusterConfigError
from lamina.store import schema
from lamina.store.sealed import SealedError, Sealer

sealing_check = Table(
    "sealing_key_check",
    schema.metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("sealed", LargeBinary, nullable=False),
)

_PLAIN = b"lamina: the cluster's sealing key"
_CONTEXT = b"sealing_key_check"


def check_sealing_key(engine: Engine, sealer: Sealer, key_file: Path) -> None:
    """Refuse (`ClusterConfigError`, naming `key_file`) a key that is not the one the
    database's check value was sealed with; the first node's key becomes the check value."""
    with engine.begin() as conn:
        stored = conn.execute(select(sealing_check.c.sealed).where(sealing_check.c.id == 1))
        sealed = stored.scalar_one_or_none()
    if sealed is None:
        try:
            with engine.begin() as conn:
                conn.execute(
                    insert(sealing_check).values(id=1, sealed=sealer.seal(_PLAIN, _CONTEXT))
                )
            return
        except IntegrityError:  # another node wrote it first: ours must open it
            with engine.begin() as conn:
                sealed = conn.execute(
                    select(sealing_check.c.sealed).where(sealing_check.c.id == 1)
                ).scalar_one()
    try:
        opened = sealer.unseal(bytes(sealed), _CONTEXT)
    except SealedError:
        opened = None
    if opened != _PLAIN:
        raise ClusterConfigError(
            f"the sealing key {key_file} is not the cluster's: the shared database's secrets "
            "were sealed with another key. Copy secret.key from the data directory of a node "
            f"of the cluster to {key_file} (mode 0600), then start this node again"
        )
