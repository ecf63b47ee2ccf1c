"""One sampled invocation's spans (see `observability.tracing` for the tree), built from the
times the scheduler and the environment keep anyway: nothing here runs for an invocation
that is not sampled but `Tracing.begin`'s header check."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from lamina.models import FunctionConfig, InvokeRequest, InvokeResult
from lamina.observability.tracing import (
    SPAN_KIND_SERVER,
    Exporter,
    Resource,
    Sampler,
    Span,
    parse_header,
    span_id,
)

if TYPE_CHECKING:
    from lamina.scheduler.environment import Environment

#: the header a function's own OTLP exporter authenticates with (see `Tracing.function_env`)
TOKEN_HEADER = "x-lamina-trace-token"

#: a wait for memory capacity shorter than this gets no span (it is the common, instant take)
_NOTABLE_WAIT_NS = 1_000_000

#: InvokeRequest.source → OpenTelemetry's faas.trigger
_TRIGGERS = {
    "RequestResponse": "other",
    "ResponseStream": "other",
    "Event": "pubsub",
    "Http": "http",
    "EventSource": "pubsub",
    "Durable": "other",
}


def _wall_ns(perf: float, now_perf: float, now_ns: int) -> int:
    """A `time.perf_counter()` reading as Unix nanoseconds."""
    return now_ns - int((now_perf - perf) * 1e9)


@dataclass
class InvocationTrace:
    """A sampled invocation on its way through the scheduler."""

    trace_id: str
    #: the "Invoke <function>" span, and the caller's span it is a child of
    root_id: str
    caller_parent: str | None
    #: the handler's span: the `Parent` the function sees
    handler_id: str
    start_ns: int
    #: set by the pool once an environment has it
    env: Environment | None = None
    cold: bool = False
    #: (from, until) in Unix ns: a cold start waiting for memory capacity
    capacity_wait: tuple[int, int] | None = None
    spans: list[Span] = field(default_factory=list)


class Tracing:
    """Sampling decisions and span building for every invocation (`Scheduler.tracing`)."""

    def __init__(self, exporter: Exporter, region: str, account: str) -> None:
        self.exporter = exporter
        self._sampler = Sampler()
        self._region = region
        self._account = account
        self._resources: dict[tuple[str, str, int], Resource] = {}
        # Signs the token a function's own exporter posts its spans to Lamina with.
        self._key = secrets.token_bytes(32)

    def function_env(self, config: FunctionConfig, endpoint_url: str) -> dict[str, str]:
        """What points an OpenTelemetry SDK in the function at Lamina's OTLP receiver (which
        forwards to the collector): nothing if the function names its own endpoint."""
        own = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if any(name in config.environment for name in own):
            return {}
        return {
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint_url,
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"{TOKEN_HEADER}={self.token(config.name)}",
        }

    def token(self, function: str) -> str:
        return f"{function}.{self._mac(function)}"

    def check(self, token: str) -> str | None:
        """The function a receiver token was made for; None if it is not one of ours."""
        function, _, mac = token.rpartition(".")
        if function and hmac.compare_digest(mac, self._mac(function)):
            return function
        return None

    def _mac(self, function: str) -> str:
        return hmac.new(self._key, function.encode(), hashlib.sha256).hexdigest()[:32]

    def begin(
        self, config: FunctionConfig, request: InvokeRequest
    ) -> tuple[InvokeRequest, InvocationTrace | None]:
        """The request as it runs (its header naming the handler's span, when sampled) and
        its trace; (request, None) when not sampled."""
        if config.tracing_mode != "Active" and "Sampled=1" not in request.trace_id:
            return request, None  # PassThrough and the caller did not ask: the common case
        header = parse_header(request.trace_id) if request.trace_id else None
        if header is None:
            return request, None
        sampled = header.sampled
        if sampled is None:
            sampled = config.tracing_mode == "Active" and self._sampler.sample()
        if not sampled:
            return request, None
        trace = InvocationTrace(
            trace_id=header.trace_id,
            root_id=span_id(),
            caller_parent=header.parent,
            handler_id=span_id(),
            start_ns=time.time_ns(),
        )
        return (
            _replace_trace(request, header.text(trace.handler_id, True)),
            trace,
        )

    def end(
        self,
        config: FunctionConfig,
        request: InvokeRequest,
        trace: InvocationTrace,
        result: InvokeResult | None,
        error: str | None,
    ) -> None:
        """Build the invocation's spans and hand them to the exporter (the overhead span
        follows when the extensions are done)."""
        now_perf, now_ns = time.perf_counter(), time.time_ns()
        t = trace.trace_id
        root = trace.root_id
        resource = self._resource(config)
        spans = trace.spans
        start_ns = trace.start_ns
        if request.queued_at is not None:
            queued_ns = int(request.queued_at * 1e9)
            spans.append(Span(t, span_id(), root, "Queued", queued_ns, trace.start_ns))
            start_ns = min(start_ns, queued_ns)
        if trace.capacity_wait is not None:
            waited_from, waited_until = trace.capacity_wait
            if waited_until - waited_from >= _NOTABLE_WAIT_NS:
                spans.append(
                    Span(t, span_id(), root, "Waiting for capacity", waited_from, waited_until)
                )
        env = trace.env
        if trace.cold and env is not None and env.start_phases is not None:
            t0, t1, t3, t4 = (_wall_ns(p, now_perf, now_ns) for p in env.start_phases)
            cold_id = span_id()
            where: dict[str, str | int | float | bool] = {"lamina.environment": env.id}
            spans.append(Span(t, cold_id, root, "Cold start", t0, t4, attributes=where))
            spans.append(Span(t, span_id(), cold_id, "Sandbox", t0, t1))
            spans.append(Span(t, span_id(), cold_id, "Runtime start", t1, t3))
            spans.append(Span(t, span_id(), cold_id, "Init", t3, t4))
        if result is not None:
            duration_ns = int(result.duration_ms * 1e6)
            spans.append(
                Span(
                    t,
                    trace.handler_id,
                    root,
                    "Invocation",
                    now_ns - duration_ns,
                    now_ns,
                    error=result.error_type or result.function_error,
                )
            )
        spans.append(
            Span(
                t,
                root,
                trace.caller_parent,
                f"Invoke {config.name}",
                start_ns,
                now_ns,
                kind=SPAN_KIND_SERVER,
                attributes={
                    "faas.invocation_id": request.request_id,
                    "faas.trigger": _TRIGGERS.get(request.source, "other"),
                    "faas.coldstart": trace.cold,
                    "faas.invoked_name": config.name,
                    "cloud.resource_id": request.invoked_arn,
                    "lamina.attempt": request.attempt,
                },
                error=error or (result.function_error if result is not None else None),
                links=_links(request.trace_links),
            )
        )
        self.exporter.add(resource, spans)
        finishing = env.finishing if env is not None else None
        if finishing is not None and not finishing.done():
            finishing.add_done_callback(
                lambda _: self.exporter.add(
                    resource, [Span(t, span_id(), root, "Overhead", now_ns, time.time_ns())]
                )
            )

    def _resource(self, config: FunctionConfig) -> Resource:
        key = (config.name, config.version, config.memory_size)
        resource = self._resources.get(key)
        if resource is None:
            if len(self._resources) > 4096:
                self._resources.clear()
            resource = self._resources[key] = Resource(
                config.name, config.version, config.memory_size, self._region, self._account
            )
        return resource


def _replace_trace(request: InvokeRequest, header: str) -> InvokeRequest:
    return replace(request, trace_id=header)


def _links(headers: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """The upstream spans a batch's messages came from (headers without a valid Root and
    Parent name no span, and are left out)."""
    out = []
    for text in headers:
        header = parse_header(text)
        if header is not None and header.parent is not None:
            out.append((header.trace_id, header.parent))
    return tuple(out)
