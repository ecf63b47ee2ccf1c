"""Function URL configurations, in the metadata database (their own table, beside the
metadata store's).

A URL belongs to a function and a qualifier (`$LATEST` or an alias): the metadata store deletes
it in the same transaction as the function or alias (see `MetadataStore.add_dependent`).
Blocking, like the metadata store; `control/` runs these on its worker thread.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    String,
    Table,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from lamina.models import LATEST, FunctionUrl, UrlCors
from lamina.store import schema
from lamina.store.metadata import MetadataStore
from lamina.store.schema import aliases, functions

function_urls = Table(
    "function_urls",
    schema.metadata,
    Column("function_name", String(64), primary_key=True),
    Column("qualifier", String(128), primary_key=True),
    Column("url_id", String(32), nullable=False, unique=True),
    Column("auth_type", String(16), nullable=False),
    Column("invoke_mode", String(16), nullable=False),
    # Cors as the domain model's members (None: no Cors given)
    Column("cors", JSON, nullable=True),
    Column("created", DateTime(timezone=True), nullable=False),
    Column("last_modified", DateTime(timezone=True), nullable=False),
)

_CORS_FIELDS = (
    "allow_credentials",
    "allow_headers",
    "allow_methods",
    "allow_origins",
    "expose_headers",
    "max_age",
)


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t  # SQLite hands naive ones back


def _cors_value(cors: UrlCors | None) -> dict[str, Any] | None:
    if cors is None:
        return None
    out: dict[str, Any] = {}
    for name in _CORS_FIELDS:
        value = getattr(cors, name)
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _cors(value: dict[str, Any] | None) -> UrlCors | None:
    if value is None:
        return None
    fields: dict[str, Any] = {}
    for name in _CORS_FIELDS:
        item = value.get(name)
        fields[name] = tuple(item) if isinstance(item, list) else item
    return UrlCors(**fields)


def _values(url: FunctionUrl) -> dict[str, Any]:
    return {
        "function_name": url.function_name,
        "qualifier": url.qualifier,
        "url_id": url.url_id,
        "auth_type": url.auth_type,
        "invoke_mode": url.invoke_mode,
        "cors": _cors_value(url.cors),
        "created": url.created,
        "last_modified": url.last_modified,
    }


def _delete_of(conn: Connection, function_name: str, qualifier: str | None) -> None:
    query = delete(function_urls).where(function_urls.c.function_name == function_name)
    if qualifier is not None:
        query = query.where(function_urls.c.qualifier == qualifier)
    conn.execute(query)


class FunctionUrlStore:
    """The `function_urls` table, in the metadata store's database."""

    def __init__(self, metadata: MetadataStore) -> None:
        self._engine = metadata.engine
        metadata.add_dependent(_delete_of)

    def create(self, url: FunctionUrl) -> bool:
        """Insert a URL; False if its qualifier has one already or the function or alias it
        belongs to is gone (checked in the same transaction, so that no URL outlives them)."""
        name = url.function_name
        if url.qualifier == LATEST:
            exists = select(functions.c.name).where(functions.c.name == name)
        else:
            exists = select(aliases.c.name).where(
                aliases.c.function_name == name, aliases.c.name == url.qualifier
            )
        try:
            with self._engine.begin() as conn:
                if conn.execute(exists).first() is None:
                    return False
                taken = conn.execute(
                    select(function_urls.c.url_id).where(
                        function_urls.c.function_name == url.function_name,
                        function_urls.c.qualifier == url.qualifier,
                    )
                ).first()
                if taken is not None:
                    return False
                conn.execute(insert(function_urls).values(**_values(url)))
                return True
        except IntegrityError:  # another node of a cluster made it meanwhile
            return False

    def replace(self, url: FunctionUrl) -> bool:
        """Overwrite a URL's settings; False if it is gone."""
        with self._engine.begin() as conn:
            return bool(
                conn.execute(
                    update(function_urls)
                    .where(
                        function_urls.c.function_name == url.function_name,
                        function_urls.c.qualifier == url.qualifier,
                    )
                    .values(**_values(url))
                ).rowcount
            )

    def delete(self, function_name: str, qualifier: str) -> bool:
        with self._engine.begin() as conn:
            return bool(
                conn.execute(
                    delete(function_urls).where(
                        function_urls.c.function_name == function_name,
                        function_urls.c.qualifier == qualifier,
                    )
                ).rowcount
            )

    def all(self) -> list[FunctionUrl]:
        with self._engine.begin() as conn:
            return [
                FunctionUrl(
                    function_name=m["function_name"],
                    qualifier=m["qualifier"],
                    url_id=m["url_id"],
                    auth_type=m["auth_type"],
                    invoke_mode=m["invoke_mode"],
                    cors=_cors(m["cors"]),
                    created=_utc(m["created"]),
                    last_modified=_utc(m["last_modified"]),
                )
                for m in (r._mapping for r in conn.execute(select(function_urls)))
            ]
