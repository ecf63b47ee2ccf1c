"""The metric set: every series parses with Prometheus' text parser and with the stricter
OpenMetrics one, and the invoked ARN's qualifier is read the way the labels promise."""

from __future__ import annotations

from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from lamina.observability import Metrics
from lamina.scheduler.environment import Outcome
from lamina.scheduler.scheduler import qualifier_of

ARN = "arn:aws:lambda:us-east-1:000000000000:function:f"


def filled() -> Metrics:
    """Every metric with a child, as a busy server would have them."""
    m = Metrics()
    for outcome in Outcome:
        m.invocations.labels("f", "$LATEST", "$LATEST", "python3.11", outcome.label).inc()
    m.invocations.labels("f", "2", "live", "python3.11", "success").inc(3)
    m.throttles.labels(
        "f", "live", "python3.11", "ReservedFunctionConcurrentInvocationLimitExceeded"
    ).inc()
    m.function_info.labels("f", "$LATEST", "python3.11").set(1)
    m.duration.labels("f", "2", "live", "python3.11").observe(0.003)
    m.init_duration.labels("f", "$LATEST", "python3.11").observe(0.04)
    m.cold_start_phase.labels("init", "python3.11").observe(0.02)
    m.cold_starts.labels("f", "$LATEST", "python3.11").inc()
    m.environments.labels("idle").inc()
    m.concurrent_executions.labels("f").set(2)
    m.provisioned.labels("f", "2", "requested").set(2)
    m.provisioned.labels("f", "2", "allocated").set(2)
    m.provisioned_utilization.labels("f", "2").set(0.5)
    m.async_events.labels("f", "dead_lettered").inc()
    m.async_queue_depth.labels("f").set(4)
    m.async_oldest_age.labels("f").set(1.5)
    return m


def test_the_exposition_parses_with_prometheus_text_parser() -> None:
    text = filled().render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["lamina_invocations"].type == "counter"
    assert families["lamina_init_duration_seconds"].type == "histogram"
    assert families["lamina_provisioned_concurrency_utilization"].type == "gauge"
    outcomes = {
        s.labels["outcome"]: s.value
        for s in families["lamina_invocations"].samples
        if s.name == "lamina_invocations_total" and s.labels["version"] == "$LATEST"
    }
    assert outcomes == {"success": 1, "function_error": 1, "timeout": 1, "platform_error": 1}
    # Dashboards (and tests) name these series with exactly these labels.
    assert (
        'lamina_invocations_total{function="f",outcome="success",qualifier="live",'
        'runtime="python3.11",version="2"} 3.0' in text
    )
    assert (
        'lamina_throttles_total{function="f",qualifier="live",'
        'reason="ReservedFunctionConcurrentInvocationLimitExceeded",runtime="python3.11"} 1.0'
        in text
    )


def test_the_exposition_parses_with_the_openmetrics_parser() -> None:
    text = openmetrics_latest(filled().registry).decode()
    names = {f.name for f in openmetrics_families(text)}
    assert {
        "lamina_invocations",
        "lamina_throttles",
        "lamina_function_info",
        "lamina_invocation_duration_seconds",
        "lamina_init_duration_seconds",
        "lamina_cold_start_phase_seconds",
        "lamina_cold_starts",
        "lamina_concurrent_executions",
        "lamina_provisioned_concurrency",
        "lamina_provisioned_concurrency_utilization",
        "lamina_async_events",
    } <= names


def test_scrape_refreshers_run_before_each_render() -> None:
    m = Metrics()
    calls: list[int] = []
    m.on_scrape(lambda: calls.append(1))
    m.render()
    m.render()
    assert calls == [1, 1]


def test_the_qualifier_of_an_invoked_arn() -> None:
    assert qualifier_of(ARN) == "$LATEST"
    assert qualifier_of(ARN + ":$LATEST") == "$LATEST"
    assert qualifier_of(ARN + ":12") == "12"
    assert qualifier_of(ARN + ":live") == "live"
