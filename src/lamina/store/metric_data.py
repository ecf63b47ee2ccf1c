"""CloudWatch metric data at 1-minute resolution, in the metadata database (`metric_data`).

One row per (minute, metric, dimension set) per writer flush: a node writes its own rows, and
a minute flushed at shutdown and again after a restart makes two rows; readers merge rows of
the same minute. Blocking, like the other stores: callers run it on a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import (
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
)
from sqlalchemy.engine import Engine

from lamina.observability.cw_metrics import Aggregate, Dimensions, MinuteRow
from lamina.store import schema

metric_data = Table(
    "metric_data",
    schema.metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("minute", BigInteger, nullable=False),
    Column("namespace", String(255), nullable=False),
    Column("metric", String(255), nullable=False),
    # the dimension set as canonical JSON ([[name, value], ...] sorted by name)
    Column("dimensions", Text, nullable=False),
    Column("unit", String(32), nullable=False),
    Column("sum", Float, nullable=False),
    Column("count", BigInteger, nullable=False),
    Column("min", Float, nullable=False),
    Column("max", Float, nullable=False),
    # {bucket index: count} as JSON (see observability.cw_metrics), or NULL
    Column("histogram", Text, nullable=True),
    Index("ix_metric_data_series", "namespace", "metric", "dimensions", "minute"),
    Index("ix_metric_data_minute", "minute"),
)


def dimensions_key(dims: Dimensions) -> str:
    return json.dumps([list(p) for p in sorted(dims)], separators=(",", ":"))


def parse_dimensions(text: str) -> Dimensions:
    return tuple((str(n), str(v)) for n, v in json.loads(text))


@dataclass(frozen=True, slots=True)
class SeriesName:
    namespace: str
    metric: str
    dimensions: Dimensions


class MetricDataStore:
    """The `metric_data` table."""

    def __init__(self, engine: Engine, units: dict[str, str]) -> None:
        self._engine = engine
        self._units = units

    def write(self, namespace: str, rows: Sequence[MinuteRow]) -> None:
        if not rows:
            return
        values = [
            {
                "minute": r.minute,
                "namespace": namespace,
                "metric": r.metric,
                "dimensions": dimensions_key(r.dimensions),
                "unit": self._units.get(r.metric, "None"),
                "sum": r.aggregate.sum,
                "count": r.aggregate.count,
                "min": r.aggregate.min,
                "max": r.aggregate.max,
                "histogram": (
                    None
                    if r.aggregate.histogram is None
                    else json.dumps(r.aggregate.histogram, separators=(",", ":"))
                ),
            }
            for r in rows
            if r.aggregate.count
        ]
        if values:
            with self._engine.begin() as conn:
                conn.execute(metric_data.insert(), values)

    def read(
        self, series: SeriesName, start: int, end: int
    ) -> tuple[str | None, dict[int, Aggregate]]:
        """The series' unit and its minutes in [start, end) (seconds), rows of one minute
        merged."""
        t = metric_data.c
        query = select(t.minute, t.unit, t.sum, t.count, t.min, t.max, t.histogram).where(
            t.namespace == series.namespace,
            t.metric == series.metric,
            t.dimensions == dimensions_key(series.dimensions),
            t.minute >= start,
            t.minute < end,
        )
        out: dict[int, Aggregate] = {}
        unit: str | None = None
        with self._engine.begin() as conn:
            for row in conn.execute(query):
                unit = row.unit
                hist = None
                if row.histogram is not None:
                    hist = {int(k): int(v) for k, v in json.loads(row.histogram).items()}
                agg = Aggregate(row.sum, row[3], row.min, row.max, hist)
                have = out.get(row.minute)
                if have is None:
                    out[row.minute] = agg
                else:
                    have.merge(agg)
        return unit, out

    def series(
        self, namespace: str | None, metric: str | None, since: int | None
    ) -> list[SeriesName]:
        """Every distinct series (optionally of one namespace, metric; with data since)."""
        t = metric_data.c
        query = select(t.namespace, t.metric, t.dimensions).distinct()
        if namespace is not None:
            query = query.where(t.namespace == namespace)
        if metric is not None:
            query = query.where(t.metric == metric)
        if since is not None:
            query = query.where(t.minute >= since)
        with self._engine.begin() as conn:
            rows = conn.execute(query.order_by(t.namespace, t.metric, t.dimensions)).all()
        return [SeriesName(r[0], r[1], parse_dimensions(r[2])) for r in rows]

    def prune(self, before: int) -> int:
        """Delete minutes before `before`; how many rows went."""
        with self._engine.begin() as conn:
            result = conn.execute(delete(metric_data).where(metric_data.c.minute < before))
        return int(result.rowcount or 0)
