"""Fixtures of the cluster tests: the engines (one PostgreSQL, one 3-node NATS JetStream
cluster per test session; each test takes a database of its own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.cluster._engines import NatsCluster, Postgres, nats_cluster, postgres


@pytest.fixture(scope="session")
def pg() -> Iterator[Postgres]:
    with postgres() as server:
        yield server


@pytest.fixture
def database_url(pg: Postgres) -> str:
    """A fresh empty PostgreSQL database of this test's own."""
    return pg.new_database()


@pytest.fixture
def nats3() -> Iterator[NatsCluster]:
    """A 3-server NATS JetStream cluster of the test's own (under a second to start): tests
    kill its servers, and a cluster still electing leaders after another test's kill would
    time the next test's requests out."""
    with nats_cluster(3) as cluster:
        yield cluster
