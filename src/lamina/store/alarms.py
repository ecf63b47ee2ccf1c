"""CloudWatch metric alarms and their history, in the metadata database.

`alarms`: one row per alarm, its configuration as JSON (the wire members PutMetricAlarm
took, already checked) and its state. `alarm_history`: what DescribeAlarmHistory lists.
`claim` is what keeps two nodes of a cluster from evaluating one alarm in the same round: a
conditional UPDATE of the alarm's last evaluation time, which one node wins. Blocking, like
the other stores: callers run it on a worker thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    delete,
    select,
    update,
)
from sqlalchemy.engine import Engine

from lamina.store import schema

alarms = Table(
    "alarms",
    schema.metadata,
    Column("name", String(255), primary_key=True),
    Column("config", JSON, nullable=False),
    Column("state_value", String(32), nullable=False),
    Column("state_reason", Text, nullable=False),
    Column("state_reason_data", Text, nullable=True),
    Column("state_updated", Float, nullable=False),
    Column("config_updated", Float, nullable=False),
    # the evaluation round (seconds since the epoch) that last evaluated it
    Column("evaluated", BigInteger, nullable=False, default=0),
)

alarm_history = Table(
    "alarm_history",
    schema.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("alarm_name", String(255), nullable=False),
    Column("timestamp", Float, nullable=False),
    Column("item_type", String(32), nullable=False),
    Column("summary", Text, nullable=False),
    Column("data", Text, nullable=False),
    Index("ix_alarm_history_name", "alarm_name", "timestamp"),
)


@dataclass
class AlarmRow:
    name: str
    config: dict[str, Any]
    state_value: str
    state_reason: str
    state_reason_data: str | None
    state_updated: float
    config_updated: float


@dataclass(frozen=True)
class HistoryRow:
    alarm_name: str
    timestamp: float
    item_type: str
    summary: str
    data: str


def _row(m: Any) -> AlarmRow:
    return AlarmRow(
        name=m["name"],
        config=dict(m["config"]),
        state_value=m["state_value"],
        state_reason=m["state_reason"],
        state_reason_data=m["state_reason_data"],
        state_updated=m["state_updated"],
        config_updated=m["config_updated"],
    )


class AlarmStore:
    """The `alarms` and `alarm_history` tables."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def put(self, alarm: AlarmRow, history: HistoryRow) -> None:
        """Insert the alarm, or replace the configuration of the one of its name (keeping
        its state, as CloudWatch does)."""
        with self._engine.begin() as conn:
            have = conn.execute(select(alarms.c.name).where(alarms.c.name == alarm.name)).first()
            if have is None:
                conn.execute(
                    alarms.insert().values(
                        name=alarm.name,
                        config=alarm.config,
                        state_value=alarm.state_value,
                        state_reason=alarm.state_reason,
                        state_reason_data=alarm.state_reason_data,
                        state_updated=alarm.state_updated,
                        config_updated=alarm.config_updated,
                        evaluated=0,
                    )
                )
            else:
                conn.execute(
                    update(alarms)
                    .where(alarms.c.name == alarm.name)
                    .values(config=alarm.config, config_updated=alarm.config_updated)
                )
            self._history(conn, history)

    def get(self, name: str) -> AlarmRow | None:
        with self._engine.begin() as conn:
            row = conn.execute(select(alarms).where(alarms.c.name == name)).first()
        return None if row is None else _row(row._mapping)

    def all(self) -> list[AlarmRow]:
        with self._engine.begin() as conn:
            rows = conn.execute(select(alarms).order_by(alarms.c.name)).all()
        return [_row(r._mapping) for r in rows]

    def delete(self, names: list[str]) -> None:
        with self._engine.begin() as conn:
            conn.execute(delete(alarms).where(alarms.c.name.in_(names)))
            conn.execute(delete(alarm_history).where(alarm_history.c.alarm_name.in_(names)))

    def set_state(
        self,
        name: str,
        value: str,
        reason: str,
        reason_data: str | None,
        at: float,
        history: HistoryRow,
    ) -> bool:
        """Move the alarm to a state; False if it is gone."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(alarms)
                .where(alarms.c.name == name)
                .values(
                    state_value=value,
                    state_reason=reason,
                    state_reason_data=reason_data,
                    state_updated=at,
                )
            )
            if not result.rowcount:
                return False
            self._history(conn, history)
        return True

    def add_history(self, history: HistoryRow) -> None:
        with self._engine.begin() as conn:
            self._history(conn, history)

    def claim(self, name: str, round_at: int) -> bool:
        """Whether this node evaluates `name` in the round at `round_at` (first come)."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(alarms)
                .where(alarms.c.name == name, alarms.c.evaluated < round_at)
                .values(evaluated=round_at)
            )
        return bool(result.rowcount)

    def history(self, name: str | None, start: float, end: float) -> list[HistoryRow]:
        t = alarm_history.c
        query = select(alarm_history).where(t.timestamp >= start, t.timestamp <= end)
        if name is not None:
            query = query.where(t.alarm_name == name)
        with self._engine.begin() as conn:
            rows = conn.execute(query.order_by(t.timestamp.desc(), t.id.desc())).all()
        return [HistoryRow(r.alarm_name, r.timestamp, r.item_type, r.summary, r.data) for r in rows]

    @staticmethod
    def _history(conn: Any, h: HistoryRow) -> None:
        conn.execute(
            alarm_history.insert().values(
                alarm_name=h.alarm_name,
                timestamp=h.timestamp,
                item_type=h.item_type,
                summary=h.summary,
                data=h.data,
            )
        )


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
