"""An image function's image in the metadata store: kept whole (URI, digest, the image's
config, ImageConfig as given, the image an update replaces), and a data directory from
before image functions gains the column (migration 0004) without losing its functions."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from lamina.images import ImageConfig
from lamina.models import LATEST, FunctionConfig, FunctionImage, ImageOverrides
from lamina.store import MetadataStore
from lamina.store.engine import SCHEMA_HEAD
from lamina.store.sealed import Sealer

KEY = bytes(range(32))
DIGEST = "sha256:" + "ab" * 32


def _config(name: str, image: FunctionImage | None) -> FunctionConfig:
    return FunctionConfig(
        name=name,
        version=LATEST,
        runtime="" if image else "python3.12",
        handler="" if image else "app.handler",
        role="arn:aws:iam::000000000000:role/r",
        code_sha256=DIGEST.split(":")[1],
        code_size=0,
        revision_id="r1",
        last_modified=datetime.now(UTC),
        package_type="Image" if image else "Zip",
        image=image,
    )


IMAGE = FunctionImage(
    uri="127.0.0.1:5000/app:1",
    resolved_uri=f"127.0.0.1:5000/app@{DIGEST}",
    digest=DIGEST,
    config=ImageConfig(
        entrypoint=("/lambda-entrypoint.sh",),
        cmd=("app.handler",),
        env={"PATH": "/var/lang/bin:/usr/bin", "LANG": "en_US.UTF-8"},
        working_dir="/var/task",
        user="1000",
        architecture="arm64",
    ),
    overrides=ImageOverrides(command=("other.handler",), working_directory="/srv"),
)


def test_an_image_round_trips_and_old_directories_migrate(tmp_path: Path) -> None:
    db = tmp_path / "lamina.db"
    store = MetadataStore.sqlite(db, Sealer(KEY))
    previous = replace(IMAGE, uri="127.0.0.1:5000/app:0", overrides=None)
    assert store.create_function(_config("img", IMAGE), {})
    assert store.create_function(replace(_config("upd", IMAGE), previous_image=previous), {})
    assert store.create_function(_config("zip", None), {})
    store.close()

    store = MetadataStore.sqlite(db, Sealer(KEY))
    got = {c.name: (c.image, c.previous_image) for c in store.all_versions()}
    assert got == {"img": (IMAGE, None), "upd": (IMAGE, previous), "zip": (None, None)}
    store.close()

    # A data directory at 0003 (before image functions): no such column.
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM function_versions WHERE package_type = 'Image'")
        conn.execute("ALTER TABLE function_versions DROP COLUMN image")
        conn.execute("UPDATE alembic_version SET version_num = '0003'")
    store = MetadataStore.sqlite(db, Sealer(KEY))
    assert [(c.name, c.image) for c in store.all_versions()] == [("zip", None)]
    assert store.create_function(_config("new", IMAGE), {})
    fn = store.get_function("new")
    assert fn is not None and fn.latest.image == IMAGE
    store.close()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (SCHEMA_HEAD,)
        ]
