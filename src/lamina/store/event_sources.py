"""Event-source mappings, the brokers they read from and the secrets they log in with, in the
metadata database (tables of their own).

A mapping is kept as one JSON document of its settings beside the columns that change on
their own (`state`, `last_result`, `last_modified`), so that the runner's frequent result
reports write one column. A broker's URL and a secret's username and password are sealed
(`store.sealed`, bound to the row's name) because they hold credentials; a broker's URL
without its password (`display_url`) is kept in clear for listings.

Rows never leave this module: callers get `EventSourceMapping`, `StoredBroker` and
`StoredSecret`. Every method is blocking; `control/` runs them on its worker thread.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    LargeBinary,
    String,
    Table,
    Text,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from lamina.mappings import AccessConfig, Broker, EventSourceMapping, MappingState, SourceKind
from lamina.store import schema
from lamina.store.sealed import Sealer

mappings = Table(
    "event_source_mappings",
    schema.metadata,
    Column("uuid", String(36), primary_key=True),
    Column("function_name", String(64), nullable=False, index=True),
    Column("source_arn", Text, nullable=False),
    Column("state", String(16), nullable=False),
    Column("last_result", Text, nullable=False),
    Column("last_modified", Float, nullable=False),
    # every other field of EventSourceMapping, as JSON (see `_settings`)
    Column("settings", Text, nullable=False),
)

brokers = Table(
    "event_source_brokers",
    schema.metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("id", String(40), nullable=False),
    Column("arn", Text, nullable=False),
    Column("display_url", Text, nullable=False),
    # the URL with its credentials, sealed under the broker's name
    Column("url", LargeBinary, nullable=False),
    Column("created", Float, nullable=False),
)

secrets = Table(
    "event_source_secrets",
    schema.metadata,
    Column("name", String(512), primary_key=True),
    Column("arn", Text, nullable=False),
    # {"username": ..., "password": ...} as JSON, sealed under the secret's ARN
    Column("value", LargeBinary, nullable=False),
    Column("created", Float, nullable=False),
)

# Fields kept in columns of their own, not in the settings document.
_COLUMNS = frozenset(
    {"uuid", "function_name", "source_arn", "state", "last_result", "last_modified"}
)


@dataclass(frozen=True)
class StoredBroker:
    """A registered broker and the URL (credentials included) pollers connect with."""

    broker: Broker
    url: str


@dataclass(frozen=True)
class StoredSecret:
    """A BASIC_AUTH secret: what a mapping's `SourceAccessConfigurations` names by ARN."""

    name: str
    arn: str
    username: str
    password: str
    created: float


class EventSourceStore:
    """The three tables, in the metadata store's database (`engine`)."""

    def __init__(self, engine: Engine, sealer: Sealer) -> None:
        self._engine = engine
        self._sealer = sealer

    # -- mappings ------------------------------------------------------------------

    def all_mappings(self) -> list[EventSourceMapping]:
        with self._engine.begin() as conn:
            return [_mapping(r._mapping) for r in conn.execute(select(mappings))]

    def put_mapping(self, mapping: EventSourceMapping) -> None:
        """Insert the mapping, or replace the one with its UUID."""
        values = _mapping_values(mapping)
        with self._engine.begin() as conn:
            if not conn.execute(
                update(mappings).where(mappings.c.uuid == mapping.uuid).values(**values)
            ).rowcount:
                conn.execute(insert(mappings).values(uuid=mapping.uuid, **values))

    def delete_mapping(self, uuid: str) -> bool:
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(mappings).where(mappings.c.uuid == uuid)).rowcount)

    def set_results(self, results: dict[str, str]) -> None:
        """Each mapping's `LastProcessingResult` (by UUID) in one transaction; mappings gone
        meanwhile are skipped."""
        if not results:
            return
        with self._engine.begin() as conn:
            for uuid, result in results.items():
                conn.execute(
                    update(mappings).where(mappings.c.uuid == uuid).values(last_result=result)
                )

    # -- brokers -------------------------------------------------------------------

    def all_brokers(self) -> list[StoredBroker]:
        with self._engine.begin() as conn:
            rows = conn.execute(select(brokers).order_by(brokers.c.name)).all()
        return [self._broker(r._mapping) for r in rows]

    def put_broker(self, stored: StoredBroker) -> None:
        """Insert the broker, or replace the one of its name."""
        b = stored.broker
        with self._engine.begin() as conn:
            conn.execute(delete(brokers).where(brokers.c.name == b.name))
            conn.execute(
                insert(brokers).values(
                    name=b.name,
                    kind=b.kind.value,
                    id=b.id,
                    arn=b.arn,
                    display_url=b.display_url,
                    url=self._sealer.seal(stored.url.encode(), _context("broker", b.name)),
                    created=b.created,
                )
            )

    def delete_broker(self, name: str) -> bool:
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(brokers).where(brokers.c.name == name)).rowcount)

    def _broker(self, m: Any) -> StoredBroker:
        url = self._sealer.unseal(m["url"], _context("broker", m["name"])).decode()
        broker = Broker(
            name=m["name"],
            kind=SourceKind(m["kind"]),
            id=m["id"],
            arn=m["arn"],
            display_url=m["display_url"],
            created=m["created"],
        )
        return StoredBroker(broker, url)

    # -- secrets -------------------------------------------------------------------

    def all_secrets(self) -> list[StoredSecret]:
        with self._engine.begin() as conn:
            rows = conn.execute(select(secrets).order_by(secrets.c.name)).all()
        out = []
        for r in rows:
            m = r._mapping
            value = json.loads(self._sealer.unseal(m["value"], _context("secret", m["arn"])))
            username, password = value["username"], value["password"]
            out.append(StoredSecret(m["name"], m["arn"], username, password, m["created"]))
        return out

    def put_secret(self, secret: StoredSecret) -> None:
        """Insert the secret, or replace the one of its name."""
        value = json.dumps({"username": secret.username, "password": secret.password})
        with self._engine.begin() as conn:
            conn.execute(delete(secrets).where(secrets.c.name == secret.name))
            conn.execute(
                insert(secrets).values(
                    name=secret.name,
                    arn=secret.arn,
                    value=self._sealer.seal(value.encode(), _context("secret", secret.arn)),
                    created=secret.created,
                )
            )

    def delete_secret(self, name: str) -> bool:
        with self._engine.begin() as conn:
            return bool(conn.execute(delete(secrets).where(secrets.c.name == name)).rowcount)


def _context(kind: str, key: str) -> bytes:
    """What a sealed value is bound to: it cannot be moved to another row unnoticed."""
    return f"event-sources:{kind}:{key}".encode()


def _mapping_values(m: EventSourceMapping) -> dict[str, Any]:
    settings = {k: v for k, v in asdict(m).items() if k not in _COLUMNS}
    settings["kind"] = m.kind.value
    return {
        "function_name": m.function_name,
        "source_arn": m.source_arn,
        "state": m.state.value,
        "last_result": m.last_result,
        "last_modified": m.last_modified,
        "settings": json.dumps(settings),
    }


def _mapping(row: Any) -> EventSourceMapping:
    s = json.loads(row["settings"])
    return EventSourceMapping(
        uuid=row["uuid"],
        function_name=row["function_name"],
        source_arn=row["source_arn"],
        state=MappingState(row["state"]),
        last_result=row["last_result"],
        last_modified=row["last_modified"],
        function_arn=s["function_arn"],
        qualifier=s["qualifier"],
        kind=SourceKind(s["kind"]),
        state_reason=s["state_reason"],
        batch_size=s["batch_size"],
        batching_window_s=s["batching_window_s"],
        filters=tuple(s["filters"]),
        report_batch_item_failures=s["report_batch_item_failures"],
        maximum_concurrency=s["maximum_concurrency"],
        on_failure=s["on_failure"],
        queues=tuple(s["queues"]),
        access=tuple(AccessConfig(a["type"], a["uri"]) for a in s["access"]),
        starting_position=s["starting_position"],
        starting_timestamp=s["starting_timestamp"],
        maximum_retry_attempts=s["maximum_retry_attempts"],
        maximum_record_age_s=s["maximum_record_age_s"],
        bisect_on_error=s["bisect_on_error"],
        parallelization_factor=s["parallelization_factor"],
        tumbling_window_s=s["tumbling_window_s"],
        tags=dict(s["tags"]),
        batching_window_default=bool(s.get("batching_window_default", False)),
    )
