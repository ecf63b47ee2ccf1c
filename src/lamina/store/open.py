"""Opening every SQL store of a node from `Settings`, on one database.

Single machine (`settings.cluster` None): the data directory's `lamina.db` (upgraded in
place when an older Lamina made it), with access keys and usage in `auth.db` and `usage.db`
beside it as before (their tables exist in `lamina.db` too, empty: both back ends have one
schema). Cluster: the shared PostgreSQL database at `cluster.database_url` for
all of them, its schema as `open_database` requires and the node's sealing key checked
against the cluster's (`sealing_check`). Per-node state (the async queue, the logs) is not
here: it stays in SQLite files of the node's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine

from lamina.settings import Settings
from lamina.store.engine import open_database
from lamina.store.event_sources import EventSourceStore
from lamina.store.metadata import MetadataStore
from lamina.store.roles import RoleStore
from lamina.store.rules import RuleStore
from lamina.store.sealed import KEY_FILE, Sealer
from lamina.store.sealing_check import check_sealing_key


@dataclass
class Stores:
    """A node's SQL stores. `metadata` is what `control.FunctionService` builds its own
    stores on (URLs, policies, settings, capacity, code signing, layer policies)."""

    engine: Engine
    sealer: Sealer
    metadata: MetadataStore
    roles: RoleStore
    rules: RuleStore
    event_sources: EventSourceStore
    #: where `auth.keys.KeyStore` keeps access keys: the shared engine in a cluster; None:
    #: the data directory's `auth.db`
    keys: Engine | None
    #: where `observability.metering.Meter` writes usage: the shared engine in a cluster,
    #: else the data directory's `usage.db`
    usage: Engine | Path

    def close(self) -> None:
        self.engine.dispose()


def open_stores(settings: Settings) -> Stores:
    """The stores `settings` call for. Raises `ClusterConfigError` when the cluster's
    database cannot be used (see `store.engine.open_database`) or this node's sealing key is
    not the cluster's."""
    sealer = Sealer.open(settings.data_dir)
    cluster = settings.cluster
    if cluster is None:
        engine = open_database(f"sqlite:///{settings.db_path}", cluster=False)
    else:
        engine = open_database(cluster.database_url, cluster=True)
        try:
            check_sealing_key(engine, sealer, settings.data_dir / KEY_FILE)
        except BaseException:
            engine.dispose()
            raise
    metadata = MetadataStore(engine, sealer)
    return Stores(
        engine=engine,
        sealer=sealer,
        metadata=metadata,
        roles=RoleStore(metadata),
        rules=RuleStore(engine),
        event_sources=EventSourceStore(engine, sealer),
        keys=None if cluster is None else engine,
        usage=settings.usage_db_path if cluster is None else engine,
    )
