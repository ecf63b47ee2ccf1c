"""The cluster tests' engines start, answer and stop (a failure here explains the others)."""

from __future__ import annotations

import asyncio

import nats
import sqlalchemy as sa
from tests.cluster._engines import NatsCluster, Postgres


def test_postgres_takes_a_fresh_database(pg: Postgres, database_url: str) -> None:
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x int)")
        conn.exec_driver_sql("INSERT INTO t VALUES (7)")
        assert conn.exec_driver_sql("SELECT x FROM t").scalar() == 7
    engine.dispose()
    assert pg.new_database() != database_url


def test_nats_cluster_replicates_a_stream(nats3: NatsCluster) -> None:
    async def run() -> int:
        nc = await nats.connect(servers=nats3.urls)
        js = nc.jetstream()
        await js.add_stream(name="ENGINES_TEST", subjects=["engines.test"], num_replicas=3)
        await js.publish("engines.test", b"x")
        info = await js.stream_info("ENGINES_TEST")
        await js.delete_stream("ENGINES_TEST")
        await nc.close()
        return len(info.cluster.replicas or []) + 1 if info.cluster else 1

    assert asyncio.run(run()) == 3
