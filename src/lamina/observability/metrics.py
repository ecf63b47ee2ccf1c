"""Prometheus metrics, in a registry of their own (one per server, never a global)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Cold-start phases are milliseconds at best and seconds at worst.
_PHASE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.invocations = Counter(
            "lamina_invocations",
            "Invocations by function, version and outcome (success, error, timeout).",
            ["function", "version", "outcome"],
            registry=self.registry,
        )
        self.throttles = Counter(
            "lamina_throttles",
            "Invocations refused for concurrency (HTTP 429), by function and Lambda's Reason.",
            ["function", "reason"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "lamina_invocation_duration_seconds",
            "Time from hand-off to the runtime until its answer.",
            ["function", "version"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.cold_start_phase = Histogram(
            "lamina_cold_start_phase_seconds",
            "Each phase of starting an execution environment: sandbox (make the isolation, "
            "or take one made ahead), start (attach the function, launch its runtime and "
            "serve its Runtime API), init (runtime and handler init, until the first "
            "/invocation/next).",
            ["phase", "runtime"],
            buckets=_PHASE_BUCKETS,
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "lamina_cold_starts",
            "Execution environments started, by function and version.",
            ["function", "version"],
            registry=self.registry,
        )
        self.environments = Gauge(
            "lamina_environments",
            "Live execution environments by state.",
            ["state"],
            registry=self.registry,
        )

        self.async_events = Counter(
            "lamina_async_events",
            "Asynchronous events by function and outcome: accepted, succeeded, retried (a "
            "function error to be retried), throttled (waits and runs again), failed (retries "
            "exhausted), expired (older than MaximumEventAgeInSeconds), dropped (the function "
            "no longer exists), destination (a record sent to a destination), dead_lettered.",
            ["function", "outcome"],
            registry=self.registry,
        )
        self.async_queue_depth = Gauge(
            "lamina_async_queue_depth",
            "Asynchronous events stored and not yet finished (queued or running), by function.",
            ["function"],
            registry=self.registry,
        )
        self.async_oldest_age = Gauge(
            "lamina_async_oldest_event_age_seconds",
            "Age of the oldest unfinished asynchronous event, by function.",
            ["function"],
            registry=self.registry,
        )
        self._on_scrape: list[Callable[[], None]] = []

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Call `refresh` before each scrape (gauges that are cheaper to compute than to keep
        current)."""
        self._on_scrape.append(refresh)

    def render(self) -> bytes:
        for refresh in self._on_scrape:
            refresh()
        return generate_latest(self.registry)
