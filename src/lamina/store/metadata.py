"""The metadata database (SQLAlchemy 2; SQLite by default).

Rows never leave this module: callers get and give domain models. Every method is blocking;
`control/` runs them on its own single worker thread, which also serialises SQLite writers.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from lamina.models import Function, FunctionConfig, FunctionState, UpdateStatus

_meta = MetaData()

functions = Table(
    "functions",
    _meta,
    Column("name", String(64), primary_key=True),
    Column("tags", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# One row per version of a function; `$LATEST` is the mutable one.
function_versions = Table(
    "function_versions",
    _meta,
    Column(
        "function_name",
        String(64),
        ForeignKey("functions.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("version", String(16), primary_key=True),
    Column("runtime", String(32), nullable=False),
    Column("handler", String(128), nullable=False),
    Column("role", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("timeout", Integer, nullable=False),
    Column("memory_size", Integer, nullable=False),
    Column("ephemeral_storage", Integer, nullable=False),
    Column("environment", JSON, nullable=False),
    Column("architectures", JSON, nullable=False),
    Column("package_type", String(8), nullable=False),
    Column("code_sha256", String(64), nullable=False, index=True),
    Column("code_size", Integer, nullable=False),
    Column("revision_id", String(36), nullable=False),
    Column("last_modified", DateTime(timezone=True), nullable=False),
    Column("state", String(16), nullable=False),
    Column("state_reason", Text),
    Column("state_reason_code", String(64)),
    Column("last_update_status", String(16), nullable=False),
    Column("last_update_status_reason", Text),
    Column("last_update_status_reason_code", String(64)),
)

_CONFIG_COLUMNS = [c.name for c in function_versions.columns if c.name != "function_name"]


def _to_config(row: Any) -> FunctionConfig:
    m = row._mapping
    modified: datetime = m["last_modified"]
    if modified.tzinfo is None:  # SQLite hands naive datetimes back
        modified = modified.replace(tzinfo=UTC)
    return FunctionConfig(
        name=m["function_name"],
        version=m["version"],
        runtime=m["runtime"],
        handler=m["handler"],
        role=m["role"],
        description=m["description"],
        timeout=m["timeout"],
        memory_size=m["memory_size"],
        ephemeral_storage=m["ephemeral_storage"],
        environment=dict(m["environment"]),
        architectures=tuple(m["architectures"]),
        package_type=m["package_type"],
        code_sha256=m["code_sha256"],
        code_size=m["code_size"],
        revision_id=m["revision_id"],
        last_modified=modified,
        state=FunctionState(m["state"]),
        state_reason=m["state_reason"],
        state_reason_code=m["state_reason_code"],
        last_update_status=UpdateStatus(m["last_update_status"]),
        last_update_status_reason=m["last_update_status_reason"],
        last_update_status_reason_code=m["last_update_status_reason_code"],
    )


def _config_values(config: FunctionConfig) -> dict[str, Any]:
    values = {name: getattr(config, name) for name in _CONFIG_COLUMNS}
    values["architectures"] = list(config.architectures)
    values["state"] = config.state.value
    values["last_update_status"] = config.last_update_status.value
    values["function_name"] = config.name
    return values


class MetadataStore:
    """Functions and their versions, in a SQL database."""

    def __init__(self, url: str) -> None:
        self._engine: Engine = create_engine(url)
        if url.startswith("sqlite"):
            event.listen(self._engine, "connect", _sqlite_pragmas)
        _meta.create_all(self._engine)

    @classmethod
    def sqlite(cls, path: Path) -> MetadataStore:
        return cls(f"sqlite:///{path}")

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            yield conn

    def create_function(self, config: FunctionConfig, tags: dict[str, str]) -> bool:
        """Insert a new function with its `$LATEST`; False if the name is taken."""
        with self._tx() as conn:
            if conn.execute(
                select(functions.c.name).where(functions.c.name == config.name)
            ).first():
                return False
            conn.execute(
                insert(functions).values(name=config.name, tags=tags, created_at=datetime.now(UTC))
            )
            conn.execute(insert(function_versions).values(**_config_values(config)))
            return True

    def get_function(self, name: str) -> Function | None:
        with self._tx() as conn:
            tags = conn.execute(select(functions.c.tags).where(functions.c.name == name)).first()
            if tags is None:
                return None
            row = conn.execute(
                select(function_versions).where(
                    function_versions.c.function_name == name,
                    function_versions.c.version == "$LATEST",
                )
            ).one()
            return Function(latest=_to_config(row), tags=dict(tags[0]))

    def get_version(self, name: str, version: str) -> FunctionConfig | None:
        with self._tx() as conn:
            row = conn.execute(
                select(function_versions).where(
                    function_versions.c.function_name == name,
                    function_versions.c.version == version,
                )
            ).first()
            return _to_config(row) if row else None

    def list_latest(self, after: str | None, limit: int) -> list[FunctionConfig]:
        """`$LATEST` of each function, by name, starting after `after`."""
        query = select(function_versions).where(function_versions.c.version == "$LATEST")
        if after is not None:
            query = query.where(function_versions.c.function_name > after)
        query = query.order_by(function_versions.c.function_name).limit(limit)
        with self._tx() as conn:
            return [_to_config(r) for r in conn.execute(query)]

    def all_versions(self) -> list[FunctionConfig]:
        with self._tx() as conn:
            return [_to_config(r) for r in conn.execute(select(function_versions))]

    def replace_version(self, config: FunctionConfig, *, expect_revision: str) -> bool:
        """Overwrite a version if its revision is still `expect_revision` (optimistic lock)."""
        values = _config_values(config)
        with self._tx() as conn:
            result = conn.execute(
                update(function_versions)
                .where(
                    function_versions.c.function_name == config.name,
                    function_versions.c.version == config.version,
                    function_versions.c.revision_id == expect_revision,
                )
                .values(**values)
            )
            return result.rowcount == 1

    def delete_function(self, name: str) -> bool:
        with self._tx() as conn:
            conn.execute(delete(function_versions).where(function_versions.c.function_name == name))
            return conn.execute(delete(functions).where(functions.c.name == name)).rowcount == 1

    def code_in_use(self, sha256: str) -> bool:
        with self._tx() as conn:
            count = conn.execute(
                select(func.count()).where(function_versions.c.code_sha256 == sha256)
            ).scalar_one()
            return bool(count)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()
