"""CloudWatch-style metrics (namespace `AWS/Lambda`): aggregated per minute in memory on the
hot path, handed in closed minutes to whoever stores them (`store/metric_data.py`).

Recording is attribute reads, one clock read and a few dict updates: no I/O and no lock (the
server's event loop is the only writer; a background task drains closed minutes). Each
(minute, metric, dimension set) keeps Sum, SampleCount, Minimum and Maximum; the metrics
users read percentiles of (Duration, AsyncEventAge, IteratorAge) also keep a log-spaced
histogram whose buckets are 2% wide, so any percentile of any period is within 1% of the
true value, and histograms of different minutes and nodes merge by adding counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

NAMESPACE = "AWS/Lambda"
#: minute-resolution data kept this long (CloudWatch keeps 1-minute data 15 days)
RETENTION_S = 15 * 24 * 3600

#: Lambda's metrics and their units ("Types of metrics for Lambda functions")
UNITS: dict[str, str] = {
    "Invocations": "Count",
    "Errors": "Count",
    "Throttles": "Count",
    "Duration": "Milliseconds",
    "ConcurrentExecutions": "Count",
    "UnreservedConcurrentExecutions": "Count",
    "ProvisionedConcurrentExecutions": "Count",
    "ProvisionedConcurrencyInvocations": "Count",
    "ProvisionedConcurrencySpilloverInvocations": "Count",
    "ProvisionedConcurrencyUtilization": "None",
    "DeadLetterErrors": "Count",
    "DestinationDeliveryFailures": "Count",
    "AsyncEventAge": "Milliseconds",
    "AsyncEventsReceived": "Count",
    "AsyncEventsDropped": "Count",
    "IteratorAge": "Milliseconds",
}
#: the metrics that keep a histogram (percentiles are read of them)
WITH_HISTOGRAM = frozenset({"Duration", "AsyncEventAge", "IteratorAge"})

# Bucket i holds values in (GAMMA**(i-1), GAMMA**i]; its representative value
# 2*GAMMA**i/(GAMMA+1) is within (GAMMA-1)/(GAMMA+1) < 1% of every value in it.
GAMMA = 1.02
_LOG_GAMMA = math.log(GAMMA)
#: the bucket of zero and of values too small to matter (below 1e-6)
ZERO_BUCKET = -(10**6)

#: a dimension set: (name, value) pairs sorted by name; () is the account-wide series
Dimensions = tuple[tuple[str, str], ...]


def bucket_of(value: float) -> int:
    if value <= 1e-6:
        return ZERO_BUCKET
    return math.ceil(math.log(value) / _LOG_GAMMA)


def bucket_value(index: int) -> float:
    if index == ZERO_BUCKET:
        return 0.0
    return 2 * GAMMA**index / (GAMMA + 1)


def percentile(histogram: dict[int, int], p: float, low: float, high: float) -> float:
    """The `p`th percentile (0-100) of the values a histogram counts, clamped to the
    values' true minimum and maximum."""
    total = sum(histogram.values())
    if total == 0:
        return math.nan
    if p >= 100:
        return high  # exact: the maximum is kept
    rank = max(1, math.ceil(p / 100 * total))
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return min(max(bucket_value(index), low), high)
    return high


@dataclass(slots=True)
class Aggregate:
    """One minute of one metric's series."""

    sum: float = 0.0
    count: int = 0
    min: float = math.inf
    max: float = -math.inf
    histogram: dict[int, int] | None = None

    def add(self, value: float, bucket: int | None = None) -> None:
        self.sum += value
        self.count += 1
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        if self.histogram is not None:
            b = bucket_of(value) if bucket is None else bucket
            self.histogram[b] = self.histogram.get(b, 0) + 1

    def merge(self, other: Aggregate) -> None:
        self.sum += other.sum
        self.count += other.count
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        if other.histogram is not None:
            if self.histogram is None:
                self.histogram = {}
            for b, n in other.histogram.items():
                self.histogram[b] = self.histogram.get(b, 0) + n


def _copy(agg: Aggregate) -> Aggregate:
    hist = None if agg.histogram is None else dict(agg.histogram)
    return Aggregate(agg.sum, agg.count, agg.min, agg.max, hist)


@dataclass(frozen=True, slots=True)
class MinuteRow:
    """A closed minute of one series, as stored."""

    minute: int  # seconds since the epoch, a multiple of 60
    metric: str
    dimensions: Dimensions
    aggregate: Aggregate


def function_dimensions(
    name: str, qualifier: str | None, executed_version: str | None
) -> tuple[Dimensions, ...]:
    """The dimension sets one invocation counts in: account-wide, by function, by the
    alias or version invoked (`Resource`), and by the version that ran (`ExecutedVersion`,
    where an alias or version was invoked)."""
    sets: list[Dimensions] = [(), (("FunctionName", name),)]
    if qualifier is not None and qualifier != "$LATEST":
        sets.append((("FunctionName", name), ("Resource", f"{name}:{qualifier}")))
        if executed_version is not None:
            sets.append((("ExecutedVersion", executed_version), ("FunctionName", name)))
    return tuple(sets)


@dataclass
class MetricRecorder:
    """Aggregates Lambda's metrics per minute; `drain()` hands over the closed minutes."""

    clock: Callable[[], float] = time.time
    _minute: int = 0
    _current: dict[tuple[str, Dimensions], Aggregate] = field(default_factory=dict)
    _closed: list[MinuteRow] = field(default_factory=list)
    #: id(dimension sets) -> (the sets, their (Invocations, Errors, Duration) aggregates)
    #: in the open minute
    _by_sets: dict[int, tuple[Any, Any]] = field(default_factory=dict)

    def _series(self, metric: str, dims: Dimensions) -> Aggregate:
        minute = int(self.clock()) // 60 * 60
        if minute != self._minute:
            self._close()
            self._minute = minute
        key = (metric, dims)
        agg = self._current.get(key)
        if agg is None:
            agg = self._current[key] = Aggregate(histogram={} if metric in WITH_HISTOGRAM else None)
        return agg

    def invocation(
        self, dimension_sets: tuple[Dimensions, ...], failed: bool, duration_ms: float | None
    ) -> None:
        """One invocation that ran: Invocations, Errors and Duration in every dimension set.
        The hot path: the series of one `dimension_sets` tuple are looked up once a minute
        (by the tuple's identity; the cache keeps it alive), the duration's bucket once."""
        minute = int(self.clock()) // 60 * 60
        if minute != self._minute:
            self._close()
            self._minute = minute
        cached = self._by_sets.get(id(dimension_sets))
        if cached is None:
            aggs = tuple(
                (
                    self._series("Invocations", d),
                    self._series("Errors", d),
                    self._series("Duration", d),
                )
                for d in dimension_sets
            )
            self._by_sets[id(dimension_sets)] = (dimension_sets, aggs)
        else:
            aggs = cached[1]
        error = 1.0 if failed else 0.0
        bucket = bucket_of(duration_ms) if duration_ms is not None else 0
        for invocations, errors, duration in aggs:
            invocations.add(1.0)
            errors.add(error)
            if duration_ms is not None:
                duration.add(duration_ms, bucket)

    def add(self, metric: str, dimension_sets: Iterable[Dimensions], value: float) -> None:
        """One sample of `metric` (a count of 1, a duration in ms, a gauge's reading) in
        every dimension set."""
        for dims in dimension_sets:
            self._series(metric, dims).add(value)

    def _close(self) -> None:
        minute = self._minute
        self._closed.extend(
            MinuteRow(minute, metric, dims, agg) for (metric, dims), agg in self._current.items()
        )
        self._current = {}
        self._by_sets = {}

    def snapshot(self) -> list[MinuteRow]:
        """Copies of the minutes not yet drained (the open one and the closed ones), so that
        a read sees this node's latest data before it is written."""
        rows = [
            MinuteRow(self._minute, metric, dims, _copy(agg))
            for (metric, dims), agg in self._current.items()
        ]
        return rows + [replace(r, aggregate=_copy(r.aggregate)) for r in self._closed]

    def drain(self, *, everything: bool = False) -> list[MinuteRow]:
        """The minutes closed since the last drain (with `everything`, the open one too:
        at shutdown; a later sample of that minute makes a second row, which queries merge)."""
        if everything or int(self.clock()) // 60 * 60 != self._minute:
            self._close()
        rows, self._closed = self._closed, []
        return rows
