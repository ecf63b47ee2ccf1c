"""Prometheus metrics, in a registry of their own (one per server, never a global)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from lamina.observability.cw_metrics import MetricRecorder

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
    """Every metric the server exports, as attributes; `render()` is the /metrics body.

    Labels mean the same everywhere: `function`; `version`, the version that ran (an alias's
    weights pick it); `qualifier`, what the caller invoked (an alias, a version, or
    `$LATEST` when it named none); `runtime`. Hot-path callers keep label children
    (`.labels(...)` hashes and locks on every call); gauges of state the server knows anyway
    are filled in by `on_scrape` refreshers rather than on every change.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        #: cluster mode: every sample carries `node="<name>"`, so that one Prometheus
        #: scraping every node can tell (and sum) them
        self.node: str | None = None
        #: CloudWatch's per-minute metrics (`AWS/Lambda`), fed from the same points
        self.cloudwatch = MetricRecorder()
        self.invocations = Counter(
            "lamina_invocations",
            "Invocations by function, version (executed), qualifier (invoked: alias, version "
            "or $LATEST), runtime and outcome: success; "
            "function_error (the handler "
            "returned an error); timeout (Sandbox.Timedout); platform_error (the runtime "
            "exited or ran out of memory, the response was too large, or the environment "
            "failed to start or init). Throttled invocations are not here "
            "(lamina_throttles). Lambda's Errors metric is function_error + timeout + "
            "platform_error.",
            ["function", "version", "qualifier", "runtime", "outcome"],
            registry=self.registry,
        )
        self.throttles = Counter(
            "lamina_throttles",
            "Invocations refused for concurrency (HTTP 429), by function, qualifier (invoked), "
            "runtime and Lambda's Reason.",
            ["function", "qualifier", "runtime", "reason"],
            registry=self.registry,
        )
        self.function_info = Gauge(
            "lamina_function_info",
            "1 for each function version with a pool of environments, naming its runtime (join "
            "on function and version to label other series by runtime).",
            ["function", "version", "runtime"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "lamina_invocation_duration_seconds",
            "Time from hand-off to the runtime until its answer, per invocation that reached "
            "a runtime, by function, version (executed), qualifier (invoked: alias, version "
            "or $LATEST) and runtime.",
            ["function", "version", "qualifier", "runtime"],
            buckets=_DURATION_BUCKETS,
            registry=self.registry,
        )
        self.init_duration = Histogram(
            "lamina_init_duration_seconds",
            "Time to start a new execution environment until its runtime asks for work (the "
            "REPORT line's Init Duration), once per environment that starts, on-demand or "
            "provisioned.",
            ["function", "version", "runtime"],
            buckets=_PHASE_BUCKETS,
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
        self.durable_checkpoint = Histogram(
            "lamina_durable_checkpoint_seconds",
            "How long the server took over each CheckpointDurableExecution, from its request "
            "read to its answer (the change committed), by function.",
            ["function"],
            buckets=_PHASE_BUCKETS,
            registry=self.registry,
        )
        self.durable_executions_ended = Counter(
            "lamina_durable_executions_ended",
            "Durable executions that ended, by function and status (SUCCEEDED, FAILED, "
            "TIMED_OUT, STOPPED).",
            ["function", "status"],
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "lamina_cold_starts",
            "Invocations that waited for a new execution environment to start (on-demand "
            "ones; provisioned environments start ahead of any invocation), by function, "
            "version and runtime.",
            ["function", "version", "runtime"],
            registry=self.registry,
        )
        self.environments = Gauge(
            "lamina_environments",
            "Live execution environments by state.",
            ["state"],
            registry=self.registry,
        )
        self._environment_states: dict[str, Any] = {}

        self.snapstart_templates = Gauge(
            "lamina_snapstart_templates",
            "SnapStart templates (initialised versions restored from) held on this node.",
            registry=self.registry,
        )
        self.concurrent_executions = Gauge(
            "lamina_concurrent_executions",
            "Invocations running now (Lambda's ConcurrentExecutions), by function.",
            ["function"],
            registry=self.registry,
        )
        self.provisioned = Gauge(
            "lamina_provisioned_concurrency",
            "Provisioned concurrency by function and version: requested (configured) and "
            "allocated (environments initialised and ready).",
            ["function", "version", "state"],
            registry=self.registry,
        )
        self.provisioned_utilization = Gauge(
            "lamina_provisioned_concurrency_utilization",
            "Busy provisioned environments over allocated ones (0 to 1; 0 with none allocated).",
            ["function", "version"],
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
        self.trace_spans = Counter(
            "lamina_trace_spans",
            "Spans of traced invocations by outcome: exported (the collector took them), "
            "dropped (the buffer was full, or the collector could not be reached or refused).",
            ["outcome"],
            registry=self.registry,
        )
        self.recursive_invocations_dropped = Counter(
            "lamina_recursive_invocations_dropped",
            "Invocations stopped by recursive loop detection (Lambda's "
            "RecursiveInvocationsDropped), by function.",
            ["function"],
            registry=self.registry,
        )
        self.events_failed_invocations = Counter(
            "lamina_events_failed_invocations",
            "EventBridge target invocations that failed before reaching the asynchronous queue "
            "(EventBridge's FailedInvocations), by rule and reason: permission (the function's "
            "resource policy does not let the rule invoke it), rejected (the queue refused "
            "the event, e.g. too large).",
            ["rule", "reason"],
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
        self.log_dropped_lines = Counter(
            "lamina_log_dropped_lines",
            "Log lines dropped instead of stored, by function and reason: rate_limit (over the "
            "function's log rate), disk_cap (no room under the log store's cap or free-space "
            "reserve), buffer_full (written faster than the store could take them), "
            "write_failed (the disk refused them). Each loss also leaves a marker line in its "
            "stream.",
            ["function", "reason"],
            registry=self.registry,
        )
        self.log_dropped_bytes = Counter(
            "lamina_log_dropped_bytes",
            "Bytes of log lines dropped instead of stored, by function and reason (as "
            "lamina_log_dropped_lines).",
            ["function", "reason"],
            registry=self.registry,
        )
        self.signature_validation_errors = Counter(
            "lamina_signature_validation_errors",
            "Deployments accepted under a Warn code signing policy although the package "
            "failed a check (Lambda's SignatureValidationErrors), by function and check: "
            "Unsigned, Mismatch, Expiry, Revocation.",
            ["function", "check"],
            registry=self.registry,
        )
        # Event-source mappings, by mapping (`uuid`), the function it invokes and its source
        # `kind` (rabbitmq, sqs, nats, redis). Filled in from each mapping's counters at
        # scrape time (`events/sources/manager.py`).
        labels = ["uuid", "function", "kind"]
        self.source_records = Counter(
            "lamina_event_source_records",
            "Records an event-source mapping received from its source, by outcome: received "
            "(every record read), filtered (dropped by FilterCriteria: acknowledged, never "
            "delivered), failure_destination (sent to the mapping's OnFailure destination).",
            [*labels, "outcome"],
            registry=self.registry,
        )
        self.source_batches = Counter(
            "lamina_event_source_batches",
            "Batches an event-source mapping invoked its function with (throttled attempts "
            "not counted).",
            labels,
            registry=self.registry,
        )
        self.source_function_errors = Counter(
            "lamina_event_source_function_errors",
            "Batches the function failed (an error, a timeout, or an invalid "
            "ReportBatchItemFailures response): released to the broker, or retried.",
            labels,
            registry=self.registry,
        )
        self.source_throttles = Counter(
            "lamina_event_source_throttles",
            "Invocations of a batch that found no concurrency (or a function that could not "
            "run): the same batch is retried after a back-off.",
            labels,
            registry=self.registry,
        )
        self.source_backlog_age = Gauge(
            "lamina_event_source_backlog_age_seconds",
            "Age of the oldest record of the mapping's last batch when it was delivered "
            "(Lambda's IteratorAge; for queues, the age of the oldest message).",
            labels,
            registry=self.registry,
        )
        self.source_lag = Gauge(
            "lamina_event_source_lag",
            "Records waiting in the source, where the broker says (Lambda's OffsetLag; for "
            "queues, the messages ready in the queue).",
            labels,
            registry=self.registry,
        )
        self.source_pollers = Gauge(
            "lamina_event_source_pollers",
            "Pollers (concurrent batches) an event-source mapping runs now.",
            labels,
            registry=self.registry,
        )
        self._on_scrape: list[Callable[[], None]] = []

    def log_lost(self, function: str, reason: str, lines: int, size: int) -> None:
        """Count lines lost (the log writer and store call this; thread-safe)."""
        self.log_dropped_lines.labels(function, reason).inc(lines)
        self.log_dropped_bytes.labels(function, reason).inc(size)

    def signature_warning(self, function: str, check: str) -> None:
        """Count a package deployed under Warn that failed `check` (thread-safe)."""
        self.signature_validation_errors.labels(function, check).inc()

    def environments_in(self, state: str) -> Any:
        """The `lamina_environments` child of one state, made on first use and kept: every
        invocation moves its environment twice, and `labels()` hashes and locks each time."""
        child = self._environment_states.get(state)
        if child is None:
            child = self._environment_states[state] = self.environments.labels(state)
        return child

    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Call `refresh` before each scrape (gauges that are cheaper to compute than to keep
        current)."""
        self._on_scrape.append(refresh)

    def render(self) -> bytes:
        for refresh in self._on_scrape:
            refresh()
        text = generate_latest(self.registry)
        return text if self.node is None else with_label(text, "node", self.node)


def with_label(text: bytes, name: str, value: str) -> bytes:
    """Prometheus text exposition with `name="value"` added first to every sample's labels."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    label = f'{name}="{escaped}"'.encode()
    out = []
    for line in text.split(b"\n"):
        if not line or line.startswith(b"#"):
            out.append(line)
            continue
        metric, sep, rest = line.partition(b" ")
        brace = metric.find(b"{")
        if brace < 0:
            out.append(metric + b"{" + label + b"}" + sep + rest)
        elif metric[brace + 1 : brace + 2] == b"}":
            out.append(metric[: brace + 1] + label + metric[brace + 1 :] + sep + rest)
        else:
            out.append(metric[: brace + 1] + label + b"," + metric[brace + 1 :] + sep + rest)
    return b"\n".join(out)
