"""A version's TracingConfig mode and whether an Environment was given, in the metadata
store: kept as given across a restart, and a data directory from before them gains the
columns with Lambda's defaults (PassThrough; an Environment only if it has variables)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from lamina.models import LATEST, FunctionConfig
from lamina.store import MetadataStore
from lamina.store.sealed import Sealer

KEY = bytes(range(32))


def _config(name: str, **fields: object) -> FunctionConfig:
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
        **fields,  # type: ignore[arg-type]
    )


def _seen(store: MetadataStore) -> dict[str, tuple[str, bool]]:
    return {c.name: (c.tracing_mode, c.environment_given) for c in store.all_versions()}


def test_tracing_and_given_environment_round_trip_and_migrate(tmp_path: Path) -> None:
    db = tmp_path / "lamina.db"
    store = MetadataStore.sqlite(db, Sealer(KEY))
    assert store.create_function(_config("traced", tracing_mode="Active"), {})
    assert store.create_function(_config("empty-env", environment_given=True), {})
    assert store.create_function(_config("plain"), {})
    store.close()

    store = MetadataStore.sqlite(db, Sealer(KEY))
    assert _seen(store) == {
        "traced": ("Active", False),
        "empty-env": ("PassThrough", True),
        "plain": ("PassThrough", False),
    }
    store.close()

    # A data directory made before both (and before migrations): no such columns.
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE function_versions DROP COLUMN tracing_mode")
        conn.execute("ALTER TABLE function_versions DROP COLUMN environment_given")
        conn.execute("DROP TABLE alembic_version")
    store = MetadataStore.sqlite(db, Sealer(KEY))
    assert set(_seen(store).values()) == {("PassThrough", False)}
    assert store.create_function(_config("new", tracing_mode="Active"), {})
    fn = store.get_function("new")
    assert fn is not None and fn.latest.tracing_mode == "Active"
    store.close()
