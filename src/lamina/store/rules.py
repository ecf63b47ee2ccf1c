"""EventBridge rules and their targets, in the metadata database (tables of their own).

Rows never leave this module: callers get and give `Rule`/`RuleTarget`. Every method is
blocking; `control/rules.py` runs them on its own worker thread. Times are stored as epoch
seconds (floats): SQLite has no time zone type, and the scheduler compares ticks.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    delete,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from lamina.models import Rule, RuleState, RuleTarget
from lamina.store import schema
from lamina.store.engine import open_database

rules = Table(
    "event_rules",
    schema.metadata,
    Column("name", String(64), primary_key=True),
    Column("bus", String(256), nullable=False),
    Column("state", String(16), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("event_pattern", Text),
    Column("schedule_expression", String(256)),
    Column("role_arn", Text),
    Column("created_at", Float, nullable=False),
    Column("anchor", Float, nullable=False),
    Column("last_tick", Float),
)

targets = Table(
    "event_rule_targets",
    schema.metadata,
    Column(
        "rule_name",
        String(64),
        ForeignKey("event_rules.name", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("target_id", String(64), primary_key=True),
    # PutTargets order, so listings come back as they were put
    Column("position", Integer, nullable=False),
    Column("arn", Text, nullable=False),
    Column("input", Text),
    Column("input_path", Text),
)


def _time(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def _epoch(t: datetime | None) -> float | None:
    return None if t is None else t.timestamp()


class RuleStore:
    """Rules of the event buses, keyed by name (one bus, `default`, for now)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @classmethod
    def sqlite(cls, path: Path) -> RuleStore:
        """The store in the SQLite file `path`, its schema brought to head."""
        return cls(open_database(f"sqlite:///{path}", cluster=False))

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._engine.begin() as conn:
            yield conn

    def all(self) -> list[Rule]:
        with self._tx() as conn:
            rows = conn.execute(select(rules).order_by(rules.c.name)).all()
            by_rule: dict[str, list[RuleTarget]] = {}
            for t in conn.execute(select(targets).order_by(targets.c.position)).all():
                by_rule.setdefault(t.rule_name, []).append(
                    RuleTarget(t.target_id, t.arn, t.input, t.input_path)
                )
        return [_to_rule(r, by_rule.get(r.name, [])) for r in rows]

    def put(self, rule: Rule) -> None:
        """Insert or replace the rule itself; its targets stay as they are. An existing
        rule's last tick is left alone: only `claim_tick` moves it (a write from a stale copy
        must not move it back and let a tick fire twice)."""
        try:
            self._put(rule)
        except IntegrityError:
            self._put(rule)  # another node inserted it meanwhile: now it is an update

    def _put(self, rule: Rule) -> None:
        values = _values(rule)
        with self._tx() as conn:
            if conn.execute(
                update(rules).where(rules.c.name == rule.name).values(**values)
            ).rowcount:
                return
            conn.execute(
                insert(rules).values(name=rule.name, last_tick=_epoch(rule.last_tick), **values)
            )

    def delete(self, name: str) -> bool:
        with self._tx() as conn:
            return bool(conn.execute(delete(rules).where(rules.c.name == name)).rowcount)

    def set_targets(self, name: str, new: Iterable[RuleTarget]) -> None:
        """Make the rule's targets exactly `new`, in that order."""
        with self._tx() as conn:
            conn.execute(delete(targets).where(targets.c.rule_name == name))
            rows = [
                {
                    "rule_name": name,
                    "target_id": t.id,
                    "position": i,
                    "arn": t.arn,
                    "input": t.input,
                    "input_path": t.input_path,
                }
                for i, t in enumerate(new)
            ]
            if rows:
                conn.execute(insert(targets), rows)

    def claim_tick(self, name: str, tick: datetime) -> bool:
        """Record `tick` as the rule's last fired tick, if it is later than the one recorded.
        True: the caller owns this tick and fires it; False: it was fired already (or the rule
        is gone). One conditional UPDATE, so a tick is claimed once however often, and by
        however many nodes at once, it is asked: a compare-and-set on a value that only grows
        (the database runs concurrent UPDATEs of a row one after the other and checks the
        condition against what the first wrote: PostgreSQL's READ COMMITTED re-evaluates it on
        the updated row, SQLite has one writer at a time). Unlike `last_tick = previous` it
        needs no reading of the previous value first, and it also refuses an earlier tick.
        """
        t = tick.timestamp()
        with self._tx() as conn:
            return bool(
                conn.execute(
                    update(rules)
                    .where(
                        rules.c.name == name,
                        or_(rules.c.last_tick.is_(None), rules.c.last_tick < t),
                    )
                    .values(last_tick=t)
                ).rowcount
            )


def _values(rule: Rule) -> dict[str, Any]:
    return {
        "bus": rule.bus,
        "state": rule.state.value,
        "description": rule.description,
        "event_pattern": rule.event_pattern,
        "schedule_expression": rule.schedule_expression,
        "role_arn": rule.role_arn,
        "created_at": _epoch(rule.created_at),
        "anchor": _epoch(rule.anchor),
    }


def _to_rule(row: Any, rule_targets: list[RuleTarget]) -> Rule:
    created = _time(row.created_at)
    anchor = _time(row.anchor)
    assert created is not None and anchor is not None
    return Rule(
        name=row.name,
        bus=row.bus,
        state=RuleState(row.state),
        created_at=created,
        anchor=anchor,
        description=row.description,
        event_pattern=row.event_pattern,
        schedule_expression=row.schedule_expression,
        role_arn=row.role_arn,
        last_tick=_time(row.last_tick),
        targets=tuple(rule_targets),
    )
