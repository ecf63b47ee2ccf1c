"""CloudWatch metrics and alarms below the API: the recorder's percentiles, and alarm
evaluation (M of N, comparison operators, TreatMissingData) on a real SQLite store."""

from __future__ import annotations

import random
from typing import Any

import pytest
from sqlalchemy import create_engine

from lamina.control.alarms import AlarmService
from lamina.control.metric_queries import MetricQueries
from lamina.observability.cw_metrics import UNITS, MetricRecorder, percentile
from lamina.store import schema
from lamina.store.alarms import AlarmStore
from lamina.store.metric_data import MetricDataStore
from lamina.store.migrations import target_metadata


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_percentiles_are_within_one_percent() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 1.5) for _ in range(20_000)]
    recorder = MetricRecorder(clock=Clock(600.0))
    for v in values:
        recorder.add("Duration", [()], v)
    (row,) = recorder.drain(everything=True)
    agg = row.aggregate
    ordered = sorted(values)
    for p in (1, 50, 90, 99, 99.9):
        exact = ordered[max(0, int(-(-p / 100 * len(ordered) // 1)) - 1)]
        got = percentile(agg.histogram or {}, p, agg.min, agg.max)
        assert abs(got - exact) / exact <= 0.01, (p, got, exact)
    assert percentile(agg.histogram or {}, 100, agg.min, agg.max) == agg.max


@pytest.fixture
def setup() -> tuple[Clock, MetricRecorder, AlarmService]:
    target_metadata()
    engine = create_engine("sqlite://")
    schema.metadata.create_all(engine)
    clock = Clock(1_700_000_000.0 // 3600 * 3600)
    queries = MetricQueries(MetricDataStore(engine, UNITS), clock)
    alarms = AlarmService(AlarmStore(engine), queries, "us-east-1", "000000000000", clock)
    return clock, MetricRecorder(clock=clock), alarms


def _alarm(alarms: AlarmService, **kw: Any) -> None:
    body = {
        "AlarmName": "a",
        "Namespace": "AWS/Lambda",
        "MetricName": "Errors",
        "Statistic": "Sum",
        "Period": 60,
        "EvaluationPeriods": 3,
        "DatapointsToAlarm": 2,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        **kw,
    }
    alarms.put_metric_alarm(body)


def _state(
    clock: Clock, recorder: MetricRecorder, alarms: AlarmService, errors: list[int | None]
) -> str:
    """Record `errors` per minute (None: no data that minute), oldest first, ending in
    the minute under way, then evaluate."""
    start = clock.t
    for i, n in enumerate(errors):
        clock.t = start + 60 * i + 1
        if n is not None:
            for k in range(max(n, 1)):
                recorder.add("Errors", [()], 1.0 if k < n else 0.0)
    row = alarms._store.get("a")
    assert row is not None
    alarms.evaluate(row, recorder.snapshot())
    after = alarms._store.get("a")
    assert after is not None
    return after.state_value


@pytest.mark.parametrize(
    ("errors", "missing", "state"),
    [
        ([1, 0, 1], "missing", "ALARM"),  # 2 of 3 breach
        ([0, 0, 1], "missing", "OK"),  # 1 of 3
        ([None, None, None], "missing", "INSUFFICIENT_DATA"),
        ([None, None, None], "ignore", "INSUFFICIENT_DATA"),  # kept as it was
        ([None, None, None], "breaching", "ALARM"),
        ([None, None, None], "notBreaching", "OK"),
        ([None, 1, None], "breaching", "ALARM"),
        ([None, 1, None], "notBreaching", "OK"),
        ([None, 1, None], "missing", "OK"),  # the present one alone: 1 < 2
    ],
)
def test_m_of_n_and_missing_data(
    setup: tuple[Clock, MetricRecorder, AlarmService],
    errors: list[int | None],
    missing: str,
    state: str,
) -> None:
    clock, recorder, alarms = setup
    _alarm(alarms, TreatMissingData=missing)
    assert _state(clock, recorder, alarms, errors) == state


def test_less_than_and_reason(setup: tuple[Clock, MetricRecorder, AlarmService]) -> None:
    clock, recorder, alarms = setup
    _alarm(
        alarms,
        ComparisonOperator="LessThanThreshold",
        Statistic="SampleCount",
        EvaluationPeriods=1,
        DatapointsToAlarm=1,
        Threshold=5.0,
    )
    assert _state(clock, recorder, alarms, [2]) == "ALARM"
    row = alarms._store.get("a")
    assert row is not None
    assert row.state_reason.startswith("Threshold Crossed: 1 out of the last 1 datapoints [2.0 (")
    assert "was less than the threshold (5.0)" in row.state_reason
