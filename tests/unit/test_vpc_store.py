"""A version's VpcConfig in the metadata store: kept as given, and a data directory from
before VpcConfig gains the column without losing its functions."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from lamina.models import LATEST, FunctionConfig, VpcConfig
from lamina.store import MetadataStore
from lamina.store.sealed import Sealer

KEY = bytes(range(32))


def _config(name: str, vpc: VpcConfig | None) -> FunctionConfig:
    return FunctionConfig(
        name=name,
        version=LATEST,
        runtime="python3.11",
        handler="app.handler",
        role="arn:aws:iam::000000000000:role/r",
        code_sha256="00" * 32,
        code_size=1,
        revision_id="r1",
        last_modified=datetime.now(UTC),
        vpc=vpc,
    )


def test_vpc_config_round_trips_and_old_directories_migrate(tmp_path: Path) -> None:
    db = tmp_path / "lamina.db"
    store = MetadataStore.sqlite(db, Sealer(KEY))
    vpc = VpcConfig(("subnet-a", "subnet-b"), ("sg-1",), "vpc-lab", True)
    assert store.create_function(_config("in-vpc", vpc), {})
    assert store.create_function(_config("detached", VpcConfig()), {})
    assert store.create_function(_config("old", None), {})
    store.close()

    store = MetadataStore.sqlite(db, Sealer(KEY))
    got = {c.name: c.vpc for c in store.all_versions()}
    assert got == {"in-vpc": vpc, "detached": VpcConfig(), "old": None}
    store.close()

    # A data directory made before VpcConfig (and before migrations): no such column.
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE function_versions DROP COLUMN vpc_config")
        conn.execute("DROP TABLE alembic_version")
    store = MetadataStore.sqlite(db, Sealer(KEY))
    assert {c.name: c.vpc for c in store.all_versions()} == dict.fromkeys(got)
    assert store.create_function(_config("new", vpc), {})
    fn = store.get_function("new")
    assert fn is not None and fn.latest.vpc == vpc
    store.close()
