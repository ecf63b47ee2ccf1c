"""Opening the database the SQL stores share, and bringing its schema to the code's revision.

Two back ends run the same stores: SQLite (`sqlite:///PATH`, the single-machine default: WAL,
fsync on commit, foreign keys, a busy timeout) and PostgreSQL (`postgresql://...`, a cluster's
shared database, through psycopg 3). `open_database` is what a node calls at start:

- SQLite on a single node upgrades itself (an old data directory is migrated in place);
- in a cluster, an empty database is created at the code's head, one at head is used as it
  is, and anything else refuses with `ClusterConfigError`: an older schema must be upgraded
  on purpose (`lamina db upgrade`), once, not by whichever node happens to start first; a
  newer one belongs to a newer Lamina. Schema work on PostgreSQL holds an advisory lock, so
  nodes starting at once create the schema once.

Messages name the database as HOST:PORT/DB (or the file), never with its password.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from lamina.cluster.api import ClusterConfigError

#: seconds to wait for PostgreSQL to accept a connection before calling it unreachable
CONNECT_TIMEOUT_S = 10
#: the advisory lock (an arbitrary 64-bit key, "lamina" in ASCII) schema work holds
_SCHEMA_LOCK = 0x6C616D696E61


def database_url(url: str) -> URL:
    """`url` as SQLAlchemy opens it: `postgresql://` (or `postgres://`) with the psycopg 3
    driver; ClusterConfigError for anything but SQLite and PostgreSQL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ClusterConfigError(f"{redacted(url)!r} is not a database URL") from None
    backend = parsed.get_backend_name()
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        return parsed
    raise ClusterConfigError(
        f"{redacted(url)!r}: Lamina keeps its state in SQLite (sqlite:///PATH) or "
        "PostgreSQL (postgresql://USER@HOST[:PORT]/DB)"
    )


def redacted(url: str) -> str:
    """`url` with its password (if any) as `***`."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(a malformed URL)"


def describe(url: str | URL) -> str:
    """Where a database is, for messages: HOST:PORT/DB, or a SQLite file's path."""
    parsed = make_url(url) if isinstance(url, str) else url
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return f"{parsed.host or 'localhost'}:{parsed.port or 5432}/{parsed.database or ''}"


def make_engine(url: str, *, wal: bool = True) -> Engine:
    """An engine for `url` (see `database_url`), without touching the database. `wal`
    (SQLite): put the file in write-ahead-log mode, as the data directory's databases are."""
    parsed = database_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed)
        event.listen(engine, "connect", _sqlite_pragmas if wal else _sqlite_pragmas_no_wal)
        return engine
    # pool_pre_ping: a node outlives a database restart (or failover) without failing the
    # first request on each stale connection.
    return create_engine(
        parsed, pool_pre_ping=True, connect_args={"connect_timeout": CONNECT_TIMEOUT_S}
    )


#: the revision of the newest migration (`store/migrations/versions`): a database stamped
#: with it is used without loading Alembic (some 10 MB a server keeps for good otherwise);
#: a test checks it against Alembic's own reading of the scripts
SCHEMA_HEAD = "0007"


def open_database(url: str, *, cluster: bool) -> Engine:
    """The engine of the database at `url`, its schema at the code's head (see the module's
    docstring for who may create and upgrade it). Raises `ClusterConfigError` saying exactly
    why a database cannot be used (unreachable, older, newer)."""
    engine = make_engine(url)
    try:
        with schema_lock(engine, url) as conn:
            if _stamped(conn) == SCHEMA_HEAD:
                return engine
            from lamina.store import migrations

            migrations.bring_to_head(conn, upgrade=not cluster, url=url)
    except BaseException:
        engine.dispose()
        raise
    return engine


def upgrade_database(url: str) -> tuple[str | None, str]:
    """`lamina db upgrade`: bring the database at `url` to the code's head whatever its
    revision (create it if empty), under the schema lock. (The revision it was at, head);
    `ClusterConfigError` if it is newer than the code or cannot be reached."""
    from lamina.store import migrations

    engine = make_engine(url)
    try:
        with schema_lock(engine, url) as conn:
            before = migrations.current(conn)
            migrations.bring_to_head(conn, upgrade=True, url=url)
            return before, migrations.head()
    finally:
        engine.dispose()


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database's schema is, next to the code's."""

    #: the revision the database is stamped with (None: none)
    current: str | None
    #: the code's revision
    head: str
    #: whether the database holds none of Lamina's tables (a node creates them)
    empty: bool
    #: whether the code knows `current` (False: a newer Lamina upgraded it)
    known: bool


def schema_status(url: str) -> SchemaStatus:
    """`lamina db status`: the database's revision beside the code's (nothing is changed)."""
    from lamina.store import migrations

    engine = make_engine(url)
    try:
        with _connect(engine, url) as conn:
            now = migrations.current(conn)
            return SchemaStatus(
                current=now,
                head=migrations.head(),
                empty=now is None and migrations.is_empty(conn),
                known=now is None or migrations.known(now),
            )
    finally:
        engine.dispose()


@contextmanager
def schema_lock(engine: Engine, url: str) -> Iterator[Connection]:
    """A connection in a transaction that holds the schema lock (PostgreSQL: an advisory
    lock, released at commit; SQLite serialises writers itself). A database that cannot be
    reached raises `ClusterConfigError`."""
    with _connect(engine, url) as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK})
        yield conn


def _stamped(conn: Connection) -> str | None:
    """The revision in `alembic_version`, read without Alembic (None: no such table)."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    found = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return found[0] if len(found) == 1 else None


@contextmanager
def _connect(engine: Engine, url: str) -> Iterator[Connection]:
    try:
        conn = engine.connect()
    except DBAPIError as e:
        raise ClusterConfigError(
            f"cannot reach the database at {describe(url)}: {_reason(e, url)}"
        ) from None
    with conn:
        yield conn


def _reason(error: DBAPIError, url: str) -> str:
    """The driver's reason, in one line: psycopg's first line without the `connection to
    server at "...", port N failed:` prefix (the message names the server already), and
    never the password."""
    line = (str(error.orig).strip().splitlines() or ["unknown error"])[0]
    line = line.rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").strip()
    password = make_url(url).password
    if password:
        line = line.replace(str(password), "***")
    return line[:1].lower() + line[1:]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.close()
    _sqlite_pragmas_no_wal(dbapi_conn, _record)


def _sqlite_pragmas_no_wal(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
