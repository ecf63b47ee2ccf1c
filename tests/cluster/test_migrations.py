"""The schema at start: a cluster's empty database is created at head (once, however many
nodes start at once); an older schema, a newer one, an unreachable database and a node
sealing with another key are refused with a message saying exactly that; `lamina db
upgrade` upgrades; a single machine's data directory made before migrations upgrades itself
and keeps its rows."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import inspect, select, text, update
from tests.cluster._engines import Postgres
from tests.conftest import free_port

from lamina.cli.main import main
from lamina.cluster.api import ClusterConfigError
from lamina.models import LATEST, FunctionConfig, Role
from lamina.settings import ClusterSettings, Settings
from lamina.store import MetadataStore, migrations
from lamina.store import engine as engine_module
from lamina.store.engine import make_engine, open_database, schema_lock, schema_status
from lamina.store.open import open_stores
from lamina.store.roles import RoleStore
from lamina.store.schema import function_versions
from lamina.store.sealed import Sealer

KEY = bytes(range(32))
HEAD = migrations.head()


def _config(name: str, **fields: object) -> FunctionConfig:
    return FunctionConfig(
        name=name,
        version=LATEST,
        runtime="python3.12",
        handler="app.handler",
        role="arn:aws:iam::000000000000:role/r",
        code_sha256="ab" * 32,
        code_size=1,
        revision_id="r1",
        last_modified=datetime.now(UTC),
        **fields,  # type: ignore[arg-type]
    )


def _lamina(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def _node(data_dir: Path, database_url: str, name: str) -> Settings:
    cluster = ClusterSettings(
        database_url=database_url, nats_urls=("nats://127.0.0.1:1",), node_name=name
    )
    return Settings(data_dir=data_dir, cluster=cluster)


def test_an_empty_database_is_created_at_head(database_url: str) -> None:
    engine = open_database(database_url, cluster=True)
    try:
        tables = set(inspect(engine).get_table_names())
        assert set(migrations.target_metadata().tables) <= tables
        with engine.connect() as conn:
            assert migrations.current(conn) == HEAD
    finally:
        engine.dispose()
    assert _lamina("db", "status", "--database", database_url)[0] == 0
    open_database(database_url, cluster=True).dispose()  # at head: used as it is


def test_nodes_starting_at_once_create_the_schema_once(pg: Postgres, database_url: str) -> None:
    engines = [make_engine(database_url) for _ in range(2)]
    start = threading.Barrier(2)
    done: list[str] = []

    def node(index: int) -> None:
        start.wait()
        with schema_lock(engines[index], database_url) as conn:
            done.append(migrations.bring_to_head(conn, upgrade=False, url=database_url))

    threads = [threading.Thread(target=node, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(done) == ["created", "current"]
    for e in engines:
        e.dispose()

    # The whole start, as nodes run it, on another empty database.
    other = pg.new_database()
    opened = []
    threads = [
        threading.Thread(target=lambda: opened.append(open_database(other, cluster=True)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(opened) == 2
    with opened[0].connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
    for e in opened:
        e.dispose()


_NEXT_REVISION = '''
"""A revision after this code's head (a test's)."""
import sqlalchemy as sa
from alembic import op

revision = "9002"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("made_by_9002", sa.Column("id", sa.Integer, primary_key=True))
'''


def _code_one_revision_ahead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, the code's head is a revision after the database's (9002)."""
    scripts = tmp_path / "migrations"
    shutil.copytree(
        Path(migrations.__file__).parent,
        scripts,
        ignore=shutil.ignore_patterns("__pycache__", "__init__.py"),
    )
    (scripts / "versions" / "r9002_next.py").write_text(_NEXT_REVISION.format(head=HEAD))
    monkeypatch.setattr(migrations, "_HERE", scripts)
    monkeypatch.setattr(engine_module, "SCHEMA_HEAD", "9002")  # as the next release says
    migrations.scripts.cache_clear()


@pytest.fixture
def fresh_scripts() -> Iterator[None]:
    yield
    migrations.scripts.cache_clear()  # before monkeypatch puts the real scripts back


def test_an_older_schema_is_refused_until_lamina_db_upgrade(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_scripts: None
) -> None:
    open_database(database_url, cluster=True).dispose()
    sqlite_url = f"sqlite:///{tmp_path / 'lamina.db'}"
    open_database(sqlite_url, cluster=False).dispose()
    _code_one_revision_ahead(tmp_path, monkeypatch)

    with pytest.raises(ClusterConfigError) as refused:
        open_database(database_url, cluster=True)
    assert str(refused.value) == (
        f"the database schema is at revision {HEAD}; this Lamina needs 9002: run "
        f"`lamina db upgrade --database {database_url}` first"
    )
    code, out = _lamina("db", "status", "--database", database_url)
    assert code == 1 and f"schema revision {HEAD}; this Lamina needs 9002" in out

    code, out = _lamina("db", "upgrade", "--database", database_url)
    assert code == 0 and f"revision 9002 now (was: {HEAD})" in out, out
    engine = open_database(database_url, cluster=True)
    assert "made_by_9002" in inspect(engine).get_table_names()
    engine.dispose()
    assert _lamina("db", "upgrade", "--database", database_url)[1].endswith(
        "already (this Lamina's)\n"
    )

    # A single machine's SQLite upgrades itself.
    engine = open_database(sqlite_url, cluster=False)
    assert "made_by_9002" in inspect(engine).get_table_names()
    engine.dispose()


def test_a_database_stamped_at_no_revision_is_refused_then_upgraded(database_url: str) -> None:
    engine = open_database(database_url, cluster=True)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))  # `alembic stamp base`
    engine.dispose()
    with pytest.raises(ClusterConfigError, match=r"at revision \(none\); this Lamina needs"):
        open_database(database_url, cluster=True)
    assert _lamina("db", "upgrade", "--database", database_url)[0] == 0
    open_database(database_url, cluster=True).dispose()


def test_a_newer_schema_is_refused(database_url: str, tmp_path: Path) -> None:
    sqlite_url = f"sqlite:///{tmp_path / 'lamina.db'}"
    for url in (database_url, sqlite_url):
        engine = open_database(url, cluster=False)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed0042'"))
        engine.dispose()
        for cluster in (True, False):
            with pytest.raises(ClusterConfigError, match="upgraded by a newer Lamina") as refused:
                open_database(url, cluster=cluster)
            assert "revision f00dfeed0042" in str(refused.value)
        code, out = _lamina("db", "upgrade", "--database", url)
        assert code == 1 and "upgraded by a newer Lamina" in out
        status = schema_status(url)
        assert status.current == "f00dfeed0042" and not status.known


def test_an_unreachable_database_is_refused_without_its_password(pg: Postgres) -> None:
    missing = pg.url("no_such_db")
    with pytest.raises(ClusterConfigError) as refused:
        open_database(missing, cluster=True)
    assert str(refused.value) == (
        f"cannot reach the database at 127.0.0.1:{pg.port}/no_such_db: "
        'database "no_such_db" does not exist'
    )
    port = free_port()
    url = f"postgresql://lamina:sekret-pw@127.0.0.1:{port}/lamina"
    with pytest.raises(ClusterConfigError) as refused:
        open_database(url, cluster=True)
    assert str(refused.value) == (
        f"cannot reach the database at 127.0.0.1:{port}/lamina: connection refused"
    )
    for command in ("status", "upgrade"):
        code, out = _lamina("db", command, "--database", url)
        assert code == 1 and "cannot reach the database" in out and "sekret-pw" not in out


def test_a_data_directory_from_before_migrations_upgrades_and_keeps_its_rows(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "secret.key").write_bytes(KEY)
    # The old way: each store made its tables as it opened; no alembic_version; the columns
    # added later missing; tables added later absent; a row's environment still in clear.
    engine = make_engine(f"sqlite:///{data / 'lamina.db'}")
    migrations.target_metadata().create_all(engine)
    old = MetadataStore(engine, Sealer(KEY))
    assert old.create_function(_config("old", environment={"A": "1"}), {"team": "x"})
    RoleStore(old).put(Role("r", "/", "arn:aws:iam::000000000000:role/r", (), datetime.now(UTC)))
    with engine.begin() as conn:
        conn.execute(update(function_versions).values(environment={"A": "1"}))
        for table, columns in (
            ("functions", ("next_version", "reserved_concurrency")),
            (
                "function_versions",
                (
                    "dead_letter_target",
                    "logging_config",
                    "kms_key_arn",
                    "vpc_config",
                    "signed_by",
                    "tracing_mode",
                    "environment_given",
                ),
            ),
        ):
            for column in columns:
                conn.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        for table in ("function_urls", "layer_version_policies", "access_keys", "usage"):
            conn.execute(text(f"DROP TABLE {table}"))
    engine.dispose()

    stores = open_stores(Settings(data_dir=data))
    try:
        fn = stores.metadata.get_function("old")
        assert fn is not None and fn.latest.environment == {"A": "1"} and fn.tags == {"team": "x"}
        assert [r.name for r in stores.roles.all()] == ["r"]
        published = stores.metadata.publish_version(_config("old"), expect_revision="r1")
        assert published is not None and published.version == "1"  # next_version's default
        with stores.engine.connect() as conn:
            assert migrations.current(conn) == HEAD
            assert set(migrations.target_metadata().tables) <= set(inspect(conn).get_table_names())
            stored = conn.execute(
                select(function_versions.c.environment).where(function_versions.c.version == LATEST)
            ).scalar_one()
        assert isinstance(stored, str)  # sealed at start
    finally:
        stores.close()


def test_a_node_with_another_sealing_key_is_refused(database_url: str, tmp_path: Path) -> None:
    first = open_stores(_node(tmp_path / "a", database_url, "a"))
    assert first.metadata.create_function(_config("fn", environment={"S": "v"}), {})
    first.close()

    second = _node(tmp_path / "b", database_url, "b")  # its own, new key
    with pytest.raises(ClusterConfigError) as refused:
        open_stores(second)
    key_file = tmp_path / "b" / "secret.key"
    assert str(refused.value).startswith(f"the sealing key {key_file} is not the cluster's")
    assert "Copy secret.key from the data directory of a node of the cluster" in str(refused.value)

    shutil.copy(tmp_path / "a" / "secret.key", key_file)
    joined = open_stores(second)
    try:
        fn = joined.metadata.get_function("fn")
        assert fn is not None and fn.latest.environment == {"S": "v"}
    finally:
        joined.close()


def test_the_head_a_server_checks_without_alembic_is_alembics() -> None:
    """`open_database` uses a database stamped with `SCHEMA_HEAD` without loading Alembic: a
    new revision must move that constant too, or databases at the new head would be taken
    for older ones."""
    from lamina.store import migrations
    from lamina.store.engine import SCHEMA_HEAD

    assert migrations.head() == SCHEMA_HEAD
